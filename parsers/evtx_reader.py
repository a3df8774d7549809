"""One EVTX reader API over two engines, lenient per record and per chunk.

Problem: support bundles carry damaged, dirty and truncated .evtx files, and a
1 GB Security log must ingest at close to the speed of pyevtx-rs itself. So:

* ``read_evtx`` returns an :class:`EvtxRead`: an iterator of polars frames with
  exactly ``model.EVENT_SCHEMA`` plus a :class:`~parsers.model.ReadReport` that
  is complete once the iterator is exhausted.
* Nothing is dropped silently. Counted and named: bad records (pyevtx-rs
  RuntimeWarnings, python-evtx exceptions); chunk slots that cannot be read
  (from :func:`parsers.evtx_layout.scan_layout`); and records a chunk header
  declares that no engine produced (pyevtx-rs stops a chunk at some bad records
  without saying how many follow). Chunks read in full whose checksums fail are
  named apart (``report.altered``, parsers/evtx_integrity.py): read, not lost.
* The default engine is pyevtx-rs. Its records become rows in the compiled
  scanner (parsers/_evtx_scan.c, through parsers/native.py) when it was built,
  any record it hands back and every record without it in parsers/evtx_rows.py
  (typed System decode, payload flattened only for kept rows; without the
  scanner, with filters, a conservative look at each record's JSON text first
  rejects most records undecoded: parsers/evtx_prefilter.py); batches are
  normalized and filtered in polars.
* The python engine (python-evtx, parsers/evtx_python.py) reads every chunk
  slot, also past the header's count, and builds the same JSON shape, so both
  engines share the row code and give identical rows.
* If pyevtx-rs cannot open or iterate a file at all, python-evtx reads it and
  the report says why (``fallback``).
* A big file can be read by several processes, each a range of chunk slots
  (``read_evtx(..., slots=)``): pyevtx-rs reads a view of the file holding its
  header and those chunks. :func:`split_slots` cuts only files whose parts cannot
  disagree with a whole read (every slot a chunk, record ids one unbroken run); a
  caller takes the parts' rows only when every part read cleanly.
"""

from __future__ import annotations

import io
import itertools
import warnings
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import evtx
import msgspec
import polars as pl

from parsers.evtx_integrity import checked_aside
from parsers.evtx_layout import (
    CHUNK_SIZE,
    EVTX_HEAD_SIZE,
    FILE_HEADER_SIZE,
    FileLayout,
    declared_ids,
    is_evtx,
    scan_layout,
)
from parsers.evtx_losses import (
    SeenIds,
    counted_from_records,
    duplicate_issue,
    duplicated,
    gaps,
    short,
    spans,
    unread,
)
from parsers.evtx_prefilter import Prefilter, parse_time, system_time
from parsers.evtx_rows import (
    DOC_DECODER,
    ROW_INDEX,
    Batch,
    Event,
    Framing,
    System,
    add_system,
    fit_system,
    lenient_event,
    python_payload,
    raw_frame,
    rows_frame,
    rust_payload,
    to_frame,
)
from parsers.model import (
    Engine,
    EventFilter,
    Provenance,
    ReadIssue,
    ReadReport,
    UnreadableFileError,
)
from parsers.native import compiled_scanner

if TYPE_CHECKING:
    from parsers.evtx_python import PyRecord

# Compiled at install (setup.py); without it the Python rows do the same, slower.
_evtx_scan, _ = compiled_scanner()

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ReadSettings:
    """How to read one file: engine, early filters, batch size, fallback policy."""

    engine: Engine = "rust"
    filter: EventFilter = field(default_factory=EventFilter)  # applied before rows are built
    # Rows per frame. Reading a 700 MB Security.evtx peaked at 390 MB with 50,000, 247 MB
    # with 20,000 and 188 MB with 10,000 rows, as fast.
    batch_size: int = 10_000
    fallback: bool = True  # rust cannot open the file -> python engine, and say so
    # Rows built by the compiled scanner (parsers/_evtx_scan.c) when it was built; False:
    # by the Python reference code in parsers/evtx_rows.py, the same rows, 3-4x slower.
    native_rows: bool = True


def _in_ranges(expr: pl.Expr, ranges: list[tuple[int, int]]) -> pl.Expr:
    """Whether ``expr`` lies in any of the inclusive ``ranges``."""
    if not ranges:
        return pl.lit(False)
    return pl.any_horizontal([expr.is_between(lo, hi) for lo, hi in ranges])


