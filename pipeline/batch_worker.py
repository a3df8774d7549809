"""One bundle of a batch, analysed in a child process that can be timed out and capped.

Problem: a batch sweeps hundreds of untrusted bundles. One of them may hang a
reader, eat all memory or crash the interpreter; that bundle must fail alone,
with a reason, while the others go on, whether they run in local threads or on
a Dask worker on another machine.

How: :func:`run_bundle` (the supervisor) runs wherever the task is scheduled.
It starts ``python -m pipeline.batch_worker`` with the task pickled on stdin,
and watches it: the child's resident memory (its own and its children's) is
sampled every 0.2 s and the child is killed when it passes the cap or the
timeout. ``resource.setrlimit(RLIMIT_AS)`` is not used: polars' jemalloc
reserves address space far beyond what it touches, and under a 500 MB address
limit the analysis hung or aborted on a 10 MB bundle that peaks at 200 MB RSS.

The child analyses into a scratch folder beside the final one and writes
``row.json``; the supervisor then writes ``result.json`` (success or the
reason for failure) into that folder and renames it into place. A bundle
folder holding ``result.json`` is therefore always complete: an interrupted
batch leaves only scratch folders, which the next run clears.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil

from parsers.model import LmtraceError
from pipeline.lifeline import exit_with_parent
from pipeline.verdict_table import load_table

RESULT_FILE = "result.json"
"""Written last into a bundle's folder: its presence means the bundle is done."""

ROW_FILE = "row.json"
ERROR_FILE = "error.txt"
WORK_FOLDER = ".work"
"""Scratch folders of bundles in progress, under the bundles folder."""

_POLL_S = 0.2
_INTERRUPTED = frozenset({-signal.SIGINT, -signal.SIGTERM})
"""How a child ends when it is stopped from outside (a service manager stopping every
process): never recorded as the bundle's failure, so the next run analyses it."""
_STOPPED = "stopped: the batch was interrupted"
_ERROR_TAIL = 4000  # bytes of the child's stderr kept in error.txt


class BundleInterrupted(LmtraceError):
    """The analysis was stopped from outside (Ctrl-C, SIGTERM): the bundle has no result."""


@dataclass(frozen=True)
class BundleTask:
    """Everything a worker needs to analyse one bundle; paths are absolute.

    ``row`` holds the summary fields known before the analysis (bundle name,
    input, sha256, folder, bytes, lmtrace version, settings fingerprint, limits).
    """

    bundle: Path
    folder: Path  # the bundle's final result folder
    settings: Any  # AnalyzeSettings; typed loosely so the child imports it lazily
    timeout_s: float
    max_memory_mb: int
    row: dict[str, Any]


ALLOCATOR_CONF = "_RJEM_MALLOC_CONF"
RETURN_FREED_MEMORY = "dirty_decay_ms:0,muzzy_decay_ms:0"


def child_environment() -> dict[str, str]:
    """The analysis child's environment: polars' allocator returns freed memory at once.

    polars allocates through jemalloc, which by default keeps freed pages for a
    while; between the ingest and the correlation steps those pages count in
    the child's resident memory and against the memory cap. Measured on a 300 MB
    bundle: peak 627 MB by default, 458 MB with freed pages returned at once, and
    no slower. polars reads the setting when it loads (appending it to its own
    defaults) and rewrites the variable in every process that imported it, so the
    child gets ours outright.
    """
    return {**os.environ, ALLOCATOR_CONF: RETURN_FREED_MEMORY}


def run_bundle(task: BundleTask, stop: threading.Event | None = None) -> dict[str, Any]:
    """Analyse one bundle in a watched child process; return its summary row.

    Never raises for anything the bundle does: a timeout, the memory cap, a
    crash or an analysis error all become ``status = failed`` with the reason.
    Raises BundleInterrupted when the child was stopped by SIGINT or SIGTERM,
    or when ``stop`` is set (the batch is ending): then the child is killed, or
    not started at. An interrupted child sets ``stop`` so that no thread of the
    batch starts another bundle after a Ctrl-C.
    """
    if stop is not None and stop.is_set():
        raise BundleInterrupted(f"{task.bundle}: not started, the batch was interrupted")
    started = time.perf_counter()
    work = task.folder.parent / WORK_FOLDER / f"{task.folder.name}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    child_task = replace(task, folder=work)
    stderr_path = work / ERROR_FILE
    with stderr_path.open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "pipeline.batch_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=child_environment(),
            # Out of the terminal's process group: a Ctrl-C there would reach a child
            # still importing Python's own modules, which then exits with code 1 like
            # a crash. The supervisor kills its children itself when the batch stops.
            start_new_session=True,
        )
        assert child.stdin is not None
        child.stdin.write(pickle.dumps(child_task))
        child.stdin.close()
        problem, peak_rss = _watch(child, task.timeout_s, task.max_memory_mb << 20, stop)
    if problem is _STOPPED or (problem is None and child.returncode in _INTERRUPTED):
        if stop is not None:
            stop.set()
        shutil.rmtree(work, ignore_errors=True)
        raise BundleInterrupted(f"{task.bundle}: the analysis was interrupted; run again to resume")
    row = dict(task.row)
    produced = work / ROW_FILE
    if problem is None and child.returncode == 0 and produced.is_file():
        row.update(json.loads(produced.read_text(encoding="utf-8")))
        produced.unlink()
        stderr_path.unlink(missing_ok=True)
    else:
        row.update(status="failed", error=problem or _crash_reason(child.returncode, stderr_path))
        _keep_only(work, ERROR_FILE)
    row["seconds"] = round(time.perf_counter() - started, 3)
    row["peak_rss_mb"] = round(max(float(row.get("peak_rss_mb") or 0.0), peak_rss / 2**20), 1)
    _write_json(work / RESULT_FILE, row)
    _promote(work, task.folder)
    return row


