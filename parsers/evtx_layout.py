"""EVTX file and chunk headers: one definition used to read and to write them.

An .evtx file is a 4096-byte file header followed by 64 KiB chunks; each chunk
starts with a 512-byte header (128 bytes of fields, then the common-string and
template offset tables) and holds event records. The layout follows libyal's
"Windows XML Event Log (EVTX)" format documentation.

The reader uses :func:`scan_layout` before decoding, because pyevtx-rs does not
say which chunks it could not read, nor how far into the file it is: the scan
gives the chunk map that turns "record N decoded" into "bytes done" for the
progress bar and lets the report count chunks that were skipped. The writer
packs the same dataclasses, so the bytes we test with and the bytes we parse
come from one definition.
"""

from __future__ import annotations

import itertools
import mmap
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

FILE_MAGIC = b"ElfFile\x00"
CHUNK_MAGIC = b"ElfChnk\x00"
RECORD_MAGIC = b"\x2a\x2a\x00\x00"
FILE_HEADER_SIZE = 4096
FILE_HEADER_FIELDS_SIZE = 128
CHUNK_SIZE = 65536
CHUNK_HEADER_SIZE = 512
CHUNK_HEADER_FIELDS_SIZE = 128

FLAG_DIRTY = 0x1
FLAG_FULL = 0x2

_FILE_HEADER = struct.Struct("<8sQQQIHHHH76sII")
_CHUNK_HEADER = struct.Struct("<8sQQQQIIII64sII")
_RECORD_HEADER = struct.Struct("<4sIQQ")
RECORD_HEADER_SIZE = _RECORD_HEADER.size  # 24; the record ends with a copy of its size
_FIRST_RECORD_END = CHUNK_HEADER_SIZE + len(RECORD_MAGIC)  # a chunk header and a record magic
MAX_RECORDS_PER_CHUNK = (CHUNK_SIZE - CHUNK_HEADER_SIZE) // (RECORD_HEADER_SIZE + 4)
"""A record needs at least its 24-byte header and a 4-byte size copy."""


def crc32(data: bytes) -> int:
    """The CRC32 (IEEE, as zlib) that EVTX uses for every checksum."""
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class FileHeader:
    """The first 128 bytes of an .evtx file (the rest of its 4096 is zero)."""

    first_chunk: int
    last_chunk: int
    next_record_id: int
    chunk_count: int
    flags: int = 0
    minor_version: int = 1
    major_version: int = 3
    header_size: int = FILE_HEADER_FIELDS_SIZE
    block_size: int = FILE_HEADER_SIZE
    checksum: int | None = None  # None: computed by pack()

    @property
    def dirty(self) -> bool:
        return bool(self.flags & FLAG_DIRTY)

    def _fields(self, checksum: int) -> bytes:
        return _FILE_HEADER.pack(
            FILE_MAGIC,
            self.first_chunk,
            self.last_chunk,
            self.next_record_id,
            self.header_size,
            self.minor_version,
            self.major_version,
            self.block_size,
            self.chunk_count,
            b"\x00" * 76,
            self.flags,
            checksum,
        )

    def computed_checksum(self) -> int:
        """CRC32 of the first 120 bytes, as Windows stores it at offset 124."""
        return crc32(self._fields(0)[:120])

    def pack(self) -> bytes:
        """The full 4096-byte header block."""
        checksum = self.computed_checksum() if self.checksum is None else self.checksum
        return self._fields(checksum).ljust(FILE_HEADER_SIZE, b"\x00")

    @classmethod
    def unpack(cls, data: bytes) -> FileHeader:
        """Parse the header; raises ValueError when the magic is not ``ElfFile``."""
        if len(data) < FILE_HEADER_FIELDS_SIZE or data[:8] != FILE_MAGIC:
            raise ValueError("not an EVTX file (no ElfFile signature)")
        (_, first, last, next_id, hsize, minor, major, bsize, count, _, flags, checksum) = (
            _FILE_HEADER.unpack_from(data)
        )
        return cls(first, last, next_id, count, flags, minor, major, hsize, bsize, checksum)


