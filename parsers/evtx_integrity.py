"""Chunks whose records no longer match the checksum Windows wrote for them.

Problem: a chunk header carries a CRC32 of the chunk's records (from the end of its
header to its free space). A mismatch means the records changed after Windows last
wrote that checksum: the file was damaged, recovered from a volume shadow copy, or
edited. The records still read, so nothing counts them as lost; an investigator must
nevertheless know that this evidence is not what Windows wrote.

But a log that was open when it was copied (its file header's dirty flag set) can
carry a stale checksum in the chunk Windows was still filling: in the public corpus
the only chunk of two real, dirty Operational logs (HelloForBusiness and
LanguagePackSetup) fails its records checksum, while no chunk of the 226 cleanly
closed real logs does. So in a dirty log (or one whose file header is lost) the chunk
Windows may still have been filling is not judged (:func:`_open_chunks`): a stale
checksum there is how Windows leaves a log it is still writing.

Chunks whose header fails its own checksum are not judged either: their records
checksum field cannot be trusted, and the loss accounting (parsers/evtx_losses.py)
already names them.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from parsers.evtx_layout import (
    CHUNK_HEADER_SIZE,
    CHUNK_SIZE,
    ChunkInfo,
    FileLayout,
    records_intact,
    scan_layout,
)
from parsers.model import ReadIssue

ASIDE_CHUNKS = 64
"""Files of more chunks than this are checked on a thread of their own: 150 MB of logs
take about 0.05 s to check, which the reader's own thread need not wait for; a small
file is checked at once (a thread costs about as much as checking it)."""

RECORDS_ALTERED = (
    "records do not match the chunk's records checksum: they changed after Windows wrote "
    "it (damage, recovery from a shadow copy, or editing); they were read and used, but "
    "may not be what Windows logged"
)
HEADER_ALTERED = (
    "chunk header does not match its checksum: it changed after Windows wrote it (damage, "
    "or editing); its records were read and used, but may not be what Windows logged"
)


def _complete(chunk: ChunkInfo) -> bool:
    """A whole chunk with its signature and a header whose records area is in bounds."""
    header = chunk.header
    return (
        header is not None
        and chunk.valid_magic
        and chunk.readable  # a chunk no engine may read is named as lost, not as altered
        and not chunk.truncated
        and CHUNK_HEADER_SIZE < header.free_space_offset <= CHUNK_SIZE
    )


def _open_chunks(path: Path, layout: FileLayout, whole: bool) -> set[int]:
    """The chunks an open log may still have been filling: in a dirty log (or one whose
    file header is lost), the chunk its file header names as the last, and the chunk
    holding the file's highest record id (a stale file header names an older one: a
    real log recovered from a shadow copy still named chunk 2 where chunk 7 was being
    filled).

    ``whole``: ``layout`` covers the whole file. Otherwise it is a part of a big file,
    which parsers.evtx_reader.split_slots cuts only where record ids rise unbroken from
    slot to slot: the highest id is then in this part unless the slot after it holds
    records (one chunk header read, where reading every header cost 0.1 s per part of
    a 700 MB log)."""
    if not (layout.header.dirty or layout.header_rebuilt):
        return set()
    held = [
        (c.header.last_record_id, c.index)
        for c in layout.chunks
        if c.header is not None and c.header_crc_ok and _complete(c)
    ]
    newest = {max(held)[1]} if held and (whole or not _records_after(path, layout)) else set()
    return {layout.header.last_chunk} | newest


def _records_after(path: Path, layout: FileLayout) -> bool:
    """Whether the chunk slot after the last of ``layout`` holds records."""
    if not layout.chunks:
        return False
    after = layout.chunks[-1].index + 1
    return any(c.holds_records for c in scan_layout(path, range(after, after + 1)).chunks)


def altered_chunks(path: Path, layout: FileLayout, *, whole: bool = True) -> list[ReadIssue]:
    """One issue per chunk of ``layout`` whose header or records fail their checksum
    (a header that fails its own makes its records checksum field meaningless), except
    the chunks an open log may still have been filling. ``whole``: ``layout`` covers
    every chunk slot of the file (False for a part, scanned with ``slots``). Reads each
    judged chunk's records once; a file that cannot be opened again yields what was
    found before it (the reader names a file it cannot read)."""
    unjudged = _open_chunks(path, layout, whole)
    judged = [c for c in layout.chunks if _complete(c) and c.index not in unjudged]
    found: list[ReadIssue] = []
    try:
        with path.open("rb") as f:
            for chunk in judged:
                header = chunk.header
                assert header is not None  # _complete
                if not chunk.header_crc_ok:
                    found.append(ReadIssue(HEADER_ALTERED, chunk=chunk.index, offset=chunk.offset))
                    continue
                f.seek(chunk.offset)
                if not records_intact(f.read(header.free_space_offset), header):
                    found.append(ReadIssue(RECORDS_ALTERED, chunk=chunk.index, offset=chunk.offset))
    except OSError:
        pass
    return found


def checked_aside(path: Path, layout: FileLayout, *, whole: bool) -> Callable[[], list[ReadIssue]]:
    """:func:`altered_chunks`, on a thread beside the reader when the file is big: call
    the result for the issues once the records are read (it waits, and raises what the
    check raised)."""
    if len(layout.chunks) <= ASIDE_CHUNKS:
        found = altered_chunks(path, layout, whole=whole)
        return lambda: found
    pool = ThreadPoolExecutor(1, thread_name_prefix="lmtrace-checksums")
    try:
        return pool.submit(altered_chunks, path, layout, whole=whole).result
    finally:
        pool.shutdown(wait=False)
