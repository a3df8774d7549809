"""discover -> read (process pool) -> store, with progress counted in bytes.

Problem: a bundle is dozens of logs from several machines, sometimes one
1 GB Security.evtx. Reading is CPU-bound (one core per file), the parent must
not become the bottleneck, memory must stay bounded, and the user must see
progress even while one huge file is read. Whatever cannot be read is recorded
with its reason; the rest is kept.

How: discover lists the files (archive members land in a scratch folder inside
the store). Each file is one task; consecutive small files are read as one group
(SMALL_FILE_BYTES). A worker process reads a group with the reader of each file's
kind and writes its batches as staged Parquet parts itself, returning only paths
and counts. With several processes, an .evtx file of twice PART_BYTES
or more whose layout allows it (parsers.evtx_reader.split_slots) is read as
several tasks, one per range of chunks, so that one big Security.evtx does not
hold the run on one core; its parts' rows are kept only when every part read
cleanly, else the file is read again whole: the store never depends on the split.
The parent commits staged parts in input order (so the result does not depend on
``jobs`` or on which worker finished first), dropping events the store already
holds, then appends the files table. Bytes read flow back through a queue from
the reader's progress callback.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import polars as pl

import pipeline
from parsers.evtx_layout import CHUNK_SIZE
from parsers.evtx_reader import Progress, Provenance, ReadSettings, read_evtx, split_slots
from parsers.model import FILE_SCHEMA, LmtraceError, ReadReport, UnreadableFileError
from parsers.pfirewall import PfirewallSettings, read_pfirewall
from pipeline.case import check_outside
from pipeline.discover import (
    READABLE_KINDS,
    Discovery,
    InputError,
    Limits,
    Skipped,
    Source,
    discover,
    display_path,
    input_bytes,
)
from pipeline.lifeline import reading_process_setup
from pipeline.store import (
    SCRATCH_PREFIX,
    EventCommitter,
    StagedPart,
    Staging,
    append_files,
    init_store,
    locked,
    mark_complete,
    mark_incomplete,
    removed_if_unused,
    stage_events,
    stored_sha256,
    sweep_scratch,
)
from pipeline.writes import WriteError, writing

Status = Literal["read", "partial", "failed", "repeated", "skipped", "refused"]
"""What became of a file: read (whole or in part), failed, or one of
pipeline.discover.SKIP_STATUS for a file not read."""

STATUSES: tuple[Status, ...] = get_args(Status)

_PROGRESS_FLUSH = 1 << 20  # a worker reports progress at most once per MiB read

PART_BYTES = 32 << 20
"""With several reading processes, .evtx files of twice this size or more are read in
parts of about this size (each part costs a reader its set-up, some milliseconds)."""

SMALL_FILE_BYTES = 4 << 20
"""Files smaller than this are read in groups (up to PART_BYTES of them), one after
another by one reader whose batches are staged together (see ``_Stager``). A real
bundle is mostly small logs (the public corpus: 247 of its 260 .evtx files are under
1.1 MB), and each one read alone cost about 9 ms of set-up, staging and commit: more
than reading it."""

IN_PROCESS_BYTES = 128 << 20
"""With ``jobs=None``, inputs smaller than this are read in the calling process.

A reading process is a fresh interpreter that imports polars and the readers before
it reads a byte, about 0.5 s here; one process reads about 85 MB of .evtx a second
(with the compiled row scanner). Measured on 2 cores at load 1-1.5, whole `lmtrace
ingest` runs: 84 MB took 1.35 s in-process and 1.48 s with two processes, 158 MB
2.3 s and 2.0 s, 315 MB 3.9 s and 3.1 s; two processes pay for their start from
about 100 MB, so below 128 MiB the default is never slower than ``--jobs 1``.
Measured with tests/benchmarks/bench_ingest.py and /usr/bin/time."""


class IngestProgress(Protocol):
    """Where ingest reports progress: one phase at a time, in bytes."""

    def phase(self, name: str, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file found in the inputs."""

    source_path: str
    member: str | None
    kind: str
    status: Status
    records: int = 0
    records_skipped: int = 0
    events_stored: int = 0
    message: str = ""
    altered: int = 0  # chunks read in full that fail their checksums (parsers/evtx_integrity.py)

    @property
    def where(self) -> str:
        return display_path(self.source_path, self.member)

    @property
    def problem(self) -> bool:
        """Partly read, unreadable, or refused: a reason the run is partial."""
        return self.status in ("partial", "failed", "refused")