@dataclass(frozen=True)
class ChunkHeader:
    """The 128 fields bytes of a chunk header.

    ``tables`` holds the 384 bytes that follow (64 common-string offsets and
    32 template offsets); the header checksum covers both parts.
    """

    first_record_number: int
    last_record_number: int
    first_record_id: int
    last_record_id: int
    last_record_offset: int
    free_space_offset: int
    records_checksum: int
    flags: int = 0
    header_size: int = CHUNK_HEADER_FIELDS_SIZE
    checksum: int | None = None  # None: computed by pack()

    def _fields(self, checksum: int) -> bytes:
        return _CHUNK_HEADER.pack(
            CHUNK_MAGIC,
            self.first_record_number,
            self.last_record_number,
            self.first_record_id,
            self.last_record_id,
            self.header_size,
            self.last_record_offset,
            self.free_space_offset,
            self.records_checksum,
            b"\x00" * 64,
            self.flags,
            checksum,
        )

    def computed_checksum(self, tables: bytes) -> int:
        """CRC32 of bytes 0-120 and 128-512 of the chunk, as stored at offset 124."""
        return crc32(self._fields(0)[:120] + tables)

    def pack(self, tables: bytes) -> bytes:
        """The 512-byte chunk header: fields, then the 384-byte offset tables."""
        if len(tables) != CHUNK_HEADER_SIZE - CHUNK_HEADER_FIELDS_SIZE:
            raise ValueError("chunk offset tables must be 384 bytes")
        checksum = self.computed_checksum(tables) if self.checksum is None else self.checksum
        return self._fields(checksum) + tables

    @classmethod
    def unpack(cls, data: bytes, *, signed: bool = True) -> ChunkHeader:
        """Parse a chunk header; raises ValueError when the magic is not ``ElfChnk``
        (``signed=False``: read the fields behind a damaged signature all the same)."""
        if len(data) < CHUNK_HEADER_FIELDS_SIZE or (signed and data[:8] != CHUNK_MAGIC):
            raise ValueError("bad chunk signature (expected ElfChnk)")
        (_, fnum, lnum, fid, lid, hsize, last_off, free_off, rec_crc, _, flags, checksum) = (
            _CHUNK_HEADER.unpack_from(data)
        )
        return cls(fnum, lnum, fid, lid, last_off, free_off, rec_crc, flags, hsize, checksum)


def pack_record_header(size: int, record_id: int, written_filetime: int) -> bytes:
    """The 24 bytes before a record's binary XML: magic, size, id, written time."""
    return _RECORD_HEADER.pack(RECORD_MAGIC, size, record_id, written_filetime)


@dataclass(frozen=True)
class ChunkInfo:
    """What the layout scan learned about one 64 KiB slot of the file."""

    index: int
    offset: int
    valid_magic: bool
    header: ChunkHeader | None
    header_crc_ok: bool | None  # None: no complete header to check
    records_crc_ok: bool | None  # None: not checked (scan_layout's ``checksums``)
    truncated: bool  # the slot runs past the end of the file
    # ids found by walking the records: where the header fails its checksum (a damaged
    # signature fails it too), and in a chunk cut short, the records wholly present
    walked: range | None = None
    # its string or template table links loop (:func:`links_loop`): no engine may read it
    links_loop: bool = False

    @property
    def declared_ids(self) -> range:
        """The record ids the header declares (empty when the header is unreadable)."""
        if self.header is None or self.header.last_record_id < self.header.first_record_id:
            return range(0)
        return range(self.header.first_record_id, self.header.last_record_id + 1)

    @property
    def readable(self) -> bool:
        """Whether an engine can be asked for the chunk's records: the slot is complete
        and its signature is right, or walking it found records, behind a damaged
        signature or before the end of a file that cuts it short (pyevtx-rs skips such
        a chunk; python-evtx reads it). Never a chunk whose links loop: both engines
        would follow them for ever."""
        if self.links_loop:
            return False
        return self.walked is not None or (self.valid_magic and not self.truncated)

    @property
    def holds_records(self) -> bool:
        """Whether the chunk holds records: its free space starts after its header, or,
        where the header fails its checksum, walking its records found some."""
        if self.header is None:
            return False
        return self.walked is not None or self.header.free_space_offset > CHUNK_HEADER_SIZE

    @property
    def record_ids(self) -> range:
        """The record ids this chunk holds: as its header declares them, or, where the
        header fails its checksum, as :func:`held_ids` makes them out from its records."""
        declared = self.declared_ids
        if self.walked is None:
            return declared
        return held_ids(declared, self.walked, self.header)


@dataclass(frozen=True)
class FileLayout:
    """The file header plus every chunk slot actually present in the file."""

    header: FileHeader
    header_crc_ok: bool
    size: int
    chunks: tuple[ChunkInfo, ...]
    # The file's own header has no ElfFile signature: ``header`` is rebuilt from the
    # chunks (:func:`rebuilt_header`), and readers are given it in place of the file's.
    header_rebuilt: bool = False

    @property
    def chunks_beyond_header(self) -> int:
        """Valid chunks past the header's chunk count (a dirty, unclosed log)."""
        return sum(1 for c in self.chunks if c.valid_magic and c.index >= self.header.chunk_count)


def _header_crc(chunk: memoryview) -> int:
    """The checksum a chunk header should carry, over its bytes as they are on disk
    (:meth:`ChunkHeader.computed_checksum` packs the fields again, zeroing bytes it
    does not model, which a damaged or foreign header need not hold)."""
    return zlib.crc32(chunk[CHUNK_HEADER_FIELDS_SIZE:CHUNK_HEADER_SIZE], crc32(chunk[:120]))


