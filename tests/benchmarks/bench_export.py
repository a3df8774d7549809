"""Export speed and memory: ``lmtrace export`` against a plain dump of the same events.

Not collected by pytest (named bench_*). Run:

    python tests/benchmarks/bench_export.py --analysis OUT [--repeats 3]
    python tests/benchmarks/bench_export.py --bundle BUNDLE [--repeats 3]

``--analysis`` is an analysis folder (``lmtrace analyze --out``); ``--bundle`` is
analysed first into a temporary folder (a big one: ``lmtrace simulate --scenario
quarantine-bug --size 450MB --out BUNDLE`` holds about 900,000 events). Each repeat
runs, one after the other, as whole processes (start-up included):

* the baseline: polars writing the store's events as JSON lines, one store part at a
  time, with nothing added (no message, no payload fields, no tags, no analysis);
* ``lmtrace export OUT --format timesketch`` and ``--format csv``.

Printed per run: median wall and CPU seconds (user + system, the fair figure on a
shared machine) and the median peak RSS, each export's CPU as a multiple of the
baseline's, and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LMTRACE = [sys.executable, "-m", "pipeline"]
BASELINE = """
import sys
from pathlib import Path
import polars as pl
store, out = Path(sys.argv[1]), Path(sys.argv[2])
with out.open("wb") as sink:
    for part in sorted((store / "events").glob("*.parquet")):
        pl.read_parquet(part).write_ndjson(sink)
"""


def _run(command: list[str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()}")
    process.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--analysis", type=Path, help="an analysis folder (analyze --out)")
    given.add_argument("--bundle", type=Path, help="a bundle, analysed first")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        analysis = args.analysis
        if analysis is None:
            analysis = Path(tmp) / "case"
            subprocess.run(
                [*LMTRACE, "analyze", str(args.bundle), "--out", str(analysis), "--quiet"],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        target = Path(tmp) / "export"
        runs: dict[str, list[tuple[float, float, float]]] = {
            "baseline: polars NDJSON dump": [],
            "lmtrace export timesketch": [],
            "lmtrace export csv": [],
        }
        commands = {
            "baseline: polars NDJSON dump": [
                sys.executable, "-c", BASELINE, str(analysis / "store"), str(target)
            ],
            "lmtrace export timesketch": [*LMTRACE, "export", str(analysis), "--out", str(target)],
            "lmtrace export csv": [
                *LMTRACE, "export", str(analysis), "--format", "csv", "--out", str(target)
            ],
        }  # fmt: skip
        for _ in range(args.repeats):
            for name, command in commands.items():
                runs[name].append(_run(command))
                target.unlink()
    base_cpu = statistics.median(cpu for _, cpu, _ in runs["baseline: polars NDJSON dump"])
    print(f"export of {analysis}, median of {args.repeats}")
    for name, measured in runs.items():
        wall, cpu, rss = (statistics.median(m[i] for m in measured) for i in range(3))
        ratio = "" if name.startswith("baseline") else f"  {cpu / base_cpu:.2f}x the baseline's CPU"
        print(f"{name:30s} wall {wall:6.2f} s  CPU {cpu:6.2f} s  peak RSS {rss:6.0f} MB{ratio}")
    print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