@dataclass(frozen=True)
class IngestSummary:
    """The counts a user needs to trust the store, and the exit code they imply."""

    store: Path
    outcomes: tuple[FileOutcome, ...]
    records: int
    records_kept: int
    records_skipped: int
    events_stored: int
    events_duplicate: int
    seconds: float

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def files(self) -> dict[Status, int]:
        """Files by status, in the order the summary line says them."""
        return {s: self.count(s) for s in STATUSES}

    @property
    def problems(self) -> tuple[FileOutcome, ...]:
        """Files partly read, unreadable, or refused: the reasons the run is partial."""
        return tuple(o for o in self.outcomes if o.problem)

    @property
    def exit_code(self) -> int:
        """0 when everything found was read; 1 when something was not (the rest is kept)."""
        return 1 if self.problems else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": str(self.store),
            "files": self.files,
            "records": self.records,
            "records_kept": self.records_kept,
            "records_skipped": self.records_skipped,
            "events_stored": self.events_stored,
            "events_duplicate": self.events_duplicate,
            "seconds": round(self.seconds, 3),
            "outcomes": [asdict(o) for o in self.outcomes],
        }


# ----- one file, in a worker process (or in-process with jobs=1)


@dataclass(frozen=True)
class _Task:
    index: int
    source: Source
    settings: ReadSettings
    firewall: PfirewallSettings
    staging: Path
    slots: range | None = None  # a part of an .evtx file: its chunk slots


@dataclass
class _Result:
    index: int
    report: ReadReport | None = None
    failure: str | None = None
    parts: list[StagedPart] = field(default_factory=list)
    rejected: int = 0
    repeats: int = 0
    channels: set[str] = field(default_factory=set)
    computers: set[str] = field(default_factory=set)
    seconds: float = 0.0
    fatal: tuple[str, str, int | None] | None = None  # (path, cause, errno): the store's disk


def _open_evtx(task: _Task, progress: Progress | None) -> tuple[Iterable[pl.DataFrame], ReadReport]:
    source = task.source
    provenance = Provenance(source.source_path, source.member, source.sha256)
    read = read_evtx(source.path, task.settings, provenance, progress, task.slots)
    return read, read.report  # the report is filled in as the frames are drawn


def _open_pfirewall(
    task: _Task, progress: Progress | None
) -> tuple[Iterable[pl.DataFrame], ReadReport]:
    """A firewall text log is read whole (Windows caps it at 32 MiB); the EVTX reader
    applies the filters while decoding, so here they are applied to the rows."""
    source = task.source
    frame, report = read_pfirewall(
        source.path, task.firewall, source.source_path, source.member, source.sha256
    )
    kept = frame.filter(task.settings.filter.expr())
    report.records_kept = kept.height
    return [kept], report


_READERS: dict[
    str, Callable[[_Task, Progress | None], tuple[Iterable[pl.DataFrame], ReadReport]]
] = {
    "evtx": _open_evtx,
    "pfirewall": _open_pfirewall,
}
"""The reader of each kind discover can recognize (pipeline.discover.RECOGNIZERS)."""


def _groups(tasks: Sequence[_Task]) -> list[list[_Task]]:
    """The units of reading: runs of consecutive small files (see SMALL_FILE_BYTES) of up
    to PART_BYTES together, and every other task alone; in input order."""
    groups: list[list[_Task]] = []
    run: list[_Task] = []
    run_bytes = 0
    for task in tasks:
        small = task.slots is None and task.source.size < SMALL_FILE_BYTES
        if run and (not small or run_bytes + task.source.size > PART_BYTES):
            groups.append(run)
            run, run_bytes = [], 0
        if small:
            run.append(task)
            run_bytes += task.source.size
        else:
            groups.append([task])
    if run:
        groups.append(run)
    return groups


def _read_group(group: Sequence[_Task], progress: Mapping[int, Progress]) -> list[_Result]:
    """Read a group's files one after another and stage their batches; never raises for
    bad bytes. ``progress`` holds each file's byte counter, by task index."""
    results = {task.index: _Result(task.index) for task in group}
    with _Stager(group[0].staging, results, group[0].settings.batch_size) as stager:
        _read_files(group, results, stager, progress)
    return list(results.values())


