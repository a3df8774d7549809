"""Correlation time on about a million stored events (issue target: under 5 s).

Not collected by pytest (named bench_*). Run:

    python tests/benchmarks/bench_correlate.py [--events 1000000] [--repeats 5]

The input is made, not downloaded: a simulated cluster drain (real .evtx bytes,
ingested through the real store) is replicated day by day, each copy shifted by
a day and given its own record ids and file hash, until the store holds the
requested number of events. The copies keep the real mix of host, guest, WFP and
noise events and their payloads, so correlation does the same work per event as
on a real bundle with that many migrations.

Printed: the median wall time of ``correlate`` over the repeats, the baseline
(loading every event of the same store into memory, ``scan_parquet().collect()``),
and their ratio; plus the migrations found against the migrations simulated, as
a check that the run did real work.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.catalog import load_catalog  # noqa: E402
from pipeline.correlate import correlate  # noqa: E402
from pipeline.ingest import ingest  # noqa: E402
from pipeline.simulate import simulate  # noqa: E402
from pipeline.simulate.plan import SimulateOptions  # noqa: E402
from pipeline.store import scan_events  # noqa: E402


def build(folder: Path, target: int) -> tuple[Path, int]:
    """A Parquet folder of about ``target`` events; returns it and the migrations simulated."""
    bundle = folder / "bundle"
    simulate(SimulateOptions(scenario="cluster-drain", seed=1, noise=2000.0, load=20.0), bundle)
    ingest([bundle], folder / "store")
    day = scan_events(folder / "store").collect()
    copies = max(1, round(target / day.height))
    events = folder / "events"
    events.mkdir()
    for n in range(copies):
        day.with_columns(
            pl.col("timestamp") + pl.duration(days=n),
            pl.col("record_id") + n * 10_000_000,
            pl.col("header_record_id") + n * 10_000_000,
            (pl.col("file_sha256") + f"-{n}"),
        ).write_parquet(events / f"part-{n:05d}.parquet")
    truth = pl.read_json(bundle / "ground_truth.json")
    return events, copies * truth["migrations"].list.len().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    catalog = load_catalog()
    with tempfile.TemporaryDirectory() as tmp:
        events, simulated = build(Path(tmp), args.events)
        lazy = pl.scan_parquet(events / "*.parquet")
        rows = lazy.select(pl.len()).collect().item()
        base, full, found = [], [], 0
        for _ in range(args.repeats):
            t = time.perf_counter()
            lazy.collect()
            base.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = correlate(lazy, catalog)
            full.append(time.perf_counter() - t)
            found = result.migrations.height
    b, f = statistics.median(base), statistics.median(full)
    print(f"events: {rows:,}; migrations simulated {simulated}, found {found}")
    print(f"baseline load all:      {b:.2f} s (median of {args.repeats})")
    print(f"correlate:              {f:.2f} s (median of {args.repeats}); ratio {f / b:.1f}x")
    print(f"target: correlate under 5 s -> {'met' if f < 5 else 'MISSED'}")


if __name__ == "__main__":
    main()