_LINK = struct.Struct("<I")
_LINK_TABLES = struct.Struct("<96I")  # 64 common-string offsets, then 32 template offsets
_LONGEST_CHAIN = CHUNK_SIZE // 8
"""More entries than a chunk can hold (each takes 8 bytes at least): a chain this long
has come back on itself."""


def links_loop(data: bytes | memoryview, at: int, end: int) -> bool:
    """Whether the chunk at ``at`` in ``data`` (``end``: where the file's bytes stop) has
    a common-string or template chain that comes back on itself.

    Each of the chunk header's 64 string and 32 template offsets starts a chain: every
    entry begins with the chunk offset of the next one (0 ends it). Both engines follow
    these chains to build the chunk's caches before any record, without a bound: one
    damaged byte that points an entry back into its chain (a fuzzed Security log's
    0x00 turned 0xE0) kept pyevtx-rs and python-evtx busy for ever. Offsets are
    followed as the engines follow them, into the header too; one past the chunk's
    bytes ends the chain (the engines stop there with an error, not a hang).
    """
    for link in _LINK_TABLES.unpack_from(data, at + CHUNK_HEADER_FIELDS_SIZE):
        hops = 0
        while link and at + link + _LINK.size <= min(end, at + CHUNK_SIZE):
            hops += 1
            if hops > _LONGEST_CHAIN:
                return True
            (link,) = _LINK.unpack_from(data, at + link)
    return False


def records_intact(chunk: bytes | memoryview, header: ChunkHeader) -> bool:
    """Whether the records of a chunk (``chunk``: its bytes from its start, at least up to
    its free space) match the records checksum its header carries."""
    end = header.free_space_offset
    return (
        CHUNK_HEADER_SIZE <= end <= len(chunk)
        and crc32(chunk[CHUNK_HEADER_SIZE:end]) == header.records_checksum
    )


def walk_records(chunk: bytes, free_space_offset: int) -> range | None:
    """The record ids a chunk's records carry, found by following each record's size
    from the first record to the free space (to the end of ``chunk`` where the free
    space offset is out of bounds: a damaged header, or a chunk the end of the file
    cuts short): None unless they run one by one upwards.

    For a chunk whose header fails its checksum: pyevtx-rs stops a chunk at the last
    record id its header declares, so a header damaged there hides the records after
    it (one overwritten byte in a real Security log's chunk hid 31 of its 101 records).
    Where the walk meets a damaged record it stops; what follows stays the header's.
    """
    end = free_space_offset if CHUNK_HEADER_SIZE < free_space_offset <= len(chunk) else len(chunk)
    at, ids = CHUNK_HEADER_SIZE, []
    while at + RECORD_HEADER_SIZE <= end:
        magic, size, record_id, _ = _RECORD_HEADER.unpack_from(chunk, at)
        if magic != RECORD_MAGIC or size < RECORD_HEADER_SIZE + 4 or at + size > end:
            break
        ids.append(record_id)
        at += size
    if not ids or any(b != a + 1 for a, b in itertools.pairwise(ids)):
        return None
    return range(ids[0], ids[-1] + 1)


def held_ids(declared: range, walked: range, header: ChunkHeader | None) -> range:
    """The ids a chunk with a failed header checksum holds: those its records carry,
    and those its header declares where the declaration is still credible (its record
    numbers span as many records as its ids do; a damaged id field breaks that).

    Joining both counts records the walk did not reach (a damaged record stops it),
    and a damaged declaration cannot hide records nor invent them.
    """
    credible = (
        header is not None
        and 0 < declared.stop - declared.start <= MAX_RECORDS_PER_CHUNK  # len() overflows
        and header.last_record_number - header.first_record_number
        == declared.stop - declared.start - 1
    )
    if not credible or declared.stop < walked.start or walked.stop < declared.start:
        return walked
    return range(min(declared.start, walked.start), max(declared.stop, walked.stop))


EVTX_HEAD_SIZE = FILE_HEADER_SIZE + len(CHUNK_MAGIC)
"""The leading bytes :func:`is_evtx` looks at: the file header and a chunk signature."""


def is_evtx(head: bytes) -> bool:
    """Whether the first bytes of a file (up to :data:`EVTX_HEAD_SIZE`) are EVTX: the
    ElfFile signature, or, behind a file header without it, a first chunk's ElfChnk
    (a damaged header over chunks that can still be read)."""
    return head[:8] == FILE_MAGIC or head[FILE_HEADER_SIZE:EVTX_HEAD_SIZE] == CHUNK_MAGIC


