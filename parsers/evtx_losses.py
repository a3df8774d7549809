"""What a read of one .evtx file lost, counted and named: no record goes without a word.

Problem: an engine reports the records it failed on, but not the ones it never saw.
pyevtx-rs stops a chunk at some damaged records and drops the rest of it; a chunk
overwritten by a copy of another chunk reads cleanly, twice, while the records it
held are gone; a log whose middle chunks were wiped or never flushed reads
cleanly with a hole in its record ids. None of these raise an error.

How: each readable chunk's header declares the record ids it holds (first..last);
where the header cannot be taken at its word (it fails its checksum, its signature
is damaged, or the file cuts the chunk short), the ids its records carry count
(parsers/evtx_layout.py, ``held_ids``; :func:`counted_from_records` says so).
Compared with the header ids the engines produced (:class:`SeenIds`, sorted and
unique), that gives

* records a chunk declares that no engine produced (:func:`unread`), beyond the
  failures the engines already counted, less what python-evtx recovered;
* chunks that declare the same ids as an earlier chunk (:func:`duplicated`): one
  is a copy of the other, its own records are lost, its copies are read once;
* ids missing between the lowest and the highest id of the file's chunks that no
  readable chunk declares (:func:`gaps`): records wiped, overwritten or never
  written. Ids outside every chunk's declared range (garbage from damage) are not
  taken as the file's extent.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from parsers.evtx_layout import CHUNK_SIZE, MAX_RECORDS_PER_CHUNK, FileLayout
from parsers.model import ReadIssue

_MAX_GAP_LINES = 8
_SMALL = 50_000  # ids: below, a Python list and bisect beat polars' per-call overhead


@dataclass(frozen=True)
class Span:
    """A readable chunk and the record ids its header declares (first..last)."""

    chunk: int
    offset: int
    first: int
    last: int

    @property
    def declared(self) -> int:
        return self.last - self.first + 1


def spans(layout: FileLayout, skipped: set[int]) -> list[Span]:
    """Readable chunks with a plausible declared id range, in file order.

    Chunks whose slot is skipped (bad magic, truncated, wiped) and empty chunks (their
    id fields are placeholders) have none.
    """
    found = []
    for c in layout.chunks:
        if not c.readable or c.index in skipped:
            continue
        if not c.holds_records:
            continue
        span = Span(c.index, c.offset, c.record_ids.start, c.record_ids.stop - 1)
        if 0 < span.declared <= MAX_RECORDS_PER_CHUNK:
            found.append(span)
    return found


def counted_from_records(layout: FileLayout) -> list[ReadIssue]:
    """Chunks whose records were counted from the records themselves, not from their
    header alone (:func:`parsers.evtx_layout.held_ids`): a chunk the end of the file
    cuts short, or with a signature that is not ``ElfChnk`` (pyevtx-rs skips both;
    python-evtx reads the records present), or with a header that fails its checksum
    and declares other ids than its records carry."""
    issues = []
    for c in layout.chunks:
        if c.walked is None:
            continue
        held = _ids(c.record_ids)
        if c.truncated:
            said = (
                f"chunk cut short by the end of the file ({layout.size - c.offset} of "
                f"{CHUNK_SIZE} bytes present): of its records {held}, {_ids(c.walked)} "
                "are wholly present; all are counted"
            )
        elif not c.valid_magic:
            said = f"chunk header has no ElfChnk signature, but its records run {held}"
        elif c.record_ids != c.declared_ids:
            said = (
                f"chunk header fails its checksum and declares records "
                f"{_ids(c.declared_ids)}; its records run {held}, which are counted"
            )
        else:
            continue
        issues.append(ReadIssue(said, chunk=c.index, offset=c.offset))
    return issues


def _ids(ids: range) -> str:
    return f"{ids.start}..{ids.stop - 1}" if ids else "none"


class SeenIds:
    """The record header ids a read produced, sorted and unique, and searches over them.

    A large log's ids are kept in a polars Series (2.6 million ids: 0.07 s and 21 MB,
    where a sorted Python set took 0.43 s and about 100 MB); a small log's in a Python
    list searched with bisect, because each polars call costs about half a millisecond
    of fixed overhead, more than the whole search on a file of a few hundred records
    (the corpus' 236 files are mostly such).
    """

    def __init__(self, seen: Sequence[int]) -> None:
        self._list: list[int] | None = None
        self._series: pl.Series | None = None
        if len(seen) <= _SMALL:
            self._list = sorted(set(seen))
        else:
            self._series = pl.Series("id", seen, dtype=pl.Int64).unique().sort()

    def __len__(self) -> int:
        return len(self._list) if self._list is not None else len(self._series)  # type: ignore[arg-type]

    def read_in(self, chunks: list[Span]) -> list[int]:
        """How many of each span's declared ids were read."""
        return self.between([(s.first, s.last) for s in chunks])

    def between(self, ranges: list[tuple[int, int]]) -> list[int]:
        """How many ids lie in each inclusive range."""
        at = self._positions([b for lo, hi in ranges for b in (lo, hi + 1)])
        return [at[2 * i + 1] - at[2 * i] for i in range(len(ranges))]

    def first_from(self, value: int) -> int:
        """The lowest id at or above ``value`` (there must be one)."""
        return self._at(self._positions([value])[0])

    def last_upto(self, value: int) -> int:
        """The highest id at or below ``value`` (there must be one)."""
        return self._at(self._positions([value + 1])[0] - 1)

    def _positions(self, values: list[int]) -> list[int]:
        """Where each value would be inserted before equal ids."""
        if self._list is not None:
            return [bisect.bisect_left(self._list, v) for v in values]
        assert self._series is not None
        found = self._series.search_sorted(pl.Series(values, dtype=pl.Int64), side="left")
        return [int(i) for i in found.to_list()]

    def _at(self, index: int) -> int:
        return self._list[index] if self._list is not None else int(self._series[index])  # type: ignore[index]


def short(chunks: list[Span], seen: SeenIds) -> list[tuple[Span, int]]:
    """Spans of which fewer records were read than declared, with the number read."""
    return [(s, n) for s, n in zip(chunks, seen.read_in(chunks), strict=True) if n < s.declared]


def duplicated(chunks: list[Span]) -> list[tuple[Span, Span]]:
    """(chunk, earlier chunk) pairs declaring the same record ids: one is a copy."""
    first_of: dict[tuple[int, int], Span] = {}
    pairs = []
    for span in chunks:
        earlier = first_of.setdefault((span.first, span.last), span)
        if earlier is not span:
            pairs.append((span, earlier))
    return pairs


def duplicate_issue(copy: Span, earlier: Span) -> ReadIssue:
    return ReadIssue(
        f"chunk holds the same record ids ({copy.first}..{copy.last}) as chunk "
        f"{earlier.chunk}: one is a copy of the other (its own records are lost; these "
        "were read once)",
        chunk=copy.chunk,
        offset=copy.offset,
    )


def unread(
    chunks: list[Span], seen: SeenIds, failed: Counter[int | None], recovered: Counter[int]
) -> tuple[int, list[ReadIssue]]:
    """Records the chunks declare that no engine produced nor counted: (how many, issues).

    ``failed`` holds the record failures the engines counted, by chunk (None: chunk
    unknown); ``recovered`` the records python-evtx read again per chunk. Failures in a
    chunk are taken to be among its missing records; records python-evtx recovered make
    up first for that chunk's failures, then for failures of unknown chunk. The count
    returned changes ``records_skipped``: negative when recovered records had been
    counted as failures. Failures in chunks that are not readable stay as counted.
    """
    spare = 0
    forgiven = 0
    still: dict[int, int] = {}
    for s in chunks:
        f, r = failed[s.chunk], recovered[s.chunk]
        still[s.chunk] = max(f - r, 0)
        forgiven += f - still[s.chunk]
        spare += max(r - f, 0)
    unknown_left = max(failed[None] - spare, 0)
    forgiven += failed[None] - unknown_left
    lost = []
    for s, n in zip(chunks, seen.read_in(chunks), strict=True):
        missing = s.declared - n - still[s.chunk]
        if missing > 0:
            lost.append((s, missing))
        elif missing < 0:  # more failures than records absent: python-evtx also counts
            forgiven -= missing  # a record walk stopping past a chunk's last record
    unexplained = sum(m for _, m in lost) - unknown_left
    if unexplained <= 0:
        return -forgiven, []
    issues = [
        ReadIssue(
            f"chunk header declares {s.declared} records; {m} were not read",
            chunk=s.chunk,
            offset=s.offset,
        )
        for s, m in lost
    ]
    return unexplained - forgiven, issues


def gaps(chunks: list[Span], seen: SeenIds) -> tuple[int, list[ReadIssue]]:
    """Record ids missing inside the file's extent that no readable chunk declares.

    The extent runs from the lowest to the highest id read that lies in some chunk's
    declared range; ids that chunks declare are accounted for by :func:`unread`.
    """
    merged = _merged([(s.first, s.last) for s in chunks])
    if not merged or not len(seen):
        return 0, []
    counts = seen.between(merged)
    holding = [r for r, n in zip(merged, counts, strict=True) if n]
    if not holding:
        return 0, []
    # the extent: the lowest and highest id read inside the first and last ranges holding any
    lo, hi = seen.first_from(holding[0][0]), seen.last_upto(holding[-1][1])
    holes = [
        (max(b + 1, lo), min(a2 - 1, hi))
        for (_, b), (a2, _) in itertools.pairwise(merged)
        if max(b + 1, lo) <= min(a2 - 1, hi)
    ]
    total = sum(b - a + 1 for a, b in holes)
    issues = [
        ReadIssue(f"record ids {a}..{b} are missing ({b - a + 1} records): no chunk holds them")
        for a, b in holes[:_MAX_GAP_LINES]
    ]
    if len(holes) > _MAX_GAP_LINES:
        rest = holes[_MAX_GAP_LINES:]
        issues.append(
            ReadIssue(
                f"{len(rest)} more ranges of missing record ids "
                f"({sum(b - a + 1 for a, b in rest)} records)"
            )
        )
    return total, issues


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive ranges sorted and merged where they overlap or touch."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out
