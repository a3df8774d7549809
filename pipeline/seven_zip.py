"""Where py7zr writes a 7z archive's members: scratch files, checked as they grow.

Why a module of its own: py7zr's writer classes must be subclassed at import, and
importing py7zr costs a start-up that a folder of logs should not pay (20-35 ms
measured here). pipeline/archives.py imports this module only when it opens a 7z archive.
The checks are the walker's own (:class:`pipeline.archives.ArchiveWalker`): total
extraction cap, free space, and inflation against the archive's size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from py7zr import io as py7zr_io

from pipeline.archives import ArchiveWalker, Refused
from pipeline.writes import WriteError, os_cause


class SevenZipSink(py7zr_io.WriterFactory):
    """Where py7zr writes the members of one 7z archive: scratch files, under the same
    caps as any member (total extraction, free space, inflation against the archive's
    size). Members are handed to the walk after the extraction, in this thread."""

    def __init__(
        self, walker: ArchiveWalker, source_path: str, wanted: dict[str, str], size: int
    ) -> None:
        self.walker = walker
        self.source_path = source_path
        self.wanted = wanted
        self.archive_size = size
        self.inflated = 0
        self.room = walker._room()
        self.current: str | None = None
        self.partial: Path | None = None
        self.done: list[tuple[Path, str, int, str]] = []

    def create(self, filename: str) -> SevenZipMember:
        self.current = self.wanted.get(filename, filename)
        self.walker.counter += 1
        out = self.walker.scratch / f"member-{self.walker.counter:06d}"
        self.partial = out
        return SevenZipMember(self, out, self.current)

    def discard_partial(self) -> None:
        if self.partial is not None:
            self.partial.unlink(missing_ok=True)


class SevenZipMember(py7zr_io.Py7zIO):
    """One member's scratch file, hashed and checked as it grows."""

    def __init__(self, sink: SevenZipSink, out: Path, member: str) -> None:
        self.sink, self.out, self.member = sink, out, member
        self.digest = hashlib.sha256()
        self.nbytes = 0
        try:
            self.file = out.open("xb", buffering=0)
        except OSError as exc:
            code, words = os_cause(exc) or (None, str(exc))
            raise WriteError(out, f"{words}, extracting {member}", code) from None

    def write(self, s: bytes | bytearray) -> int:
        sink, walker, limits = self.sink, self.sink.walker, self.sink.walker.limits
        self.nbytes += len(s)
        sink.inflated += len(s)
        extracted = sum(n for _, _, n, _ in sink.done) + self.nbytes
        too_big = walker._cap_problem(extracted) or walker._space_problem(extracted, sink.room)
        if too_big:
            raise Refused(too_big)
        if sink.inflated > limits.ratio_grace_bytes and sink.inflated > limits.max_ratio * max(
            sink.archive_size, 1
        ):
            raise Refused(
                f"inflates more than {limits.max_ratio:,.0f}:1 while streaming "
                f"(a 7z bomb?); stopped after {self.nbytes:,} bytes "
                f"(--max-ratio raises the limit)"
            )
        self.digest.update(s)
        try:
            return self.file.write(s) or 0
        except OSError as exc:
            code, words = os_cause(exc) or (None, str(exc))
            raise WriteError(self.out, f"{words}, extracting {self.member}", code) from None

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.nbytes

    def flush(self) -> None:
        pass

    def size(self) -> int:
        return self.nbytes

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()
            self.sink.done.append((self.out, self.member, self.nbytes, self.digest.hexdigest()))
            self.sink.partial = None