def _read_files(
    group: Sequence[_Task],
    results: Mapping[int, _Result],
    stager: _Stager,
    progress: Mapping[int, Progress],
) -> None:
    """Read a group's files one after another into their ``results``, their batches
    handed to ``stager``; a failed write (the store's disk) ends the group."""
    for task in group:
        _read_task(task, results[task.index], stager, progress[task.index])
        if stager.failed:
            return


def _read_in_process(
    tasks: Sequence[_Task], progress: IngestProgress | None
) -> Iterator[tuple[_Task, _Result]]:
    """Read every group in this process, in order, through one stager.

    A group's results are yielded once the next group is read, when the stager has
    written the group's last part meanwhile: a stager per group waited for that write
    at each group's end (0.12 s of the 1.7 s the 150 MB benchmark bundle took). On
    Ctrl-C the group read before is still yielded first, so that it is stored, as
    when each group was written before the next was read.
    """
    if not tasks:
        return
    results: dict[int, _Result] = {}
    done: list[tuple[_Task, _Counted]] = []  # read, their last part perhaps in flight

    def finished() -> Iterator[tuple[_Task, _Result]]:
        for task, counted in done:
            counted.finish(task.source.size)
            yield task, results.pop(task.index)

    with _Stager(tasks[0].staging, results, tasks[0].settings.batch_size) as stager:
        for group in _groups(tasks):
            counted = {task.index: _Counted(progress) for task in group}
            results.update((task.index, _Result(task.index)) for task in group)
            try:
                _read_files(group, results, stager, counted)
                stager.flush()  # the parts before this group's last one are written now
            except KeyboardInterrupt:
                stager.collect()  # the write in flight, perhaps the group before's last
                yield from finished()
                raise
            yield from finished()
            done = [(task, counted[task.index]) for task in group]
            if stager.failed:  # the disk of the store: the results say so, reading stops
                break
    yield from finished()


def _read_task(task: _Task, result: _Result, stager: _Stager, progress: Progress | None) -> None:
    """Read one file into ``result``, its batches handed to ``stager``."""
    started = time.perf_counter()
    try:
        frames, report = _READERS[task.source.kind](task, progress)
        for frame in frames:
            if not stager.stage(task.index, frame):
                break
        result.report = report
    except UnreadableFileError as e:
        result.failure = e.reason
    except Exception as e:  # a reader bug on hostile bytes must not end the whole ingest
        result.failure = f"unexpected reader error (please report): {type(e).__name__}: {e}"
    result.seconds = time.perf_counter() - started


