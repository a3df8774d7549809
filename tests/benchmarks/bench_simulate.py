"""How long ``lmtrace simulate --size`` takes to write a big bundle (not collected by pytest).

The brief: 1 GB of .evtx in under two minutes on one core. This simulates the
quarantine-bug scenario padded to ``--size`` into a temporary folder, checks
the size landed within 5 %, and prints wall seconds, MB/s and records/s, and the
CPU seconds of this process (the fair figure when other jobs share the cores).

    python tests/benchmarks/bench_simulate.py --size 1GB
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipeline.simulate import SimulateOptions, parse_size, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GB", help="total .evtx size, e.g. 1GB or 200MB")
    parser.add_argument("--scenario", default="quarantine-bug")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    target = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="lmtrace-bench-") as tmp:
        began, cpu_began = time.perf_counter(), time.process_time()
        result = simulate(
            SimulateOptions(scenario=args.scenario, seed=args.seed, size=target), Path(tmp)
        )
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
    files = result.ground_truth["files"]
    records = sum(int(f["records"]) for f in files)  # type: ignore[index]
    off = (result.total_bytes - target) / target * 100
    print(
        f"{args.scenario} --size {args.size}: {result.total_bytes:,} bytes ({off:+.2f} %), "
        f"{records:,} records in {seconds:.1f} s = {result.total_bytes / seconds / 1e6:.1f} MB/s, "
        f"{records / seconds:,.0f} records/s; {cpu:.1f} s of CPU "
        f"({result.total_bytes / cpu / 1e6:.1f} MB/s per CPU second: the figure without "
        "other processes on the core)"
    )


if __name__ == "__main__":
    main()