# --- filters ----------------------------------------------------------------


def _filter_expr(settings: ReadSettings) -> pl.Expr | None:
    return settings.filter.predicate()


# --- progress: record id -> chunk -> bytes done -------------------------------


class _ProgressMap:
    """Turns "the reader is at record N" into byte increments that sum to the bytes of
    the file (or of the part of it) read, ``start`` to ``end``."""

    def __init__(
        self, layout: FileLayout | None, start: int, end: int, progress: Progress | None
    ) -> None:
        self._progress = progress
        self._size = end
        self._done = start
        self._chunks: list[tuple[int, int, int]] = []  # (file order, first id, last id)
        if layout is not None:
            for c in layout.chunks:
                ids = c.record_ids
                if c.valid_magic and ids.stop > ids.start:  # len() overflows on damaged ids
                    self._chunks.append((c.offset, ids.start, ids.stop - 1))
        self._next = 0  # index into _chunks of the next chunk not yet reached

    def at_record(self, header_id: int) -> None:
        """Everything before the chunk that holds ``header_id`` is done."""
        if self._progress is None:
            return
        # Engines read chunks in file order: look a little ahead, never rescan the file
        # for ids that match no chunk (damaged headers).
        for i in range(self._next, min(self._next + 64, len(self._chunks))):
            offset, first, last = self._chunks[i]
            if first <= header_id <= last:
                self._advance(offset)
                self._next = i
                return

    def _advance(self, to: int) -> None:
        to = min(to, self._size)
        if self._progress is not None and to > self._done:
            self._progress(to - self._done)
            self._done = to

    def finish(self) -> None:
        self._advance(self._size)


# --- layout-level issues -------------------------------------------------------


def _chunk_issues(path: Path, layout: FileLayout) -> list[ReadIssue]:
    """Chunk slots that cannot be read: bad magic, truncated, or wiped inside the header's count.

    An all-zero slot past the header's chunk count is an unused, preallocated
    slot (nothing is lost there); an all-zero slot the header counts as in use
    was wiped.
    """
    issues: list[ReadIssue] = []
    with path.open("rb") as f:
        for c in layout.chunks:
            if c.links_loop:
                issues.append(
                    ReadIssue(
                        "chunk's string or template table links loop back on themselves"
                        " (damage): no EVTX engine could ever finish reading it, so it is"
                        f" not read; its {len(c.record_ids)} declared records are lost",
                        chunk=c.index,
                        offset=c.offset,
                    )
                )
                continue
            if c.readable:
                continue
            f.seek(c.offset)
            data = f.read(CHUNK_SIZE)
            if data.count(0) == len(data):
                if c.index < layout.header.chunk_count:
                    issues.append(
                        ReadIssue(
                            "chunk is all zero bytes but the file header counts it as in use",
                            chunk=c.index,
                            offset=c.offset,
                        )
                    )
                continue
            if c.valid_magic:
                declared = c.record_ids.stop - c.record_ids.start
                issues.append(
                    ReadIssue(
                        f"chunk truncated ({len(data)} of {CHUNK_SIZE} bytes present); "
                        f"its {declared} declared records are not read",
                        chunk=c.index,
                        offset=c.offset,
                    )
                )
            else:
                issues.append(
                    ReadIssue(
                        "chunk header has no ElfChnk signature but the slot holds data; skipped",
                        chunk=c.index,
                        offset=c.offset,
                    )
                )
    return issues


# --- the public reader ---------------------------------------------------------