class _Stager:
    """Stages batches on a thread of its own while the reader builds the next.

    Writing a batch (conform, drop repeats, Parquet) is polars work that runs without
    the GIL, so it overlaps the reader's Python and pyevtx-rs work on a second core: on
    the 150 MB benchmark bundle it took a fifth of a reading process's time. Batches
    are gathered, across the files of a group, up to ``rows`` rows (a full read batch)
    and staged as one part: a part per small log cost more than reading it (260 logs
    of the public corpus: 2.1 ms each, against 0.1 s for all of them as one part).
    One write is in flight at a time, so memory grows by two batches at most. Parts
    keep the order of the batches, and a write error stops the group as it did without
    the thread: ``fatal`` on each result, no further batch staged.
    """

    def __init__(self, folder: Path, results: dict[int, _Result], rows: int) -> None:
        self._folder = folder
        self._results = results
        self._rows = rows
        self._gathered: list[tuple[int, pl.DataFrame]] = []
        self._gathered_rows = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="lmtrace-stage")
        self._pending: Future[tuple[Staging, list[tuple[Any, ...]]]] | None = None
        self._pending_owners: set[int] = set()
        self.failed = False

    def __enter__(self) -> _Stager:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None:
                self.flush()
            self.collect()
        finally:
            self._pool.shutdown()

    def stage(self, owner: int, frame: pl.DataFrame) -> bool:
        """Stage ``frame`` of ``owner`` after the batches before it; False once a write
        has failed."""
        if self.failed:
            return False
        if self._gathered_rows + frame.height > self._rows and not self.flush():
            return False  # what was gathered first: a part holds one batch's rows at most
        self._gathered.append((owner, frame))
        self._gathered_rows += frame.height
        return self._gathered_rows < self._rows or self.flush()

    def flush(self) -> bool:
        """Write what is gathered, after the write in flight (this waits for that one);
        False once a write has failed."""
        if not self.collect():
            return False
        if self._gathered_rows:
            batches, self._gathered, self._gathered_rows = self._gathered, [], 0
            self._pending_owners = {owner for owner, _ in batches}
            self._pending = self._pool.submit(self._write, batches)
        return True

    def _write(
        self, batches: list[tuple[int, pl.DataFrame]]
    ) -> tuple[Staging, list[tuple[Any, ...]]]:
        names = (
            pl.concat(
                [frame.select("channel", "computer", owner=pl.lit(o)) for o, frame in batches]
            )
            .group_by("owner")
            .agg(
                pl.col("channel").drop_nulls().unique(),
                pl.col("computer").drop_nulls().unique(),
            )
            .rows()
        )
        return stage_events(batches, self._folder), names

    def collect(self) -> bool:
        """The write in flight, once done, into the results of its owners."""
        if self._pending is None:
            return not self.failed
        results = self._results
        try:
            # let go of the write only once it is done: a Ctrl-C in this wait must leave it
            # for the interrupted reader's collect(), or its rows are lost to its owners
            staging, names = self._pending.result()
            self._pending = None
        except WriteError as e:  # the store's disk, not the file: the whole ingest stops
            self._pending = None
            for owner in self._pending_owners:
                results[owner].fatal = (e.path, e.cause, e.errno)
            self.failed = True
            return False
        for owner, rejected in staging.rejected.items():
            results[owner].rejected += rejected
        for owner, repeats in staging.repeats.items():
            results[owner].repeats += repeats
        if staging.part is not None:
            for owner, _ in staging.part.owners:
                results[owner].parts.append(staging.part)
        for owner, channels, computers in names:
            results[owner].channels.update(channels)
            results[owner].computers.update(computers)
        return True


class _QueueProgress:
    """Forwards a worker's byte counts to the parent, batched to spare the queue."""

    def __init__(self, sink: Any, index: int) -> None:
        self._sink = sink
        self._index = index
        self._pending = 0

    def __call__(self, nbytes: int) -> None:
        self._pending += nbytes
        if self._pending >= _PROGRESS_FLUSH:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._sink.put((self._index, self._pending))
            self._pending = 0


class _ReadingProcess:
    """What a reading process is handed as it starts: the queue its progress goes to.

    A multiprocessing queue reaches a process only as the process starts (through the
    pool's initializer), so it is kept here, once per process. A manager's queue could
    be handed with each task, but the manager is a process of its own: starting it cost
    0.1 s of every ingest with reading processes.
    """

    sink: Any = None


_STARTED = (-1, 0)
"""What a reading process puts on its queue once it is up (before it reads anything)."""


def _start_reading_process(parent: int, sink: Any) -> None:
    reading_process_setup(parent)
    _ReadingProcess.sink = sink
    sink.put(_STARTED)


def _worker(group: list[_Task]) -> list[_Result]:
    sink = _ReadingProcess.sink
    progress = {task.index: _QueueProgress(sink, task.index) for task in group}
    results = _read_group(group, progress)
    for counter in progress.values():
        counter.flush()
    return results


# ----- the parent


def _file_row(source: Source, result: _Result, version: str) -> dict[str, Any]:
    report = result.report
    errors = [str(issue) for issue in report.issues] if report else [result.failure or ""]
    if result.rejected:
        errors.append(f"{result.rejected} rows did not fit the events schema and were not kept")
    return {
        "source_path": source.source_path,
        "member": source.member,
        "name_escaped": source.name_escaped,
        "size": source.size,
        "sha256": source.sha256,
        "kind": source.kind,
        "engine": report.engine if report else None,
        "fallback": report.fallback if report else None,
        "records": report.records if report else 0,
        "records_kept": report.records_kept - result.rejected if report else 0,
        "records_skipped": (report.records_skipped if report else 0) + result.rejected,
        "chunks_skipped": report.chunks_skipped if report else 0,
        "records_missing": report.records_missing if report else 0,
        "chunks_duplicated": report.chunks_duplicated if report else 0,
        "records_recovered": report.records_recovered if report else 0,
        "errors": errors,
        "altered": [str(issue) for issue in report.altered] if report else [],
        "first_ts": report.first_ts if report else None,
        "last_ts": report.last_ts if report else None,
        "channels": sorted(result.channels),
        "computers": sorted(result.computers),
        "dirty": report.dirty if report else None,
        "seconds": result.seconds,
        "lmtrace_version": version,
    }


