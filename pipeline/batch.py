"""``lmtrace batch``: one analysis per bundle, over local processes or a Dask cluster.

Problem: a support archive holds hundreds of customer bundles. Each must be
analysed on its own (their machines and VMs must not mix), the sweep must use
every core (or a cluster), survive being interrupted, never redo a bundle it
already analysed, and a hostile or huge bundle must fail alone.

How: each INPUT is one bundle (a folder or an archive file). Its identity is
the SHA-256 of its bytes (a folder: of its files' paths and hashes); file
hashes are cached by (path, size, mtime) so an unchanged archive is not read
again. The bundle's results go to ``OUT/bundles/<safe name>-<hash prefix>/``,
a name made of letters, digits, ``_`` and ``-`` only, so no bundle name can
point outside OUT. A folder whose ``result.json`` has the same hash, lmtrace
version and analysis settings is reused; everything else is handed to
:func:`pipeline.batch_worker.run_bundle`, in threads that each watch one child
process (``--jobs``) or as Dask tasks (``--scheduler``), largest bundle first.
The summary table (Parquet, CSV) and the overview page are written from the
result files, in input order, once every bundle is done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import os
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import polars as pl
import psutil

from parsers.model import LmtraceError
from pipeline import __version__
from pipeline.analyze import AnalyzeSettings
from pipeline.batch_worker import RESULT_FILE, WORK_FOLDER, BundleTask, run_bundle
from pipeline.csv_tables import csv_bytes
from pipeline.discover import HEAD_SIZE, InputError, kind_of
from pipeline.printable import printable
from pipeline.wording import generated_by

BUNDLES_FOLDER = "bundles"
HASH_CACHE = ".hashes.json"
LOCK_FILE = ".batch.lock"
_WAKE_S = 0.2  # how often the main thread wakes to notice a Ctrl-C

SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "bundle": pl.String(),  # the input's file or folder name, as the customer named it
    "input": pl.String(),  # the path given on the command line
    "sha256": pl.String(),  # of the bundle's bytes (a folder: of its paths and file hashes)
    "folder": pl.String(),  # the bundle's result folder, relative to OUT
    "status": pl.String(),  # ok, partial (unreadable parts, verdict on the rest), failed, skipped
    "verdict": pl.String(),  # null when failed
    "migrations": pl.Int64(),
    "affected_vms": pl.Int64(),  # VMs with an affected or likely-affected migration
    "longest_quarantine_s": pl.Float64(),
    "blocked_inbound": pl.Int64(),  # inbound packets blocked inside quarantine windows
    "files_unreadable": pl.Int64(),  # files unreadable or refused
    "records_unreadable": pl.Int64(),
    "bytes": pl.Int64(),
    "seconds": pl.Float64(),  # of the analysis that produced the result
    "peak_rss_mb": pl.Float64(),  # of the analysis process
    "error": pl.String(),  # why it failed, or the first thing unreadable
    "reused": pl.Boolean(),  # taken from an earlier run (same bytes, version, settings)
    "lmtrace_version": pl.String(),
}


class BatchError(LmtraceError):
    """The batch cannot start: a bad output folder or an unreachable scheduler."""


@dataclass(frozen=True)
class BatchSettings:
    """How to run a batch; ``analyze`` is what each bundle's analysis depends on."""

    analyze: AnalyzeSettings = field(default_factory=AnalyzeSettings)
    jobs: int = 1
    scheduler: str | None = None  # tcp://HOST:PORT of a Dask scheduler; None: local
    timeout_s: float = 1800.0
    max_memory_mb: int = 2048
    force: bool = False


class BatchProgress(Protocol):
    """Where a batch reports progress: the bytes of all bundles, then one call per bundle."""

    def start(self, total_bytes: int, bundles: int) -> None: ...

    def done(self, row: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class BatchResult:
    """The summary table (input order) and where it was written."""

    out: Path
    summary: pl.DataFrame
    written: tuple[Path, ...]

    def count(self, status: str) -> int:
        return self.summary.filter(pl.col("status") == status).height

    @property
    def reused(self) -> int:
        return self.summary.filter(pl.col("reused")).height

    @property
    def exit_code(self) -> int:
        """0 when every bundle was read whole (inputs that are no bundle, such as a
        README.md beside them, are skipped, not failed); 1 when any failed or was partly
        unreadable."""
        done = self.count("ok") + self.count("skipped")
        return 0 if done == self.summary.height else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "bundles": self.summary.height,
            "ok": self.count("ok"),
            "partial": self.count("partial"),
            "failed": self.count("failed"),
            "reused": self.reused,
            "summary": self.summary.to_dicts(),
        }


# ----- identity of a bundle


