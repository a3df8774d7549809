"""Writing files so that a full disk or a read-only folder is one clear error.

Problem: support engineers run lmtrace on laptops and jump hosts with little free
space, on shares mounted read-only, into folders they cannot write. The operating
system says exactly what went wrong (``No space left on device``), but the words
get lost on the way: polars reports a Parquet write to a full disk as ``File out
of specification: Invalid thrift: transport error`` (measured on a full tmpfs),
other polars writes as an error whose text ends in ``(os error 28)``, and
Python's own ``write`` raises an OSError that does not name the file.

How: Parquet parts are encoded in memory (a part holds one read batch) and
written with Python's file calls, so the OS error arrives with its errno;
:func:`write_atomic` names the file it was writing; :func:`os_cause` finds the
OS error inside a polars error's text as well; :func:`writing` turns any of
these raised inside it into one :class:`WriteError` naming the file (or the
folder being written when the OS did not say which file) and the cause, which
the command line prints as one ``lmtrace: error:`` line.
"""

from __future__ import annotations

import errno
import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import polars as pl

from parsers.model import LmtraceError

_OS_ERROR_TEXT = re.compile(r"os error (\d+)")

_HINTS = {
    errno.ENOSPC: "free some space, or write to another disk",
    errno.EDQUOT: "free some space, or write to another disk",
    errno.EROFS: "choose a writable folder",
    errno.EACCES: "choose a folder you can write, or fix its permissions",
    errno.EPERM: "choose a folder you can write, or fix its permissions",
}


class WriteError(LmtraceError):
    """A file could not be written or read because of the operating system (disk full,
    read-only, no permission); the message names the path and the cause."""

    def __init__(self, path: Path | str, cause: str, code: int | None = None) -> None:
        self.path = str(path)
        self.cause = cause
        self.errno = code
        hint = _HINTS.get(code) if code is not None else None
        super().__init__(f"{path}: {cause}" + (f" ({hint})" if hint else ""))


def os_cause(exc: BaseException) -> tuple[int | None, str] | None:
    """(errno, the system's words) of an OS error, also one wrapped in a polars error."""
    if isinstance(exc, OSError):
        if exc.errno is not None:
            return exc.errno, exc.strerror or os.strerror(exc.errno)
        found = _OS_ERROR_TEXT.search(str(exc))
        if found is None:
            return None, str(exc)
        return int(found.group(1)), os.strerror(int(found.group(1)))
    if isinstance(exc, pl.exceptions.PolarsError):
        found = _OS_ERROR_TEXT.search(str(exc))
        if found is not None:
            return int(found.group(1)), os.strerror(int(found.group(1)))
    return None


def as_write_error(exc: BaseException, path: Path | str) -> WriteError | None:
    """``exc`` as a WriteError naming the file the OS named, else ``path``; None when it
    is not an operating-system error."""
    cause = os_cause(exc)
    if cause is None:
        return None
    code, words = cause
    named = getattr(exc, "filename", None)
    return WriteError(named if named else path, words, code)


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Turn operating-system errors raised inside into a WriteError (``path`` is named
    when the error does not say which file)."""
    try:
        yield
    except (LmtraceError, BrokenPipeError):  # a reader that went away is no write error
        raise
    except (OSError, pl.exceptions.PolarsError) as exc:
        error = as_write_error(exc, path)
        if error is None:
            raise
        raise error from None


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    """A frame as Parquet bytes (with column statistics, for pushed-down filters)."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer, statistics=True)
    return buffer.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name: a reader never sees half a
    file, and a failed write leaves nothing behind. Raises WriteError naming ``path``."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except BaseException as exc:
        with suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            code, words = os_cause(exc) or (None, str(exc))
            raise WriteError(path, words, code) from None
        raise
