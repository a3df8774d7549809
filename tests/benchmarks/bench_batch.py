"""``lmtrace batch`` over many simulated bundles: correctness, speed-up, memory, resume.

The issue's proof (not collected by pytest): 200 simulated bundles of mixed
scenarios, 5 to 20 MB each (log-uniform, about 2 GB in all). It checks that
every bundle's summary verdict equals its ground_truth.json, times one local
job against two (target >= 1.7x), reports the peak RSS of the analysis
processes (target < 500 MB whatever the bundle size) and times a second run
with nothing new (target < 5 % of the first run's time).

    python tests/benchmarks/bench_batch.py               # 200 bundles
    python tests/benchmarks/bench_batch.py --count 20    # a quick run
    python tests/benchmarks/bench_batch.py --count 20 --big 300MB  # + one big bundle

Bundles are written once into --workdir (default: a temporary folder) and kept
there with --keep, so a second benchmark run skips the simulation.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import polars as pl

from pipeline.batch import BatchResult, BatchSettings, run_batch
from pipeline.simulate import SimulateError, SimulateOptions, parse_size, simulate
from pipeline.simulate.plan import load_presets


def _make(spec: tuple[str, int, int, Path]) -> None:
    """Simulate one bundle unless it is there; a size too small for the scenario grows."""
    scenario, seed, size, out = spec
    if (out / "ground_truth.json").is_file():
        return
    for _ in range(6):
        shutil.rmtree(out, ignore_errors=True)
        try:
            simulate(SimulateOptions(scenario=scenario, seed=seed, size=size), out)
            return
        except SimulateError:  # e.g. cluster-drain's many files need more than 8 MB
            size = int(size * 1.25)
    raise SystemExit(f"{scenario} seed {seed}: no size up to {size} bytes fits")


def make_bundles(root: Path, count: int, low: int, high: int, seed: int, jobs: int) -> list[Path]:
    """``count`` bundles cycling through every scenario, sizes log-uniform in [low, high]."""
    rng = random.Random(seed)
    scenarios = list(load_presets())
    specs = []
    for i in range(count):
        size = int(math.exp(rng.uniform(math.log(low), math.log(high))))
        scenario = scenarios[i % len(scenarios)]
        specs.append((scenario, seed + i, size, root / f"{i:04d}-{scenario}"))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        list(pool.map(_make, specs))
    return [spec[3] for spec in specs]


def check_verdicts(result: BatchResult, bundles: list[Path]) -> int:
    """Bundles whose summary verdict differs from their ground truth (0 expected)."""
    wrong = 0
    rows = {r["input"]: r for r in result.summary.iter_rows(named=True)}
    for bundle in bundles:
        truth = json.loads((bundle / "ground_truth.json").read_text(encoding="utf-8"))
        row = rows[str(bundle)]
        if row["status"] != "ok" or row["verdict"] != truth["verdict"]:
            wrong += 1
            print(f"  MISMATCH {bundle.name}: {row['status']} {row['verdict']} {row['error']}")
    return wrong


def timed(bundles: list[Path], out: Path, jobs: int) -> tuple[BatchResult, float]:
    began = time.perf_counter()
    result = run_batch(bundles, out, BatchSettings(jobs=jobs))
    return result, time.perf_counter() - began


def describe(label: str, result: BatchResult, seconds: float, total_mb: float) -> None:
    s = result.summary
    print(
        f"{label}: {seconds:.1f} s wall, {total_mb / seconds:.1f} MB/s; per bundle median "
        f"{statistics.median(s['seconds']):.2f} s; peak RSS median "
        f"{statistics.median(s['peak_rss_mb']):.0f} MB, max {s['peak_rss_mb'].max():.0f} MB"
    )


def big_memory(workdir: Path, size: int, seed: int) -> None:
    """Peak RSS of one analysis of a much larger bundle: memory must not grow with size."""
    bundle = workdir / "big" / "quarantine-bug"
    _make(("quarantine-bug", seed, size, bundle))
    shutil.rmtree(workdir / "big-out", ignore_errors=True)
    result, seconds = timed([bundle], workdir / "big-out", 1)
    row = result.summary.row(0, named=True)
    truth = json.loads((bundle / "ground_truth.json").read_text(encoding="utf-8"))
    print(
        f"one {row['bytes'] / 2**20:.0f} MB bundle: {seconds:.1f} s, peak RSS "
        f"{row['peak_rss_mb']:.0f} MB, verdict {row['verdict']} (truth {truth['verdict']})"
    )


def _mb(peaks: pl.Series) -> str:
    """The median of some peaks in MB; a dash for none (one bundle has no larger half)."""
    return "-" if peaks.is_empty() else f"{peaks.median():.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--min-size", default="5MB")
    parser.add_argument("--max-size", default="20MB")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="keep bundles and results here")
    parser.add_argument("--keep", action="store_true", help="do not delete --workdir's results")
    parser.add_argument(
        "--big", default=None, help="also analyse one bundle of this size alone, e.g. 300MB"
    )
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lmtrace-bench-batch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        began = time.perf_counter()
        bundles = make_bundles(
            workdir / "bundles",
            args.count,
            parse_size(args.min_size),
            parse_size(args.max_size),
            args.seed,
            2,
        )
        sizes = [sum(f.stat().st_size for f in b.rglob("*") if f.is_file()) for b in bundles]
        total_mb = sum(sizes) / 2**20
        mb = [s / 2**20 for s in sizes]
        print(
            f"{len(bundles)} bundles, {total_mb:,.0f} MB (median {statistics.median(mb):.1f} MB, "
            f"{min(mb):.1f}-{max(mb):.1f}); "
            f"ready in {time.perf_counter() - began:.0f} s"
        )
        for name in ("one", "two"):
            shutil.rmtree(workdir / name, ignore_errors=True)
        one, one_s = timed(bundles, workdir / "one", 1)
        describe("--jobs 1", one, one_s, total_mb)
        two, two_s = timed(bundles, workdir / "two", 2)
        describe("--jobs 2", two, two_s, total_mb)
        again, again_s = timed(bundles, workdir / "two", 2)
        wrong = check_verdicts(one, bundles) + check_verdicts(two, bundles)
        peaks = two.summary.with_columns(pl.Series("size_mb", mb))
        small = peaks.filter(pl.col("size_mb") <= peaks["size_mb"].median())["peak_rss_mb"]
        large = peaks.filter(pl.col("size_mb") > peaks["size_mb"].median())["peak_rss_mb"]
        print(f"verdicts equal to ground truth: {2 * len(bundles) - wrong}/{2 * len(bundles)}")
        print(f"speed-up --jobs 2 vs 1: {one_s / two_s:.2f}x (target >= 1.7x)")
        print(
            f"peak RSS per analysis: max {peaks['peak_rss_mb'].max():.0f} MB (target < 500); "
            f"median {_mb(small)} for the smaller half, {_mb(large)} for the larger half"
        )
        print(
            f"second run, nothing new: {again_s:.2f} s = {again_s / two_s * 100:.2f} % of the "
            f"first --jobs 2 run (target < 5 %); {again.reused}/{len(bundles)} reused"
        )
        if args.big:
            big_memory(workdir, parse_size(args.big), args.seed)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