def safe_name(name: str) -> str:
    """A file-system name made of the bundle's name: letters, digits, ``_`` and ``-`` only."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-")[:60]
    return slug or "bundle"


class HashCache:
    """SHA-256 of files keyed by (path, size, mtime): unchanged inputs are not read again."""

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            self._entries: dict[str, list[Any]] = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            self._entries = {}

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.absolute())
        entry = self._entries.get(key)
        if isinstance(entry, list) and entry[:2] == [stat.st_size, stat.st_mtime_ns]:
            return str(entry[2])
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        self._entries[key] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]
        return digest.hexdigest()

    def save(self) -> None:
        temporary = self._path.with_name(self._path.name + ".tmp")
        temporary.write_text(json.dumps(self._entries), encoding="utf-8")
        os.replace(temporary, self._path)


def _bundle_files(
    folder: Path, unlisted: Callable[[OSError], None] | None = None
) -> Iterator[Path]:
    """Regular files under a folder bundle, in a fixed order; links are not followed.
    A folder that cannot be listed goes to ``unlisted``, or raises its OSError (os.walk
    would leave it out without a word)."""
    for root, dirs, files in os.walk(folder, onerror=unlisted or _raise):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                yield path


def _raise(error: OSError) -> None:
    raise error


def holds_log(bundle: Path) -> bool:
    """Whether an input can be a bundle: a log or an archive itself, or a folder with one.

    ``archive/*`` also matches the README.md or notes.txt beside the bundles; those are
    skipped with a note rather than analysed into a failure on every run. Only the first
    bytes of each file are read (links are not followed, as in the analysis).
    """
    try:
        for path in [bundle] if bundle.is_file() else _bundle_files(bundle):
            with path.open("rb") as f:
                if kind_of(f.read(HEAD_SIZE)) != "unknown":
                    return True
    except OSError:
        return True  # unreadable: let the analysis say what is wrong with it
    return False


def bundle_identity(bundle: Path, cache: HashCache) -> tuple[str, int]:
    """(SHA-256, bytes) of a bundle: a file's own hash, or a folder's relative paths + hashes.

    A file or folder inside that cannot be read is part of the identity as such (the
    analysis names it); an unreadable file bundle raises its OSError."""
    if bundle.is_file():
        return cache.sha256(bundle), bundle.stat().st_size
    digest = hashlib.sha256()
    size = 0

    def unreadable(error: OSError) -> None:
        digest.update(f"{error.filename}\0unreadable: {error.strerror}\n".encode())

    for path in _bundle_files(bundle, unreadable):
        relative = path.relative_to(bundle).as_posix()
        try:
            digest.update(f"{relative}\0{cache.sha256(path)}\n".encode())
            size += path.stat().st_size
        except OSError as e:
            unreadable(e)
    return digest.hexdigest(), size


def settings_fingerprint(settings: AnalyzeSettings) -> str:
    """A stable hash of what an analysis depends on (sets sorted: hash seeds differ per run)."""

    def plain(value: object) -> object:
        if isinstance(value, (set, frozenset)):
            return sorted(map(str, value))
        return str(value)

    # the archive password changes no result and is never written, not even hashed
    fields = dataclasses.asdict(dataclasses.replace(settings, jobs=1, password=None))
    text = json.dumps(fields, sort_keys=True, default=plain)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----- planning: what to reuse, what to run


@dataclass(frozen=True)
class _Planned:
    row: dict[str, Any]
    task: BundleTask | None  # None: reused, or the same bytes under the same name again
    reused: bool = False


def _check_out(inputs: Sequence[Path], out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BatchError(f"{out}: --out must be a folder, and this is a file")
    resolved = out.resolve()
    for path in inputs:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        bundle = path.resolve()
        if resolved == bundle or bundle in resolved.parents:
            raise BatchError(
                f"{out}: --out is inside the bundle {path}; choose a folder outside it"
            )
        if resolved in bundle.parents:
            raise BatchError(f"{path}: this input is inside --out {out}; leave it out")


def _reusable(previous: dict[str, Any], row: dict[str, Any]) -> bool:
    """Same bytes, version and analysis settings; a failure also needs the same limits."""
    same = all(previous.get(k) == row[k] for k in ("sha256", "lmtrace_version", "settings"))
    if previous.get("status") == "failed":
        same = same and previous.get("limits") == row["limits"]
    return same


def _plan(inputs: Sequence[Path], out: Path, settings: BatchSettings) -> list[_Planned]:
    version = __version__
    fingerprint = settings_fingerprint(settings.analyze)
    limits = {"timeout_s": settings.timeout_s, "max_memory_mb": settings.max_memory_mb}
    bundles = out / BUNDLES_FOLDER
    cache = HashCache(bundles / HASH_CACHE)
    planned: list[_Planned] = []
    seen: set[str] = set()
    for path in inputs:
        try:
            logs = holds_log(path)
            sha256, size = bundle_identity(path, cache) if logs else ("", 0)
        except OSError as e:  # an unreadable archive fails alone; the others are analysed
            row = {
                "bundle": path.name,
                "input": str(path),
                "folder": None,
                "status": "failed",
                "error": f"cannot be read: {e.filename or path}: {e.strerror or e}",
                "bytes": 0,
                "lmtrace_version": version,
            }
            planned.append(_Planned(row, None))
            continue
        if not logs:
            row = {
                "bundle": path.name,
                "input": str(path),
                "folder": None,
                "status": "skipped",
                "error": "holds no .evtx, pfirewall.log or archive: not a bundle, skipped",
                "bytes": path.stat().st_size if path.is_file() else 0,
                "lmtrace_version": version,
            }
            planned.append(_Planned(row, None))
            continue
        folder = bundles / f"{safe_name(path.name)}-{sha256[:12]}"
        row = {
            "bundle": path.name,
            "input": str(path),
            "sha256": sha256,
            "folder": folder.relative_to(out).as_posix(),
            "bytes": size,
            "lmtrace_version": version,
            "settings": fingerprint,
            "limits": limits,
        }
        if folder.name in seen:  # given twice: analysed once, reported on both rows
            planned.append(_Planned(row, None))
            continue
        seen.add(folder.name)
        previous = _read_result(folder)
        if previous and not settings.force and _reusable(previous, row):
            planned.append(_Planned({**previous, "input": str(path)}, None, reused=True))
            continue
        task = BundleTask(
            bundle=path.absolute(),
            folder=folder.absolute(),
            settings=settings.analyze,
            timeout_s=settings.timeout_s,
            max_memory_mb=settings.max_memory_mb,
            row=row,
        )
        planned.append(_Planned(row, task))
    cache.save()
    return planned


def _read_result(folder: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((folder / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# ----- running


def _run_local(tasks: list[BundleTask], jobs: int) -> Iterator[dict[str, Any]]:
    """Each thread supervises one child process at a time: ``jobs`` analyses at once.

    When the batch stops early (Ctrl-C), running analyses are killed and no
    other bundle starts. The kernel may hand the terminal's SIGINT to any
    thread; Python raises KeyboardInterrupt in the main thread only once that
    thread runs again, so it waits in short slices rather than until the next
    bundle is done (which let a Ctrl-C analyse one more bundle).
    """
    stop = threading.Event()
    pool = ThreadPoolExecutor(max(jobs, 1), thread_name_prefix="lmtrace-batch")
    try:
        pending = {pool.submit(run_bundle, task, stop) for task in tasks}
        while pending:
            done, pending = wait(pending, timeout=_WAKE_S, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dask(tasks: list[BundleTask], address: str) -> Iterator[dict[str, Any]]:
    """The same tasks on a Dask cluster: its workers must see the inputs and OUT at these paths."""
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise BatchError(
            "--scheduler needs dask.distributed: pip install 'dask[distributed]'"
        ) from None
    _check_reachable(address)
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as e:
        raise BatchError(f"{address}: cannot reach the Dask scheduler ({e})") from None
    with client:
        futures = [client.submit(run_bundle, task, key=_task_key(task)) for task in tasks]
        for future in dask_completed(futures):
            yield future.result()


def _check_reachable(address: str) -> None:
    """Fail at once on a tcp:// scheduler that refuses connections (a typo in the port, a
    scheduler not started): dask's client would retry for its whole 10 s timeout."""
    parsed = urlsplit(address)
    if parsed.scheme != "tcp" or not parsed.hostname or parsed.port is None:
        return
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=5).close()
    except OSError as e:
        raise BatchError(f"{address}: cannot reach the Dask scheduler ({e})") from None


def _task_key(task: BundleTask) -> str:
    """A Dask key unique to this bundle in this OUT: the scheduler shares equal keys
    between clients, so two batches into different folders must not collide."""
    where = hashlib.sha256(str(task.folder).encode()).hexdigest()[:12]
    return f"lmtrace-batch-{task.folder.name}-{where}"


def run_batch(
    inputs: Sequence[Path],
    out: Path,
    settings: BatchSettings,
    progress: BatchProgress | None = None,
) -> BatchResult:
    """Analyse each input bundle into ``out/bundles/``; write the summary and the overview.

    Raises InputError / BatchError (one line) before any analysis when an input
    is missing, ``out`` is unusable or the scheduler cannot be reached.
    """
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    _check_out(inputs, out)
    (out / BUNDLES_FOLDER).mkdir(parents=True, exist_ok=True)
    with _locked(out):
        return _run_locked(inputs, out, settings, progress)


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One batch at a time per OUT; a lock left by a killed batch is taken over."""
    lock = out / LOCK_FILE
    try:
        holder = int(lock.read_text(encoding="ascii"))
    except (OSError, ValueError):
        holder = None
    if holder is not None and holder != os.getpid() and psutil.pid_exists(holder):
        raise BatchError(f"{out}: another lmtrace batch (process {holder}) is writing here")
    lock.write_text(str(os.getpid()), encoding="ascii")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _run_locked(
    inputs: list[Path], out: Path, settings: BatchSettings, progress: BatchProgress | None
) -> BatchResult:
    shutil.rmtree(out / BUNDLES_FOLDER / WORK_FOLDER, ignore_errors=True)  # an interrupted run's
    planned = _plan(inputs, out, settings)
    tasks = sorted((p.task for p in planned if p.task), key=lambda t: -int(t.row["bytes"]))
    if progress is not None:
        progress.start(sum(int(p.row["bytes"]) for p in planned), len(planned))
        for p in planned:
            if p.reused:
                progress.done(p.row)
    runner: Callable[[], Iterator[dict[str, Any]]] = (
        (lambda: _run_dask(tasks, settings.scheduler))
        if settings.scheduler
        else (lambda: _run_local(tasks, settings.jobs))
    )
    results = {p.row["folder"]: p.row for p in planned if p.reused}
    if tasks:
        for row in runner():
            results[row["folder"]] = row
            if progress is not None:
                progress.done(row)
    rows = [
        {
            **p.row,
            **results.get(p.row.get("folder"), {}),
            "input": p.row["input"],
            "reused": p.reused,
        }
        for p in planned
    ]
    summary = pl.DataFrame(
        [{k: r.get(k) for k in SUMMARY_SCHEMA} for r in rows], schema=SUMMARY_SCHEMA
    )
    return BatchResult(out, summary, tuple(write_summary(summary, out)))


# ----- the summary table and the overview page


def write_summary(summary: pl.DataFrame, out: Path) -> list[Path]:
    """summary.parquet, summary.csv and index.html in ``out``, each written atomically."""
    written = []
    for name, write in (
        ("summary.parquet", summary.write_parquet),
        ("summary.csv", lambda path: path.write_bytes(csv_bytes(summary))),
    ):
        temporary = out / f".{name}.tmp"
        write(temporary)
        os.replace(temporary, out / name)
        written.append(out / name)
    temporary = out / ".index.html.tmp"
    temporary.write_text(overview_html(summary, out), encoding="utf-8")
    os.replace(temporary, out / "index.html")
    written.append(out / "index.html")
    return written


_REPORT_FILES = ("report.html", "findings.json", "error.txt")
"""What a bundle's row links to, in order of preference."""

_COLUMNS = (
    ("status", "status"),
    ("verdict", "verdict"),
    ("migrations", "migrations"),
    ("affected_vms", "affected VMs"),
    ("longest_quarantine_s", "longest quarantine (s)"),
    ("blocked_inbound", "blocked inbound"),
    ("files_unreadable", "files unreadable"),
    ("records_unreadable", "records unreadable"),
    ("seconds", "seconds"),
    ("error", "reason"),
)


def overview_html(summary: pl.DataFrame, out: Path) -> str:
    """One self-contained page: a row per bundle linking its report. Every value is escaped."""

    def cell(value: object) -> str:
        if value is None:
            return "<td></td>"
        text = f"{value:.1f}" if isinstance(value, float) else str(value)
        return f"<td>{html.escape(printable(text))}</td>"

    body = []
    for row in summary.iter_rows(named=True):
        folder = out / (row["folder"] or "-")  # a skipped input has no folder
        target = next((n for n in _REPORT_FILES if (folder / n).is_file()), None)
        name = html.escape(printable(row["bundle"]))
        link = f'<a href="{quote(row["folder"] + "/" + target)}">{name}</a>' if target else name
        sha = html.escape((row["sha256"] or "")[:12])
        cells = "".join(cell(row[key]) for key, _ in _COLUMNS)
        status = html.escape(row["status"] or "")
        body.append(f'<tr class="{status}"><td>{link}</td><td><code>{sha}</code></td>{cells}</tr>')
    heads = "".join(f"<th>{html.escape(title)}</th>" for _, title in _COLUMNS)
    counts = summary["status"].value_counts().sort("status").iter_rows()
    tally = ", ".join(f"{n} {html.escape(str(s))}" for s, n in counts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>lmtrace batch: {summary.height} bundles</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
tr.failed {{ background: #fdd; }} tr.partial {{ background: #ffd; }}
</style></head><body>
<h1>lmtrace batch: {summary.height} bundles</h1>
<p>{tally}. Each bundle links to its report; times are UTC inside each report.</p>
<p>Generated by {html.escape(generated_by(__version__))}.</p>
<table><thead><tr><th>bundle</th><th>sha256</th>{heads}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table></body></html>
"""