def _watch(
    child: subprocess.Popen[bytes], timeout_s: float, cap: int, stop: threading.Event | None
) -> tuple[str | None, int]:
    """Wait for ``child``; kill it at the timeout, the memory cap or ``stop``.

    Returns (reason, peak RSS); the reason is ``_STOPPED`` when ``stop`` ended it.
    """
    deadline = time.monotonic() + timeout_s
    peak = 0
    while child.poll() is None:
        if stop is not None and stop.is_set():
            _kill_tree(child)
            return _STOPPED, peak
        rss = _tree_rss(child.pid)
        peak = max(peak, rss)
        if rss > cap:
            _kill_tree(child)
            return f"memory cap reached: {rss / 2**20:.0f} MB > {cap >> 20} MB (--max-memory)", peak
        if time.monotonic() > deadline:
            _kill_tree(child)
            return f"timed out after {timeout_s:g} s (--timeout)", peak
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(_POLL_S)
    return None, peak


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (0 once it is gone)."""
    try:
        process = psutil.Process(pid)
        tree = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in tree:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _kill_tree(child: subprocess.Popen[bytes]) -> None:
    try:
        descendants = psutil.Process(child.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    for p in descendants:
        with contextlib.suppress(psutil.Error):
            p.kill()
    child.kill()
    child.wait()


def _crash_reason(returncode: int | None, stderr_path: Path) -> str:
    """The child's last words: its one-line error, or how it died."""
    lines = stderr_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    last = lines[-1].strip() if lines else ""
    if last.startswith("lmtrace: error: "):
        return last.removeprefix("lmtrace: error: ")
    if "memory allocation" in last or "MemoryError" in last:
        return f"out of memory: {last}"
    if returncode is not None and returncode < 0:
        return f"the analysis process was killed by signal {-returncode}" + (
            f": {last}" if last else ""
        )
    return f"the analysis process exited with code {returncode}" + (f": {last}" if last else "")


def _keep_only(folder: Path, name: str) -> None:
    """Drop a failed analysis' partial outputs; keep its error text (tail only)."""
    for entry in folder.iterdir():
        if entry.name == name:
            data = entry.read_bytes()
            if len(data) > _ERROR_TAIL:
                entry.write_bytes(data[-_ERROR_TAIL:])
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Write JSON through a temporary name, so a reader never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=2, default=str), encoding="utf-8")
    os.replace(temporary, path)


def _promote(work: Path, final: Path) -> None:
    """Put a finished scratch folder in place of the bundle's folder."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(work, final)


# ----- the child process


def _analyse(task: BundleTask) -> dict[str, Any]:
    """Run the analysis into ``task.folder`` and compute the summary fields it gives."""
    import polars as pl

    from pipeline.analyze import analyze

    analysis = analyze([task.bundle], task.folder, replace(task.settings, jobs=1))
    outcomes = analysis.ingest.outcomes
    if not any(o.status in ("read", "partial") for o in outcomes):
        refused = [o for o in outcomes if o.status in ("refused", "failed")]
        detail = f": {refused[0].where}: {refused[0].message}" if refused else ""
        raise LmtraceError(
            f"no readable .evtx or pfirewall.log in the bundle ({len(refused)} refused"
            f" or unreadable{detail})"
        )
    migrations = analysis.result.migrations
    hit = migrations.filter(pl.col("verdict").is_in(load_table().cut_off))
    problems = analysis.ingest.problems
    longest = migrations["q_duration_s"].max()
    return {
        "status": "partial" if problems else "ok",
        "verdict": analysis.result.summary.verdict,
        "migrations": migrations.height,
        "affected_vms": hit["vm_name"].n_unique(),
        "longest_quarantine_s": None if longest is None else float(longest),  # type: ignore[arg-type]
        "blocked_inbound": int(migrations["blocked_inbound"].sum()),
        "files_unreadable": sum(1 for o in problems if o.status in ("failed", "refused")),
        "records_unreadable": analysis.ingest.records_skipped,
        "error": f"{problems[0].status}: {problems[0].where}: {problems[0].message}"
        if problems
        else None,
        "peak_rss_mb": round(_own_peak_rss() / 2**20, 1),
    }


def _own_peak_rss() -> int:
    """This process' peak resident bytes (exact, unlike the supervisor's samples)."""
    try:
        import resource
    except ImportError:  # Windows: the supervisor's samples stand alone
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def main() -> None:
    """Child entry point: the task arrives pickled on stdin from :func:`run_bundle`."""
    exit_with_parent()  # a killed batch must not leave analyses running
    task: BundleTask = pickle.loads(sys.stdin.buffer.read())
    try:
        row = _analyse(task)
    except LmtraceError as e:
        print(f"lmtrace: error: {e}", file=sys.stderr)
        sys.exit(1)
    _write_json(task.folder / ROW_FILE, row)


if __name__ == "__main__":
    main()
