"""File and archive member names as text: bytes that are not UTF-8 kept, escaped.

Problem: a name is data from the customer. On Linux a file name is bytes, and a
tar member name can be any bytes too (``guest/bad\\377\\376.evtx``); Python hands
such names over as text holding lone surrogates (``surrogateescape``), which no
UTF-8 writer accepts: polars refused the files table, so one hostile name
stopped every analysis of its bundle. A name must neither stop the run nor be
changed beyond recognition.

How: a name that is valid UTF-8 is kept as it is. A name holding bytes that are
not becomes text in which each such byte is ``\\xHH`` and each backslash
``\\\\``, so that it is readable (``guest/bad\\xff\\xfe.evtx``) and can be turned
back into the exact bytes (:func:`name_bytes`); the files table's
``name_escaped`` column says which names are written this way.
"""

from __future__ import annotations

import re

_ESCAPE = re.compile(r"\\\\|\\x([0-9a-f]{2})")


def has_undecodable(name: str) -> bool:
    """Whether ``name`` holds bytes that were not UTF-8 (lone surrogates, as Python
    decodes them with ``surrogateescape``)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def escaped_name(name: str) -> str:
    """``name`` with backslashes doubled and undecodable bytes as ``\\xHH``."""
    raw = name.replace("\\", "\\\\").encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def name_bytes(text: str) -> bytes:
    """The exact bytes of a name written by :func:`escaped_name` (``name_escaped`` is true)."""

    def one(match: re.Match[str]) -> str:
        return "\\" if match.group(1) is None else chr(0xDC00 + int(match.group(1), 16))

    return _ESCAPE.sub(one, text).encode("utf-8", "surrogateescape")


def as_text(source_path: str, member: str | None) -> tuple[str, str | None, bool]:
    """A file's path and member name as text for the tables, and whether they are escaped.

    When either holds bytes that are not UTF-8, both are escaped, so that one flag
    tells how to read both back.
    """
    if not has_undecodable(source_path) and (member is None or not has_undecodable(member)):
        return source_path, member, False
    return escaped_name(source_path), None if member is None else escaped_name(member), True
