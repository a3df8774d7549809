"""End-to-end `lmtrace ingest` with 1 and 2 jobs, and its peak memory (issue targets).

Not collected by pytest (named bench_*). Run:

    python tests/benchmarks/bench_ingest.py [--size 1GB] [--repeats 3] [INPUT ...]

Without INPUT, a simulated cluster-drain bundle of ``--size`` bytes of .evtx is
written first (many files of several sizes: a multi-file input). Each repeat
ingests the same input into a fresh store, as a separate `lmtrace ingest`
process, once with ``--jobs 1`` and once with ``--jobs 2``. In the same run, the
baseline is raw pyevtx-rs iteration over the same files (``records_json()``
without decoding, one process, the practical limit of any ingest).

Printed: medians of wall time, records per second, the ratios (1 job against
raw; 2 jobs against 1 job) and the peak RSS of the largest process of each
ingest (parent or reading worker), from the kernel's accounting of the
finished process tree.

The ingest processes run as a user's do, with compiled modules cached (one
untimed ingest first): this machine's environment sets PYTHONDONTWRITEBYTECODE,
which would compile lmtrace's own modules in every run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
AS_INSTALLED = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

from parsers.evtx_layout import is_evtx  # noqa: E402
from pipeline.simulate import parse_size, simulate  # noqa: E402
from pipeline.simulate.plan import SimulateOptions  # noqa: E402
from tests.benchmarks.bench_read import raw_pass  # noqa: E402


def _evtx_files(inputs: list[Path]) -> list[Path]:
    found = []
    for root in inputs:
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file() and is_evtx(path.open("rb").read(8)):
                found.append(path)
    return found


def _raw(files: list[Path]) -> tuple[float, int]:
    """The baseline: bench_read's raw pyevtx-rs iteration, timed (seconds, records)."""
    started = time.perf_counter()
    records = raw_pass(files)
    return time.perf_counter() - started, records


def _ingest(inputs: list[Path], store: Path, jobs: int) -> tuple[float, float]:
    """Wall seconds and the peak RSS (MB) of the largest process in one ingest run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest", *map(str, inputs), "--out", str(store),
         "--jobs", str(jobs), "--quiet"],
        check=False,
        env=AS_INSTALLED,
    )  # fmt: skip
    if done.returncode not in (0, 1):  # 1: some file only partly read, as in the corpus
        raise SystemExit(f"lmtrace ingest failed with exit code {done.returncode}")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest so far, in KiB; a smaller run cannot lower it.
    return seconds, max(peak, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", type=Path)
    parser.add_argument("--size", default="300MB")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        inputs = args.inputs
        if not inputs:
            bundle = Path(tmp) / "bundle"
            options = SimulateOptions(
                scenario="cluster-drain", seed=1, size=parse_size(args.size), hosts=3, vms=6
            )
            simulate(options, bundle)
            inputs = [bundle]
        files = _evtx_files(inputs)
        size = sum(f.stat().st_size for f in files)
        _ingest([ROOT / "examples" / "bundles" / "no-audit"], Path(tmp) / "warm-up", 1)
        raw, one, two, rss1, rss2 = [], [], [], [], []
        records = 0
        for n in range(args.repeats):
            seconds, records = _raw(files)
            raw.append(seconds)
            seconds, peak = _ingest(inputs, Path(tmp) / f"s1-{n}", 1)
            one.append(seconds)
            rss1.append(peak)
            seconds, peak = _ingest(inputs, Path(tmp) / f"s2-{n}", 2)
            two.append(seconds)
            rss2.append(peak)
    r, a, b = statistics.median(raw), statistics.median(one), statistics.median(two)
    print(f"input: {len(files)} .evtx files, {size / 1e6:,.0f} MB, {records:,} records")
    print(f"raw pyevtx-rs iteration: {r:7.1f} s  {records / r:>9,.0f} records/s")
    print(f"ingest --jobs 1:         {a:7.1f} s  {records / a:>9,.0f} records/s  {r / a:.2f}x raw")
    print(
        f"ingest --jobs 2:         {b:7.1f} s  {records / b:>9,.0f} records/s  {a / b:.2f}x 1 job"
    )
    print(f"peak RSS of the largest process: {max(rss1):.0f} MB (1 job), {max(rss2):.0f} MB (2)")
    print(
        f"medians of {args.repeats} runs; load average {os.getloadavg()[0]:.1f}; "
        "targets: >= 0.5x raw, 2 jobs >= 1.8x 1 job"
    )


if __name__ == "__main__":
    main()
