"""The members of a zip whose directory is gone, read from their local headers.

Problem: a zip lists its members in a central directory at its very end. A bundle
cut short on its way from the customer (an upload or a download that stopped, a
disk that filled) has lost that directory, and zipfile refuses the whole archive:
every log in it was lost, though all but the last member are intact.

How: each member's data is preceded by a local header (``PK\\3\\4``: flags, method,
CRC-32, sizes, name). :func:`local_members` walks them from the start of the file:
a stored member is read by its size, a deflated one until its deflate stream ends
(which also passes members whose sizes follow their data, flag bit 3). A member is
``complete`` when all its bytes were there and its CRC-32 matches; the last one of
a cut archive usually is not, and the caller decides what to make of it. The walk
stops at the first thing that is not a local header (the central directory, or
damage, or a method other than stored and deflated). Encrypted members are named
and passed over.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_SIGNATURE = b"PK\x03\x04"
_DESCRIPTOR = b"PK\x07\x08"
_STORED, _DEFLATED = 0, 8
_BLOCK = 1 << 20
_INFLATE_BLOCK = 16 << 10
"""Compressed bytes inflated at a time: deflate reaches about 1,000:1, so one call makes
at most some 16 MiB, and the ratio limit is checked before a bomb fills memory."""


@dataclass
class LocalMember:
    """One member found by its local header; ``stream`` reads its uncompressed bytes."""

    name: str
    size: int  # as the local header declares it (0 when it follows the data)
    compressed: int | None  # likewise (None when it follows the data)
    problem: str | None  # why its bytes cannot be read (encrypted, another method)
    stream: MemberStream | None


class MemberStream:
    """A member's uncompressed bytes, read from its data in ``f`` at ``start``."""

    def __init__(
        self, f: BinaryIO, start: int, method: int, compressed: int | None, crc: int
    ) -> None:
        """``compressed`` None: the sizes and CRC-32 follow the data (flag bit 3)."""
        self._f, self._at, self._left = f, start, compressed
        self._crc: int | None = crc
        self._follows = compressed is None
        self._inflate = zlib.decompressobj(-15) if method == _DEFLATED else None
        self._seen_crc = 0
        self.consumed = 0  # compressed bytes read so far (for the ratio limit)
        self.ended = False  # the member's data ended where it should
        self.end = start  # where the next header may start, once ended
        if self._inflate is None and compressed == 0:  # a folder, or an empty file
            self._finish(start)

    def read(self, size: int = -1) -> bytes:
        while True:
            if self.ended:
                return b""
            block = _BLOCK if self._inflate is None else _INFLATE_BLOCK
            want = block if self._left is None else min(block, self._left)
            self._f.seek(self._at)
            raw = self._f.read(want) if want else b""
            if not raw:
                if self._left == 0 and self._inflate is None:
                    self._finish(self._at)
                return b""  # the file ends inside the member: it is not complete
            out = raw
            used = len(raw)
            if self._inflate is not None:
                out = self._inflate.decompress(raw)
                if self._inflate.eof:
                    used = len(raw) - len(self._inflate.unused_data)
            self._at += used
            self.consumed += used
            if self._left is not None:
                self._left -= used
            self._seen_crc = zlib.crc32(out, self._seen_crc)
            if (self._inflate is not None and self._inflate.eof) or (
                self._inflate is None and self._left == 0
            ):
                self._finish(self._at)
            if out:
                return out

    def _finish(self, at: int) -> None:
        """The data ended at ``at``; a descriptor there (its signature optional) holds the
        CRC-32 when the header did not, and the next header follows it."""
        self.ended, self.end = True, at
        if self._follows:
            self._f.seek(at)
            tail = self._f.read(16)
            signed = tail[:4] == _DESCRIPTOR
            fields = tail[4:] if signed else tail
            self._crc = struct.unpack_from("<I", fields)[0] if len(fields) >= 4 else None
            self.end = at + (16 if signed else 12)

    @property
    def complete(self) -> bool:
        """Whether all the member's bytes were read and match its CRC-32."""
        return self.ended and self._crc == (self._seen_crc & 0xFFFFFFFF)


def local_members(f: BinaryIO) -> Iterator[LocalMember]:
    """The members of the zip ``f``, in file order, by their local headers; read each
    member's stream to its end before asking for the next."""
    at = 0
    while True:
        f.seek(at)
        head = f.read(_LOCAL.size)
        if len(head) < _LOCAL.size or head[:4] != _SIGNATURE:
            return
        _, _, flags, method, _, _, crc, compressed, size, name_len, extra_len = _LOCAL.unpack(head)
        raw_name = f.read(name_len)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "surrogateescape")
        start = at + _LOCAL.size + name_len + extra_len
        follows = bool(flags & 0x8)  # sizes and CRC in a descriptor after the data
        if method not in (_STORED, _DEFLATED):
            return  # damage, or a method customers' tools do not write: the walk ends
        problem = None
        if flags & 0x1:
            problem = "encrypted member of a zip without its directory: not salvaged"
        elif follows and method == _STORED:
            problem = "stored member whose size follows its data: its end cannot be found"
        if problem is not None:
            yield LocalMember(name, size, None if follows else compressed, problem, None)
            if follows:
                return  # its end is unknown: nothing after it can be found
            at = start + compressed
            continue
        stream = MemberStream(f, start, method, None if follows else compressed, crc)
        yield LocalMember(name, size, None if follows else compressed, None, stream)
        if not stream.ended:
            return  # not read to its end (refused, or the file ends in it)
        at = stream.end