class EvtxRead:
    """Frames of one file, in batches (at least one, maybe empty); iterate once.

    ``report`` is complete once iteration ends.
    """

    def __init__(
        self,
        path: Path,
        settings: ReadSettings,
        provenance: Provenance,
        layout: FileLayout,
        progress: Progress | None,
        slots: range | None = None,
    ) -> None:
        self.path = path
        self.settings = settings
        self.provenance = provenance
        self.layout = layout
        self._progress = progress
        self._extent = _extent(layout.size, slots)
        self._part = slots is not None
        rebuilt = layout.header.pack() if layout.header_rebuilt else None
        looping = frozenset(c.index for c in layout.chunks if c.links_loop)
        self._view = (
            _ChunkView(path, slots, rebuilt, looping)
            if self._part or rebuilt is not None or looping
            else None
        )
        self._file: BinaryIO | None = None  # an open file for a name pyevtx-rs cannot open
        self.report = ReadReport(engine=settings.engine, dirty=layout.header.dirty)
        self._chunk_issues = _chunk_issues(path, layout)
        self._skipped_chunks = {i.chunk for i in self._chunk_issues}
        # chunks cut short, or with a damaged signature, that hold records: pyevtx-rs
        # skips them (with a warning), python-evtx reads them (_recover)
        self._for_python = {
            c.index for c in layout.chunks if c.readable and (c.truncated or not c.valid_magic)
        }
        self._parser: Any = None
        # Header ids of every record decoded (before filters), 8 bytes each: a list of
        # Python ints took 36 (65 MB for a 700 MB Security.evtx, at the reader's peak).
        self._seen = array("Q")
        self._failed: Counter[int | None] = Counter()  # records counted unread, by chunk
        self._recovered: Counter[int] = Counter()  # records python-evtx read again, by chunk
        self._copies = duplicated(spans(layout, self._skipped_chunks))
        self._copy_seen: set[int] = set()  # ids read so far inside duplicated ranges
        self._seen_ids: SeenIds | None = None  # _seen sorted, once no more ids can come
        self._started = False
        if settings.engine == "rust":
            try:
                source: Any = self._view
                if source is None and _undecodable(path):  # pyevtx-rs takes UTF-8 paths only
                    source = self._file = path.open("rb")
                self._parser = evtx.PyEvtxParser(
                    str(path) if source is None else source, skip_errors=True
                )
            except Exception as exc:
                self._use_python(f"pyevtx-rs could not open the file: {exc}")

    def _use_python(self, reason: str) -> None:
        if not self.settings.fallback:
            raise UnreadableFileError(
                str(self.path), f"{reason} (fallback to python-evtx is off)", self.provenance.member
            )
        if not any(c.readable for c in self.layout.chunks):
            raise UnreadableFileError(
                str(self.path),
                f"{reason}; python-evtx finds no complete chunk either",
                self.provenance.member,
            )
        self.report.engine = "python"
        self.report.fallback = reason

    def __iter__(self) -> Iterator[pl.DataFrame]:
        if self._started:
            raise RuntimeError("an EvtxRead can be iterated once; call read_evtx again")
        self._started = True
        report = self.report
        report.issues.extend(self._chunk_issues)
        report.chunks_skipped += len(self._chunk_issues)
        if self.layout.header_rebuilt:
            report.issues.append(
                ReadIssue(
                    "file header has no ElfFile signature: its chunks are read, with a file "
                    "header rebuilt from them",
                    offset=0,
                )
            )
        report.issues.extend(counted_from_records(self.layout))
        report.issues.extend(duplicate_issue(copy, earlier) for copy, earlier in self._copies)
        report.chunks_duplicated = len(self._copies)
        tracker = _ProgressMap(self.layout, *self._extent, self._progress)
        altered = checked_aside(self.path, self.layout, whole=not self._part)
        try:
            for frame in self._frames(tracker):
                yield self._read_once(frame) if self._copies else frame
        finally:
            for opened in (self._view, self._file):
                if opened is not None:
                    opened.close()
        self._account()
        report.altered = altered()
        tracker.finish()

    def _frames(self, tracker: _ProgressMap) -> Iterator[pl.DataFrame]:
        if self.report.engine == "rust":
            rust = self._iter_rust(tracker)
            try:
                first = next(rust)
            except StopIteration:
                first = None
            except _RustFailed as exc:
                self._use_python(str(exc))
                first = None
            if self.report.engine == "rust":
                if first is not None:
                    yield first
                    yield from rust
                yield from self._recover()
                return
        yield from self._iter_python(tracker)

    def _fail(self, issue: ReadIssue) -> None:
        """Count one record that could not be read, by chunk (for :meth:`_account`)."""
        self.report.issues.append(issue)
        self.report.records_skipped += 1
        chunk = issue.chunk
        if chunk is None and issue.record_id is not None:
            chunk = self._chunk_of(issue.record_id)
        self._failed[chunk] += 1

    def _account(self) -> None:
        """Count what the engines lost without a word (parsers/evtx_losses.py): records
        chunks declare that none produced, record ids no chunk holds, copies read twice."""
        report = self.report
        readable = spans(self.layout, self._skipped_chunks)
        seen = self._seen_ids if self._seen_ids is not None else SeenIds(self._seen)
        change, issues = unread(readable, seen, self._failed, self._recovered)
        report.records_skipped += change
        report.issues += issues
        # A part's chunks may hold ids that run apart (a log that wrapped round), and
        # split_slots cuts only files without a hole: holes are a whole read's to count.
        if not self._part:
            report.records_missing, holes = gaps(readable, seen)
            report.issues += holes
        if self._copies:  # each record of a copied range counts once
            ids = pl.DataFrame({"id": self._seen}, schema={"id": pl.UInt64})
            copied = ids.filter(_in_ranges(pl.col("id"), self._copies_ranges()))["id"]
            report.records -= copied.len() - copied.n_unique()

    def _copies_ranges(self) -> list[tuple[int, int]]:
        return [(copy.first, copy.last) for copy, _ in self._copies]

    def _read_once(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Drop rows of a duplicated chunk's ids already read (the copy reads identically)."""
        ids = frame["header_record_id"]
        inside = frame.select(_in_ranges(pl.col("header_record_id"), self._copies_ranges()))
        inside_ids = inside.to_series()
        again = inside_ids & (~ids.is_first_distinct() | ids.is_in(sorted(self._copy_seen)))
        self._copy_seen.update(ids.filter(inside_ids).to_list())
        dropped = int(again.sum())
        self.report.records_kept -= dropped
        return frame.filter(~again) if dropped else frame

    def _recover(self) -> Iterator[pl.DataFrame]:
        """Chunks pyevtx-rs read short, read again by python-evtx (parsers/evtx_recover.py)."""
        layout_skipped = {i.chunk for i in self._chunk_issues}
        seen = SeenIds(self._seen)
        wanting = short(spans(self.layout, layout_skipped), seen)
        if not wanting:
            self._seen_ids = seen  # nothing read again: _account can use it as it is
            return
        from parsers.evtx_recover import RECOVER_CHUNKS, recover  # loads python-evtx: 0.05 s

        ranges = [(span.first, span.last) for span, _ in wanting[:RECOVER_CHUNKS]]
        found = recover(self.path, self.layout, wanting, self._ids_in(ranges))
        self._recovered = found.by_chunk
        if len(found.batch):
            yield to_frame(found.batch, self._seen, self._framing("python"))
        for chunk in +found.by_chunk:
            if chunk in self._skipped_chunks:  # pyevtx-rs had skipped all of it
                self._skipped_chunks.discard(chunk)
                self.report.chunks_skipped -= 1
        self.report.issues += found.issues
        self.report.records_recovered += found.by_chunk.total()

    def _ids_in(self, ranges: list[tuple[int, int]]) -> set[int]:
        """The header ids read so far inside ``ranges`` (a few chunks: a small set)."""
        ids = pl.DataFrame({"id": self._seen}, schema={"id": pl.UInt64})
        return set(ids.filter(_in_ranges(pl.col("id"), ranges))["id"].to_list())

    # pyevtx-rs ---------------------------------------------------------------

    def _iter_rust(self, tracker: _ProgressMap) -> Iterator[pl.DataFrame]:
        settings = self.settings
        if _evtx_scan is not None and settings.native_rows:  # filters: polars, on its rows
            yield from self._iter_scanned(tracker)
            return
        prefilter = Prefilter.build(settings.filter)
        report = self.report
        framing = self._framing("rust")
        batch = Batch()
        seen_any = False
        records = self._parser.records_json()
        rejected = _Rejected()
        count = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except Exception as exc:
                    if not seen_any and not len(batch):
                        raise _RustFailed(f"pyevtx-rs could not iterate the file: {exc}") from exc
                    report.issues.append(ReadIssue(f"pyevtx-rs stopped: {exc}"))
                    break
                header_id = record["event_record_id"]
                data = record["data"]
                count += 1
                if count & 255 == 0:  # cheap: the chunk map is walked forward only
                    tracker.at_record(header_id)
                if prefilter is not None and prefilter.rejects(data):
                    rejected.add(header_id, data, self._seen)
                    continue
                event = self._decoded(header_id, data)
                if event is None:
                    continue
                add_system(batch, event.System, header_id)
                batch.payloads.append((event.EventData, event.UserData, event.ProcessingErrorData))
                if len(batch) >= settings.batch_size:
                    self._absorb(caught)
                    seen_any = True
                    yield to_frame(batch, self._seen, framing)
                    batch = Batch()
            self._absorb(caught)
        rejected.into(report)
        if len(batch) or not seen_any:
            yield to_frame(batch, self._seen, framing)

    def _framing(self, engine: Engine) -> Framing:
        payload = rust_payload if engine == "rust" else python_payload
        keep = _filter_expr(self.settings)
        return Framing(engine, payload, keep, self.provenance, self.report)

    def _decoded(self, header_id: int, data: str) -> Event | None:
        """One pyevtx-rs record's JSON, typed; kept as decoded (with an issue) when the typed
        decode refuses it, None (counted unread) when nothing decodes it."""
        try:
            return DOC_DECODER.decode(data).Event
        except msgspec.DecodeError as exc:
            loose = lenient_event(data)
            if loose is None:
                self._fail(ReadIssue(f"record not understood: {exc}", record_id=header_id))
                return None
            event, notes = loose
            said = "; ".join(notes) or "raw control characters escaped"
            self.report.issues.append(
                ReadIssue(f"record kept as decoded ({exc}): {said}", record_id=header_id)
            )
            return event

    def _iter_scanned(self, tracker: _ProgressMap) -> Iterator[pl.DataFrame]:
        """pyevtx-rs records through the compiled scanner: rows with no Python object per
        record; the few records it hands back are finished by the reference code."""
        settings, report = self.settings, self.report
        framing = self._framing("rust")
        records = self._parser.records_json()
        seen_any = False
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            while True:
                scanned = _evtx_scan.scan(records, settings.batch_size, tracker.at_record)
                error = scanned.error
                if error is not None and not seen_any and not scanned.rows:
                    raise _RustFailed(f"pyevtx-rs could not iterate the file: {error}") from error
                if scanned.rows or not seen_any:
                    raw, pending = self._scanned_rows(scanned)
                    self._absorb(caught)
                    seen_any = True
                    yield rows_frame(raw, pending, framing)
                if error is not None:
                    report.issues.append(ReadIssue(f"pyevtx-rs stopped: {error}"))
                if scanned.exhausted:
                    break
            self._absorb(caught)

    def _scanned_rows(self, scanned: Any) -> tuple[pl.DataFrame, dict[int, tuple[Any, int]]]:
        """A scanned batch as :func:`rows_frame` takes it. The records the scanner handed
        back are decoded here: whole rows where it left the record to Python, payloads
        where it left only the payload; a record nothing decodes is dropped (counted)."""
        raw = pl.DataFrame(scanned)
        fallback = scanned.fallback
        if not fallback:  # no row index needed: nothing is pending
            self._seen.extend(raw["header_record_id"].to_list())
            return raw, {}
        raw = raw.with_columns(ROW_INDEX)
        pending: dict[int, tuple[Any, int]] = {}
        redone, redone_rows, dropped = Batch(), [], []
        for row, kind, header_id, data in fallback:
            event = self._decoded(header_id, data)
            if event is None or kind == "record":
                dropped.append(row)
            if event is None:
                continue
            sections = (event.EventData, event.UserData, event.ProcessingErrorData)
            pending[row] = (sections, header_id)
            if kind == "record":
                add_system(redone, event.System, header_id)
                redone.payloads.append(sections)
                redone_rows.append(row)
        kept = raw.filter(~pl.col("_row").is_in(pl.Series(dropped, dtype=pl.UInt32).implode()))
        self._seen.extend(kept["header_record_id"].to_list())
        if not redone_rows:
            return kept, pending
        self._seen.extend(redone.header_ids())
        again = raw_frame(redone.columns).with_columns(
            pl.lit(None, pl.String).alias("data"), pl.Series("_row", redone_rows, pl.UInt32)
        )
        return pl.concat([kept, again]).sort("_row"), pending

    def _absorb(self, caught: list[warnings.WarningMessage]) -> None:
        """pyevtx-rs RuntimeWarnings -> counted issues (chunks the scan knows are not recounted)."""
        for w in caught:
            text = str(w.message)
            chunk = _number_after(text, "chunk number ")
            record_id = _number_after(text, "record number ")
            if record_id is not None:
                self._fail(ReadIssue(text, chunk=self._chunk_of(record_id), record_id=record_id))
            elif chunk is not None and chunk in self._skipped_chunks | self._for_python:
                continue  # counted from the layout, or read by python-evtx
            elif chunk is not None:
                self.report.chunks_skipped += 1
                self.report.issues.append(ReadIssue(text, chunk=chunk))
                self._skipped_chunks.add(chunk)
            else:  # e.g. a bad record header magic: a record lost without its id
                self._fail(ReadIssue(text))
        caught.clear()

    def _chunk_of(self, record_id: int) -> int | None:
        for c in self.layout.chunks:
            if record_id in c.record_ids:
                return c.index
        return None

    # python-evtx -------------------------------------------------------------

    def _iter_python(self, tracker: _ProgressMap) -> Iterator[pl.DataFrame]:
        from parsers.evtx_python import iter_records

        settings = self.settings
        framing = self._framing("python")
        batch = Batch()
        seen_any = False
        for item in iter_records(self.path, self.layout):
            if isinstance(item, ReadIssue):
                self._fail(item)
                continue
            system = self._python_system(item)
            if system is None:
                continue
            add_system(batch, system, item.header_id)
            batch.payloads.append(item.sections)
            tracker.at_record(item.header_id)
            if len(batch) >= settings.batch_size:
                seen_any = True
                yield to_frame(batch, self._seen, framing)
                batch = Batch()
        if len(batch) or not seen_any:
            yield to_frame(batch, self._seen, framing)

    def _python_system(self, item: PyRecord) -> System | None:
        fitted = fit_system(item.system)
        if fitted is None:
            self._fail(
                ReadIssue(
                    "record System not understood", chunk=item.chunk, record_id=item.header_id
                )
            )
            return None
        system, notes = fitted
        if notes:
            self.report.issues.append(
                ReadIssue(f"record kept as decoded: {'; '.join(notes)}", record_id=item.header_id)
            )
        return system


@dataclass
class _Rejected:
    """Records the prefilter turned away undecoded: still counted, and in first/last time."""

    count: int = 0
    lo: str | None = None
    hi: str | None = None

    def add(self, header_id: int, data: str, seen: array[int]) -> None:
        self.count += 1
        seen.append(header_id)
        moment = system_time(data)
        if moment is not None:
            if self.lo is None or moment < self.lo:
                self.lo = moment
            if self.hi is None or moment > self.hi:
                self.hi = moment

    def into(self, report: ReadReport) -> None:
        report.records += self.count
        if self.lo is not None:
            lo = parse_time(self.lo)
            report.first_ts = lo if report.first_ts is None else min(report.first_ts, lo)
        if self.hi is not None:
            hi = parse_time(self.hi)
            report.last_ts = hi if report.last_ts is None else max(report.last_ts, hi)


class _RustFailed(Exception):
    """pyevtx-rs failed before producing anything: the caller may fall back."""


def _number_after(text: str, marker: str) -> int | None:
    at = text.find(marker)
    if at < 0:
        return None
    digits = ""
    for ch in text[at + len(marker) :]:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else None


class _ChunkView(io.RawIOBase):
    """An .evtx file seen as its header and the chunk slots ``slots`` only (all when
    None): what pyevtx-rs reads for one part of a file several readers share.
    pyevtx-rs reads chunks until the end of what it is given, whatever the header's
    chunk count. ``header``: the 4096 bytes to show in place of the file's own (a
    header rebuilt for chunks whose file header lost its signature). ``blanked``: chunk
    slots shown as zero bytes, which pyevtx-rs passes over (chunks whose links loop)."""

    def __init__(
        self,
        path: Path,
        slots: range | None,
        header: bytes | None = None,
        blanked: frozenset[int] = frozenset(),
    ) -> None:
        super().__init__()
        self._file = path.open("rb")
        self._header = header
        self._blanked = blanked
        size = path.stat().st_size
        slots = slots if slots is not None else range(0, size // CHUNK_SIZE + 1)
        self._first = FILE_HEADER_SIZE + slots.start * CHUNK_SIZE
        self._size = FILE_HEADER_SIZE + max(
            0, min(size, FILE_HEADER_SIZE + slots.stop * CHUNK_SIZE) - self._first
        )
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._size}[whence]
        self._at = max(0, base + offset)
        return self._at

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._at)
        if want <= 0:
            return 0
        if self._at < FILE_HEADER_SIZE:
            want = min(want, FILE_HEADER_SIZE - self._at)
            if self._header is not None:
                data = self._header[self._at : self._at + want]
            else:
                self._file.seek(self._at)
                data = self._file.read(want)
        else:
            at = self._first + self._at - FILE_HEADER_SIZE
            self._file.seek(at)
            data = self._blank(at, self._file.read(want))
        buffer[: len(data)] = data
        self._at += len(data)
        return len(data)

    def _blank(self, at: int, data: bytes) -> bytes:
        """``data`` read at file offset ``at``, with the blanked slots' bytes zeroed."""
        if not self._blanked:
            return data
        out = bytearray(data)
        for slot in self._blanked:
            start = FILE_HEADER_SIZE + slot * CHUNK_SIZE
            lo, hi = max(start, at), min(start + CHUNK_SIZE, at + len(out))
            if lo < hi:
                out[lo - at : hi - at] = bytes(hi - lo)
        return bytes(out)

    def close(self) -> None:
        self._file.close()
        super().close()