def _skipped_row(item: Skipped, version: str) -> dict[str, Any]:
    return {
        "source_path": item.source_path,
        "member": item.member,
        "name_escaped": item.name_escaped,
        "size": item.size,
        "sha256": item.sha256,
        "kind": item.kind,
        "same_as": item.same_as,
        "records": None,
        "errors": [item.reason] if item.problem else [],
        "channels": [],
        "computers": [],
        "lmtrace_version": version,
    }


def _outcome(source: Source, result: _Result, stored: int) -> FileOutcome:
    report = result.report
    if report is None:
        return FileOutcome(
            source.source_path, source.member, source.kind, "failed", message=result.failure or ""
        )
    partial = report.partial or result.rejected > 0
    first_issue = str(report.issues[0]) if report.issues else ""
    return FileOutcome(
        source.source_path,
        source.member,
        source.kind,
        "partial" if partial else "read",
        records=report.records,
        records_skipped=report.records_skipped + result.rejected,
        events_stored=stored,
        message=first_issue,
        altered=len(report.altered),
    )


def ingest(
    inputs: Sequence[Path],
    store: Path,
    settings: ReadSettings | None = None,
    jobs: int | None = 1,
    progress: IngestProgress | None = None,
    limits: Limits | None = None,
    firewall: PfirewallSettings | None = None,
    password: str | None = None,
) -> IngestSummary:
    """Read every log under ``inputs`` into the store at ``store`` (created if new).

    ``settings`` carries the engine and the early filters (they must match the
    filters the store was built with); ``jobs`` is the number of reading
    processes, None to choose it from the input's size (:func:`reading_processes`);
    ``firewall`` the time zone (and computer name) of pfirewall.log
    files, which their lines do not carry; ``password`` that of encrypted zip and 7z
    archives (never shown or stored). Raises InputError / StoreError (one
    line each) before reading anything when an input is missing or ``store``
    is unusable.
    """
    _not_while_a_reader_starts()
    started = time.perf_counter()
    settings = settings or ReadSettings()
    firewall = firewall or PfirewallSettings()
    filters = settings.filter
    inputs = [Path(p) for p in inputs]
    for path in inputs:  # fail on a typo before creating anything
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    store = Path(store)
    check_outside(store, inputs)  # a store is never written into the customer's bundle
    with removed_if_unused(store), writing(store):
        store = init_store(store, filters)
        with locked(store):
            sweep_scratch(store)  # what a killed ingest left
            work = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=store))
            marks = _Marks(store, [str(p.absolute()) for p in inputs])
            try:
                summary = _ingest_locked(
                    inputs, store, work, settings, firewall, jobs, progress, limits, started, marks,
                    password,
                )  # fmt: skip
            except KeyboardInterrupt:
                marks.failed("an ingest was interrupted (Ctrl-C)")
                raise
            except BaseException as exc:
                marks.failed(f"an ingest failed: {exc}")
                raise
            finally:
                shutil.rmtree(work, ignore_errors=True)
            mark_complete(store, marks.inputs)
            return summary


@dataclass
class _Marks:
    """Marks the store incomplete before this ingest first changes it.

    An ingest that fails before changing anything leaves the store as it was,
    mark included; one that dies after its first change leaves the mark, which
    names its inputs, until an ingest of the same inputs finishes.
    """

    store: Path
    inputs: list[str]
    marked: bool = False

    def changing(self) -> None:
        if not self.marked:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            mark_incomplete(
                self.store,
                self.inputs,
                f"an ingest started at {started} UTC did not finish (it failed, was "
                "killed, or the machine stopped)",
            )
            self.marked = True

    def failed(self, reason: str) -> None:
        if self.marked:
            with suppress(LmtraceError, OSError):  # the first mark stands
                mark_incomplete(self.store, self.inputs, reason)


class ScriptGuardError(LmtraceError):
    """ingest() was called by a script that its own reading processes import again."""


