"""Chunks pyevtx-rs read short, read again with python-evtx: keep what it adds.

Problem: pyevtx-rs (the fast default engine) drops the rest of a chunk at some
damaged records: one flipped bit in a record's magic lost 59 of the 71 records of
its chunk, counted but gone, while python-evtx, which walks a chunk record by
record by their sizes, reads all 71.

How: after pyevtx-rs has read the file, each readable chunk of which it read fewer
records than the chunk header declares is read again with python-evtx
(parsers/evtx_python.py, the same JSON shape and row code as pyevtx-rs); the
records it reads that pyevtx-rs did not become rows with ``engine = python``, and
one issue per chunk says how many each engine read. python-evtx is slow (about a
hundred records a second here), so at most ``RECOVER_CHUNKS`` chunks per file are
read again, and the issue list says how many more were left.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from parsers.evtx_layout import FileLayout
from parsers.evtx_losses import Span
from parsers.evtx_python import iter_records
from parsers.evtx_rows import Batch, add_system, fit_system
from parsers.model import ReadIssue

RECOVER_CHUNKS = 64
"""Chunks per file read again (64 full chunks: about a minute; most damaged files have one)."""


@dataclass
class Recovery:
    """What python-evtx added: a batch of rows, the count per chunk, and what to say."""

    batch: Batch = field(default_factory=Batch)
    by_chunk: Counter[int] = field(default_factory=Counter)
    issues: list[ReadIssue] = field(default_factory=list)


def recover(
    path: Path, layout: FileLayout, wanting: list[tuple[Span, int]], known: set[int]
) -> Recovery:
    """Read the chunks of ``wanting`` (span, records pyevtx-rs read) with python-evtx;
    keep the records whose header id is not in ``known`` (those pyevtx-rs read)."""
    found = Recovery()
    chosen = wanting[:RECOVER_CHUNKS]
    ranges = {span.chunk: (span.first, span.last) for span, _ in chosen}

    def wanted(chunk: int, header_id: int | None) -> bool:
        first, last = ranges[chunk]
        return header_id is not None and first <= header_id <= last and header_id not in known

    for item in iter_records(path, layout, only=set(ranges), wanted=wanted):
        if isinstance(item, ReadIssue) or not wanted(item.chunk, item.header_id):
            continue  # python-evtx failing too loses nothing more: the count is kept
        fitted = fit_system(item.system)
        if fitted is None:
            continue
        known.add(item.header_id)
        add_system(found.batch, fitted[0], item.header_id)
        found.batch.payloads.append(item.sections)
        found.by_chunk[item.chunk] += 1
    for span, read in chosen:
        found.issues.append(
            ReadIssue(
                f"pyevtx-rs read {read} of the chunk's {span.declared} records; "
                f"python-evtx read {found.by_chunk[span.chunk]} more (their rows have "
                "engine python)",
                chunk=span.chunk,
                offset=span.offset,
            )
        )
    if len(wanting) > len(chosen):
        found.issues.append(
            ReadIssue(
                f"{len(wanting) - len(chosen)} more chunks with records pyevtx-rs did not "
                "read were not read again with python-evtx (--engine python reads the whole "
                "file with it)"
            )
        )
    return found