def _undecodable(path: Path) -> bool:
    """Whether ``path`` holds bytes that are not UTF-8 (a name from the customer's disk)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _extent(size: int, slots: range | None) -> tuple[int, int]:
    """The bytes a read covers, for progress: all of them, or a part's share (the
    first part also counts the header, the last whatever follows its slots)."""
    if slots is None:
        return 0, size
    start = 0 if slots.start == 0 else FILE_HEADER_SIZE + slots.start * CHUNK_SIZE
    end = FILE_HEADER_SIZE + slots.stop * CHUNK_SIZE
    return min(start, size), (size if end >= size else end)


def split_slots(path: Path, part_bytes: int) -> list[range] | None:
    """Chunk slot ranges of about ``part_bytes`` that separate readers can read and still
    give, together, exactly what one reader gives; None when the file is too small to
    cut, or not plain enough: every slot must hold a complete chunk (but for slots after
    the last chunk, which the last part's reader checks as a whole read would), and the
    chunks' record ids must run unbroken, without a hole or a chunk repeating another,
    so that no count of missing or repeated records spans two parts."""
    try:
        slots = declared_ids(path)
    except (OSError, ValueError):
        return None
    while slots and slots[-1] is None:
        slots.pop()
    count = (path.stat().st_size - FILE_HEADER_SIZE + CHUNK_SIZE - 1) // CHUNK_SIZE
    parts = count * CHUNK_SIZE // part_bytes
    if parts < 2 or not slots or any(ids is None for ids in slots):
        return None
    runs = sorted((ids.start, ids.stop) for ids in slots if ids)
    if any(stop != start for (_, stop), (start, _) in itertools.pairwise(runs)):
        return None
    cuts = [count * i // parts for i in range(parts + 1)]
    return [range(a, b) for a, b in itertools.pairwise(cuts)]


def read_evtx(
    path: Path,
    settings: ReadSettings,
    provenance: Provenance,
    progress: Progress | None = None,
    slots: range | None = None,
) -> EvtxRead:
    """Open one .evtx file for reading; iterate the result for frames.

    ``slots`` reads only those chunk slots (a part from :func:`split_slots`); the
    report then counts that part alone.

    Raises UnreadableFileError (naming the file) when the bytes are not EVTX
    (no ``ElfFile`` signature, nor a first chunk's ``ElfChnk`` behind a damaged one;
    the extension is never trusted) or when no engine can read the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(EVTX_HEAD_SIZE)
    except OSError as exc:
        raise UnreadableFileError(str(path), f"cannot open: {exc}", provenance.member) from exc
    if not is_evtx(head):
        reason = "empty file (0 bytes)" if not head else "not an EVTX file (no ElfFile signature)"
        raise UnreadableFileError(str(path), reason, provenance.member)
    try:
        layout = scan_layout(path, slots)
    except ValueError as exc:
        raise UnreadableFileError(str(path), str(exc), provenance.member) from exc
    return EvtxRead(path, settings, provenance, layout, progress, slots)


__all__ = [
    "EvtxRead",
    "Progress",
    "Provenance",
    "ReadSettings",
    "read_evtx",
    "split_slots",
]