def _not_while_a_reader_starts() -> None:
    """Reading processes are spawned, so each imports the calling script as
    ``__mp_main__``; a script that calls ingest() at its top level without an
    ``if __name__ == "__main__":`` guard would start an ingest in every reader,
    which then fails on the store's lock with a message about the wrong thing.
    ``_inheriting`` (true only while a spawned process starts) is the flag
    multiprocessing itself checks for this mistake."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise ScriptGuardError(
            "ingest() ran again inside a reading process that was starting: call it under "
            '`if __name__ == "__main__":` in your script (reading processes import it)'
        )


def _check_something_to_read(inputs: list[Path], found: Discovery) -> None:
    """Inputs holding no log at all are a wrong path, not an empty case: say so (exit 2)
    rather than report zero events, or a verdict built on nothing. Logs already in the
    store count as logs: ingesting them again is a no-op, not a mistake."""
    if found.sources or any(s.kind in READABLE_KINDS for s in found.skipped):
        return
    names = ", ".join(str(p) for p in inputs[:3]) + (" ..." if len(inputs) > 3 else "")
    if not found.skipped:
        raise InputError(f"{names}: no readable .evtx or pfirewall.log: the input holds no files")
    # An archive whose members are listed is said as its members, not as one more file
    # (a tar.gz cut short by a refused member has a line of its own).
    opened = {s.source_path for s in found.skipped if s.member is not None}
    files = [s for s in found.skipped if s.member is not None or s.source_path not in opened]
    first = files[0]
    where = f"{display_path(first.source_path, first.member)}: {first.reason}"
    found_words = (
        f"in the one file found ({where})"
        if len(files) == 1
        else f"among {len(files)} files (first: {where})"
    )
    raise InputError(f"{names}: no readable .evtx or pfirewall.log {found_words}")


def _ingest_locked(
    inputs: list[Path],
    store: Path,
    work: Path,
    settings: ReadSettings,
    firewall: PfirewallSettings,
    jobs: int | None,
    progress: IngestProgress | None,
    limits: Limits | None,
    started: float,
    marks: _Marks,
    password: str | None = None,
) -> IngestSummary:
    version = pipeline.__version__  # read here: reading processes import this module too
    if progress is not None:
        progress.phase("discovering", input_bytes(inputs, exclude=store))
    found = discover(
        inputs,
        work / "extract",
        limits,
        known=stored_sha256(store),
        exclude=store,
        progress=progress.advance if progress else None,
        password=password,
    )
    _check_something_to_read(inputs, found)
    tasks = [
        _Task(i, source, settings, firewall, work / "staged" / f"{i:06d}")
        for i, source in enumerate(found.sources)
    ]
    if progress is not None:
        progress.phase("reading", sum(s.size for s in found.sources))
    committer = EventCommitter(store)
    shares: dict[Path, dict[int, tuple[int, int]]] = {}  # part -> owner -> (stored, repeated)
    rows: list[dict[str, Any]] = []
    outcomes: list[FileOutcome] = []
    totals = {"records": 0, "kept": 0, "skipped": 0, "stored": 0, "duplicate": 0}

    def commit(task: _Task, result: _Result) -> None:
        if result.fatal is not None:
            raise WriteError(*result.fatal)
        stored = duplicate = 0
        if result.parts:
            marks.changing()
        for part in result.parts:  # a part small files share is committed once, for all
            share = shares.get(part.path)
            if share is None:
                share = shares[part.path] = committer.commit(part)
            added, repeated = share.pop(task.index)
            if not share:
                del shares[part.path]
            stored += added
            duplicate += repeated
        if task.source.extracted:
            task.source.path.unlink(missing_ok=True)  # free scratch space early
        row = _file_row(task.source, result, version)
        rows.append(row)
        outcomes.append(_outcome(task.source, result, stored))
        totals["records"] += row["records"]
        totals["kept"] += row["records_kept"]
        totals["skipped"] += row["records_skipped"]
        totals["stored"] += stored
        totals["duplicate"] += duplicate + result.repeats

    try:
        # closed at once when commit raises (a full disk): its reading processes stop now,
        # not when the error's traceback is freed, after the scratch they write to is gone
        with closing(_run(tasks, reading_processes(tasks, jobs), progress)) as results:
            for task, result in results:
                commit(task, result)
    except KeyboardInterrupt:
        # Files whose events are committed keep their rows, so that the store says
        # what it holds and the same command later reads only the rest.
        if rows:
            marks.changing()
            append_files(store, pl.DataFrame(rows, schema=FILE_SCHEMA))
        raise
    for item in found.skipped:
        outcomes.append(
            FileOutcome(item.source_path, item.member, item.kind, item.status, message=item.reason)
        )
        # every file seen gets its row; one already listed (the same name and bytes, as in
        # a second ingest of the same input) is not listed twice (append_files)
        rows.append(_skipped_row(item, version))
    if rows:
        marks.changing()
        append_files(store, pl.DataFrame(rows, schema=FILE_SCHEMA))
    return IngestSummary(
        store=store,
        outcomes=tuple(outcomes),
        records=totals["records"],
        records_kept=totals["kept"],
        records_skipped=totals["skipped"],
        events_stored=totals["stored"],
        events_duplicate=totals["duplicate"],
        seconds=time.perf_counter() - started,
    )


def reading_processes(tasks: Sequence[_Task], jobs: int | None) -> int:
    """How many processes read ``tasks``: ``jobs`` when given; else none besides this
    one for inputs under IN_PROCESS_BYTES, and one per CPU above."""
    if jobs is not None:
        return jobs
    if sum(t.source.size for t in tasks) < IN_PROCESS_BYTES:
        return 1
    return os.cpu_count() or 1


def _parts(task: _Task, jobs: int) -> list[_Task]:
    """The tasks that read ``task``'s file: itself, or one per part of a big .evtx file."""
    source = task.source
    if jobs <= 1 or source.kind != "evtx" or source.size < 2 * PART_BYTES:
        return [task]
    plan = split_slots(source.path, PART_BYTES)
    if plan is None:
        return [task]
    return [
        replace(task, slots=slots, staging=task.staging.with_name(f"{task.staging.name}-{i}"))
        for i, slots in enumerate(plan)
    ]


