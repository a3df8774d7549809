"""How long the timeline takes for 100,000 events, and how big its page is (not collected).

The brief: under 10 s and under 10 MB for 100,000 events. A simulated cluster
drain (four migrations) is analyzed once; its blocked and context events are then
repeated, each copy shifted by 37 ms and given new record ids, until there are
``--events`` of them (60 % blocked inbound, 40 % context), so the figure holds
as many events as a busy cluster would log around its migrations. Each repeat
writes timeline.html plus one zoomed page per migration; the script prints the
median wall and CPU seconds and the size of timeline.html.

    python tests/benchmarks/bench_timeline.py --events 100000 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import polars as pl

from pipeline.analyze import AnalyzeSettings, analyze
from pipeline.simulate import SimulateOptions, simulate
from pipeline.timeline import TIMELINE_FILE, TimelineSettings, write_timeline


def _repeat(frame: pl.DataFrame, n: int) -> pl.DataFrame:
    copies = -(-n // max(frame.height, 1))
    return pl.concat(
        frame.with_columns(
            pl.col("timestamp_host") + pl.duration(milliseconds=37 * i),
            pl.col("timestamp") + pl.duration(milliseconds=37 * i),
            pl.col("record_id") + i * 10_000_000,
        )
        for i in range(copies)
    ).head(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lmtrace-bench-") as tmp:
        root = Path(tmp)
        simulate(SimulateOptions("cluster-drain", seed=3, guest_clock_offset=2.5), root / "b")
        result = analyze([root / "b"], root / "out", AnalyzeSettings()).result
        blocked = _repeat(result.blocked, int(args.events * 0.6))
        context = _repeat(result.context, args.events - blocked.height)
        dense = replace(result, blocked=blocked, context=context)
        walls, cpus = [], []
        for i in range(args.repeats):
            page = root / f"run{i}" / TIMELINE_FILE
            began, cpu_began = time.perf_counter(), time.process_time()
            written = write_timeline(dense, page, TimelineSettings())
            walls.append(time.perf_counter() - began)
            cpus.append(time.process_time() - cpu_began)
        size = page.stat().st_size / 1e6
    print(
        f"timeline for {blocked.height + context.height:,} events "
        f"({blocked.height:,} blocked, {context.height:,} context, "
        f"{result.migrations.height} migrations, {len(written) - 2} zoomed pages): "
        f"median {statistics.median(walls):.2f} s wall, {statistics.median(cpus):.2f} s CPU "
        f"over {args.repeats} runs; timeline.html {size:.2f} MB"
    )


if __name__ == "__main__":
    main()
