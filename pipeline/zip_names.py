"""Zip member names flagged UTF-8 that are not UTF-8: kept as their bytes, not a refused zip.

Problem: a zip entry whose general-purpose bit 11 is set declares its name UTF-8.
Python's zipfile decodes such names strictly while it reads the central
directory, so one name that is not valid UTF-8 (``guest/bad\\xff\\xfe.evtx``,
written by a broken tool or by an attacker) raised UnicodeDecodeError and the
whole archive was refused: every log in it unread. Names that are not UTF-8 in
folders and tars are kept, escaped (pipeline/names.py); a zip's must be too.

How: the standard open is tried first; only when it fails on a name, the zip is
opened again through a read-only view of its file that clears bit 11 in the
central directory and in each local header as zipfile reads them (it reads the
central directory in one piece and each local header as 30 bytes). zipfile then
decodes every name as cp437, which maps each byte to one character and back, so
the bytes of the names that were flagged are recovered exactly and decoded as
UTF-8 with ``surrogateescape``: valid UTF-8 reads as it did, other bytes become
lone surrogates, which the tables escape and flag like any other such name. The
file itself is never written.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_CENTRAL = b"PK\x01\x02"
_CENTRAL_SIZE = 46  # fixed part of a central directory entry
_LOCAL = b"PK\x03\x04"
_LOCAL_SIZE = 30  # fixed part of a local file header
_UTF8_NAME = 0x800  # general-purpose flag bit 11


class _NamesAsBytes:
    """A zip file, read-only, as zipfile reads it, with the UTF-8 name flag cleared.

    ``flagged`` holds, in central directory order, which entries carried the flag.
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.flagged: list[bool] = []

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        if data[:4] == _CENTRAL:
            return self._central_directory(data)
        if len(data) == _LOCAL_SIZE and data[:4] == _LOCAL:
            flags = int.from_bytes(data[6:8], "little")
            return data[:6] + (flags & ~_UTF8_NAME).to_bytes(2, "little") + data[8:]
        return data

    def _central_directory(self, data: bytes) -> bytes:
        entries = bytearray(data)
        flagged: list[bool] = []
        at = 0
        while at + _CENTRAL_SIZE <= len(entries) and entries[at : at + 4] == _CENTRAL:
            flags = int.from_bytes(entries[at + 8 : at + 10], "little")
            flagged.append(bool(flags & _UTF8_NAME))
            entries[at + 8 : at + 10] = (flags & ~_UTF8_NAME).to_bytes(2, "little")
            name, extra, comment = struct.unpack_from("<HHH", entries, at + 28)
            at += _CENTRAL_SIZE + name + extra + comment
        self.flagged = flagged  # the last such read is the directory zipfile keeps
        return bytes(entries)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True


def _zip(file: Path | _NamesAsBytes, password: str | None) -> zipfile.ZipFile:
    """A zip archive; with a password, through pyzipper, which reads the AES encryption
    7-Zip and WinZip use as well as the old ZipCrypto (the standard library reads only
    the latter)."""
    if password is None:
        return zipfile.ZipFile(file)  # type: ignore[arg-type]
    import pyzipper  # only for a password: a plain zip or folder does not load it

    archive = pyzipper.AESZipFile(file)
    archive.setpassword(password.encode("utf-8"))
    return archive  # type: ignore[return-value]


def bad_zip_errors(password: str | None) -> tuple[type[Exception], ...]:
    """What a zip read by :func:`open_zip` raises for bytes that are not a readable zip:
    pyzipper has a class of its own, and is imported only when a password needs it."""
    if password is None:
        return (zipfile.BadZipFile,)
    import pyzipper

    return (zipfile.BadZipFile, pyzipper.BadZipFile)


@contextmanager
def open_zip(path: Path, password: str | None) -> Iterator[zipfile.ZipFile]:
    """The zip at ``path``, open for reading; names flagged UTF-8 that are not hold
    their undecodable bytes as lone surrogates. Raises what zipfile raises for a
    file that is not a readable zip."""
    try:
        archive = _zip(path, password)
    except UnicodeDecodeError:
        pass
    else:
        with archive:
            yield archive
        return
    with path.open("rb") as raw:
        view = _NamesAsBytes(raw)
        with _zip(view, password) as archive:
            infos = archive.infolist()
            if len(infos) != len(view.flagged):
                raise zipfile.BadZipFile("central directory entries could not be counted")
            for info, flagged in zip(infos, view.flagged, strict=True):
                if flagged:
                    name = info.orig_filename.encode("cp437").decode("utf-8", "surrogateescape")
                    info.filename = zipfile.ZipInfo(name).filename  # as zipfile trims it
            yield archive