def _joined(index: int, parts: list[_Result]) -> _Result | None:
    """One file's result from its parts' (in file order), as one whole read gives it; None
    when a part was not read cleanly, so that the file is read again whole and says what
    went wrong as a whole read says it."""
    if any(p.fatal is not None for p in parts):
        return next(p for p in parts if p.fatal is not None)  # the store's disk: stop
    reports = [p.report for p in parts]
    if any(
        r is None or r.partial or r.fallback or r.records_recovered or p.rejected
        for p, r in zip(parts, reports, strict=True)
    ):
        return None
    done = [r for r in reports if r is not None]
    firsts = [r.first_ts for r in done if r.first_ts is not None]
    lasts = [r.last_ts for r in done if r.last_ts is not None]
    report = ReadReport(
        engine=done[0].engine,
        records=sum(r.records for r in done),
        records_kept=sum(r.records_kept for r in done),
        dirty=done[0].dirty,
        first_ts=min(firsts, default=None),
        last_ts=max(lasts, default=None),
        altered=[issue for r in done for issue in r.altered],
    )
    return _Result(
        index,
        report=report,
        parts=[staged for p in parts for staged in p.parts],
        repeats=sum(p.repeats for p in parts),
        channels=set().union(*(p.channels for p in parts)),
        computers=set().union(*(p.computers for p in parts)),
        seconds=sum(p.seconds for p in parts),
    )