def rebuilt_header(chunks: tuple[ChunkInfo, ...]) -> FileHeader:
    """A file header for chunks whose own file header lost its signature: it counts
    the chunks up to the first slot that is not one (the lost header's count is
    unknown, and a rebuilt one must not call an empty slot wiped), and its next
    record id follows the highest id they hold. pyevtx-rs refuses a file without the
    signature, and reads the chunks past a header's count as in a dirty log."""
    count = next((c.index for c in chunks if not c.readable), len(chunks))
    next_id = max((c.record_ids.stop for c in chunks if c.readable and c.record_ids), default=1)
    return FileHeader(
        first_chunk=0, last_chunk=max(count - 1, 0), next_record_id=next_id, chunk_count=count
    )


def _iter_chunks(
    f: BinaryIO, mapped: mmap.mmap, slots: range | None, checksums: bool
) -> Iterator[ChunkInfo]:
    size = len(mapped)
    index = 0 if slots is None else slots.start
    offset = FILE_HEADER_SIZE + index * CHUNK_SIZE
    while offset + CHUNK_HEADER_FIELDS_SIZE <= size and (slots is None or index < slots.stop):
        f.seek(offset)
        data = f.read(CHUNK_SIZE if checksums else _FIRST_RECORD_END)
        truncated = offset + CHUNK_SIZE > size
        valid = data[:8] == CHUNK_MAGIC
        header: ChunkHeader | None = None
        header_ok: bool | None = None
        records_ok: bool | None = None
        walked: range | None = None
        # A damaged signature over a chunk that still starts with a record: its header
        # fails its checksum below, and its records are walked as for any such header.
        signed = valid or (
            not truncated and data[CHUNK_HEADER_SIZE:_FIRST_RECORD_END] == RECORD_MAGIC
        )
        if signed and len(data) >= CHUNK_HEADER_SIZE:
            header = ChunkHeader.unpack(data, signed=False)
            view = memoryview(data)
            header_ok = _header_crc(view) == header.checksum
            if checksums:
                records_ok = records_intact(view, header)
            if not header_ok or truncated:
                if len(data) < CHUNK_SIZE:
                    f.seek(offset)
                    data = f.read(CHUNK_SIZE)  # all there is of a chunk cut short
                walked = walk_records(data, header.free_space_offset)
            if not valid and walked is None:  # no record behind the damage after all
                header, header_ok = None, None
        loops = header is not None and links_loop(mapped, offset, size)
        yield ChunkInfo(
            index, offset, valid, header, header_ok, records_ok, truncated, walked, loops
        )
        offset += CHUNK_SIZE
        index += 1


def scan_layout(
    path: str | Path, slots: range | None = None, *, checksums: bool = False
) -> FileLayout:
    """Read the file header and every chunk header without decoding records.

    ``slots`` limits the scan to those chunk slots (a part of a big file that one
    of several readers reads; the chunks keep their index and offset).
    ``checksums``: also check each chunk's header and records checksums, at the
    cost of reading the whole file (the reader does not use them: without, the
    scan reads 512 bytes a chunk, and took a twentieth of an ingest with).
    Raises ValueError when the file is not EVTX.
    """
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(EVTX_HEAD_SIZE)
        if not is_evtx(head):
            raise ValueError("not an EVTX file (no ElfFile signature)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            size = len(mapped)
            chunks = tuple(_iter_chunks(f, mapped, slots, checksums))
    if head[:8] != FILE_MAGIC:
        return FileLayout(rebuilt_header(chunks), False, size, chunks, header_rebuilt=True)
    header = FileHeader.unpack(head)
    return FileLayout(header, header.computed_checksum() == header.checksum, size, chunks)


def declared_ids(path: str | Path) -> list[range | None]:
    """Per chunk slot, the record ids its header declares (empty for an empty chunk),
    or None when the slot holds no complete chunk; from each chunk header's first
    fields only, without checksums: a plan, not a verdict (:func:`scan_layout` is).
    Raises ValueError when the file is not EVTX."""
    path = Path(path)
    size = path.stat().st_size
    found: list[range | None] = []
    with path.open("rb") as f:
        FileHeader.unpack(f.read(FILE_HEADER_FIELDS_SIZE))
        for offset in range(FILE_HEADER_SIZE, size - CHUNK_HEADER_FIELDS_SIZE + 1, CHUNK_SIZE):
            f.seek(offset)
            data = f.read(CHUNK_HEADER_FIELDS_SIZE)
            if data[:8] != CHUNK_MAGIC or offset + CHUNK_SIZE > size:
                found.append(None)
                continue
            header = ChunkHeader.unpack(data)
            if header.free_space_offset <= CHUNK_HEADER_SIZE:  # no record: placeholder ids
                found.append(range(0))
            else:
                found.append(range(header.first_record_id, header.last_record_id + 1))
    return found
