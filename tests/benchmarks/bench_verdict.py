"""Time to a verdict, as a user waits for it: whole `lmtrace` processes, start-up included.

Not collected by pytest (named bench_*). Run:

    python tests/benchmarks/bench_verdict.py [--repeats 7] [--bundle BUNDLE]

Each repeat runs, one after the other (so that machine load hits each alike):

* the baseline: ``python -c pass``, the interpreter's own start-up;
* ``lmtrace --help`` and ``lmtrace files --help``;
* ``lmtrace analyze BUNDLE --out NEW`` (BUNDLE: examples/bundles/quarantine-bug, 1 MB,
  unless given) with the default jobs, and with ``--jobs 1``, each into a fresh folder
  (a folder analysed before would skip the reading).

Printed: median, min and max wall seconds of each, the help pages as a multiple of
the bare interpreter, the default analyze as a multiple of ``--jobs 1`` (the default
must not be slower), the load average before and after, and the issue's targets.

The processes run as a user's do, with compiled modules cached in ``__pycache__``
(one untimed run of each first): this machine's environment sets
PYTHONDONTWRITEBYTECODE, which would compile lmtrace's own modules in every run
(about 0.2 s of start-up that no installed copy pays).
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

ROOT = Path(__file__).resolve().parents[2]
LMTRACE = [sys.executable, "-m", "pipeline"]
AS_INSTALLED = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        command,
        check=True,
        cwd=ROOT,
        env=AS_INSTALLED,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def _line(name: str, times: list[float], note: str = "") -> str:
    median = statistics.median(times)
    return f"{name:32s} {median:6.2f} s  (min {min(times):.2f}, max {max(times):.2f}){note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--bundle", type=Path, default=ROOT / "examples/bundles/quarantine-bug")
    args = parser.parse_args()
    runs: dict[str, list[float]] = {
        "python -c pass": [],
        "lmtrace --help": [],
        "lmtrace files --help": [],
        "lmtrace analyze (default jobs)": [],
        "lmtrace analyze --jobs 1": [],
    }
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        analyze = [*LMTRACE, "analyze", str(args.bundle), "--quiet"]
        _timed([*analyze, "--out", str(Path(tmp) / "warm-up")])  # caches compiled modules
        for n in range(args.repeats):
            runs["python -c pass"].append(_timed([sys.executable, "-c", "pass"]))
            runs["lmtrace --help"].append(_timed([*LMTRACE, "--help"]))
            runs["lmtrace files --help"].append(_timed([*LMTRACE, "files", "--help"]))
            out = Path(tmp) / f"default-{n}"
            runs["lmtrace analyze (default jobs)"].append(_timed([*analyze, "--out", str(out)]))
            out = Path(tmp) / f"one-{n}"
            runs["lmtrace analyze --jobs 1"].append(
                _timed([*analyze, "--out", str(out), "--jobs", "1"])
            )
    median = {name: statistics.median(times) for name, times in runs.items()}
    bare = median["python -c pass"]
    size = sum(p.stat().st_size for p in args.bundle.rglob("*") if p.is_file())
    print(f"bundle: {args.bundle} ({size / 1e6:.1f} MB); {os.cpu_count()} CPUs")
    for name, times in runs.items():
        note = ""
        if "--help" in name:
            note = f"  {median[name] / bare:.1f}x the bare interpreter"
        elif name == "lmtrace analyze (default jobs)":
            note = f"  {median[name] / median['lmtrace analyze --jobs 1']:.2f}x --jobs 1"
        print(_line(name, times, note))
    load_after = os.getloadavg()
    print(
        f"medians of {args.repeats} runs; load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after; targets: --help < 0.3 s, analyze < 1.0 s and "
        "not slower than --jobs 1"
    )


if __name__ == "__main__":
    main()