def _run(
    tasks: list[_Task], jobs: int, progress: IngestProgress | None
) -> Iterator[tuple[_Task, _Result]]:
    """Yield (task, result) in task order, reading with ``jobs`` processes."""
    work = {task.index: _parts(task, jobs) for task in tasks}
    if jobs <= 1 or sum(len(parts) for parts in work.values()) <= 1:
        yield from _read_in_process(tasks, progress)
        return
    context = multiprocessing.get_context("spawn")  # fork + polars threads can deadlock
    helpers = {child.pid for child in multiprocessing.active_children()}  # not ours to stop
    sink = context.Queue()
    pool = ProcessPoolExecutor(
        jobs,
        mp_context=context,
        initializer=_start_reading_process,
        initargs=(os.getpid(), sink),
    )
    with closing(sink):
        # Largest first, so that one big log does not start last and run alone; results
        # are still yielded (and stored) in input order.
        by_size = sorted(
            _groups([part for parts in work.values() for part in parts]),
            key=lambda group: sum(_bytes(t) for t in group),
            reverse=True,
        )
        futures: dict[Future[list[_Result]], list[_Task]] = {
            pool.submit(_worker, group): group for group in by_size
        }
        done: dict[int, _Result] = {}
        gathered: dict[int, dict[int, _Result]] = {}  # file -> first slot -> part's result
        relay = _Relay(sink, len(tasks), progress)
        next_index = 0
        pending = set(futures)
        all_read = False
        try:
            while next_index < len(tasks):
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                relay.drain()
                for future in finished:
                    group = futures.pop(future)
                    try:
                        results = future.result()
                    except BrokenProcessPool:
                        relay.drain()
                        if not relay.started:
                            raise ReadersFailedError(_READERS_FAILED) from None
                        died = "the reading process died while reading this file"
                        results = [_Result(task.index, failure=died) for task in group]
                    for task, result in zip(group, results, strict=True):
                        if task.slots is None:
                            done[task.index] = result
                            continue
                        parts = gathered.setdefault(task.index, {})
                        parts[task.slots.start] = result
                        if len(parts) < len(work[task.index]):
                            continue
                        joined = _joined(task.index, [parts[k] for k in sorted(parts)])
                        if joined is not None:
                            done[task.index] = joined
                            continue
                        for part in parts.values():  # read again whole: these rows are not kept
                            for staged in part.parts:
                                staged.path.unlink(missing_ok=True)
                        whole = [tasks[task.index]]
                        again = pool.submit(_worker, whole)
                        futures[again] = whole
                        pending.add(again)
                while next_index in done:
                    relay.drain()
                    task = tasks[next_index]
                    relay.finish(next_index, task.source.size)
                    yield task, done.pop(next_index)
                    next_index += 1
            all_read = True
        finally:
            if not all_read:
                # Stopped early (a fatal error, Ctrl-C): the reading processes stop now.
                # Left to run, each one would take up the tasks already handed to it, for
                # nobody, and print a traceback for each once its scratch is gone (seen on
                # a full disk with --jobs 2).
                for child in multiprocessing.active_children():
                    if child.pid not in helpers:
                        child.terminate()
            # The pool's manager thread must have ended before this returns: at exit,
            # Python 3.11 wakes it through a pipe without taking its lock, and if the
            # thread is closing that pipe just then the exit prints a traceback ("Bad file
            # descriptor"; 1 full-disk run in 30 under load).
            pool.shutdown(wait=True, cancel_futures=True)


def _bytes(task: _Task) -> int:
    """The bytes a task reads: its file's, or its part's."""
    if task.slots is None:
        return task.source.size
    return len(task.slots) * CHUNK_SIZE


class ReadersFailedError(LmtraceError):
    """The reading processes ended before any of them was up to read."""


_READERS_FAILED = (
    "the reading processes ended before reading anything (their error is above). A script "
    "that calls ingest() with more than one job must call it under "
    '`if __name__ == "__main__":`: reading processes import the script again'
)


class _Relay:
    """What the reading processes put on their queue: bytes read per file (passed on to
    ``progress``), and that one of them is up (``started``).

    A file's result can overtake its last byte counts (they travel on another queue), so
    :meth:`finish` tops the file up to its size, and counts that come after are dropped:
    the progress then ends at the input's size, not past it.
    """

    def __init__(self, sink: Any, files: int, progress: IngestProgress | None) -> None:
        self._sink = sink
        self._progress = progress
        self._reported: list[int | None] = [0] * files  # None: finished
        self.started = False

    def finish(self, index: int, size: int) -> None:
        reported = self._reported[index]
        self._reported[index] = None
        if self._progress is not None and reported is not None and size > reported:
            self._progress.advance(size - reported)

    def drain(self) -> None:
        while True:
            try:
                message = self._sink.get_nowait()
            except queue.Empty:
                return
            if message == _STARTED:
                self.started = True
                continue
            index, nbytes = message
            reported = self._reported[index]
            if reported is None:
                continue  # late: the file was topped up when its result came
            self._reported[index] = reported + nbytes
            if self._progress is not None:
                self._progress.advance(nbytes)


class _Counted:
    """In-process progress: forwards byte counts and tops up to the file size at the end."""

    def __init__(self, progress: IngestProgress | None) -> None:
        self._progress = progress
        self.total = 0

    def __call__(self, nbytes: int) -> None:
        self.total += nbytes
        if self._progress is not None:
            self._progress.advance(nbytes)

    def finish(self, size: int) -> None:
        if self._progress is not None and size > self.total:
            self._progress.advance(size - self.total)
