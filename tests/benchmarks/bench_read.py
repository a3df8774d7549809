"""Throughput of the EVTX reader against raw pyevtx-rs iteration, in one process.

Not collected by pytest (named bench_*). Run:

    /work/venv/bin/python tests/benchmarks/bench_read.py [EXTRA.evtx ...] [--repeats N]

Inputs: every .evtx under the corpus's attack/ and parsers/ folders (about
50 MB), plus any paths given. Three measurements, each repeated (median shown):

* raw: ``evtx.PyEvtxParser(path).records_json()`` iterated without decoding;
* rust: ``read_evtx`` (default engine) + ``pl.concat`` + ``write_parquet``;
* python: the python-evtx engine on one small file (records per second only).

The ratio rust/raw is the issue's target (>= 0.5).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import evtx
import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from parsers.evtx_layout import is_evtx  # noqa: E402
from parsers.evtx_reader import Provenance, ReadSettings, read_evtx  # noqa: E402
from tests.conftest import corpus_root  # noqa: E402

LARGE = 1 << 20  # files this big show per-record cost, not per-file overhead
SMALL_PYTHON_SAMPLE = "network/EVTX-ATTACK-SAMPLES__DE_RDP_Tunnel_5156.evtx"


def _inputs(extra: list[Path]) -> list[Path]:
    root = corpus_root()
    files = sorted(p for d in ("attack", "parsers") for p in (root / d).glob("*.evtx"))
    files += extra
    return [p for p in files if p.stat().st_size and is_evtx(p.read_bytes()[:8])]


def raw_pass(files: list[Path]) -> int:
    n = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            for _ in evtx.PyEvtxParser(str(path), skip_errors=True).records_json():
                n += 1
    return n


def reader_pass(files: list[Path], out_dir: Path, engine: str = "rust") -> int:
    """Every file's frames, concatenated and written as one Parquet file (as a store append)."""
    frames: list[pl.DataFrame] = []
    for path in files:
        read = read_evtx(path, ReadSettings(engine=engine), Provenance(str(path), None, "-"))
        frames.extend(read)
    frame = pl.concat(frames)
    frame.write_parquet(out_dir / "events.parquet")
    return frame.height


def _timed_pair(first, second, repeats: int) -> tuple[float, int, float, int]:
    """Median seconds of two workloads, interleaved so that machine load hits both alike."""
    a_times, b_times, a_n, b_n = [], [], 0, 0
    for _ in range(repeats):
        start = time.perf_counter()
        a_n = first()
        a_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        b_n = second()
        b_times.append(time.perf_counter() - start)
    return statistics.median(a_times), a_n, statistics.median(b_times), b_n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extra", nargs="*", type=Path, help="more .evtx files to include")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    files = _inputs(args.extra)
    large = [p for p in files if p.stat().st_size >= LARGE]
    with tempfile.TemporaryDirectory() as tmp:
        groups = [("all inputs", files), (f"inputs >= {LARGE >> 20} MiB", large)]
        if args.extra:
            groups.append(("given paths", [p for p in files if p in args.extra]))
        for label, group in groups:
            size = sum(p.stat().st_size for p in group)
            raw_s, raw_n, rust_s, rust_n = _timed_pair(
                lambda g=group: raw_pass(g), lambda g=group: reader_pass(g, Path(tmp)), args.repeats
            )
            print(
                f"{label}: {len(group)} files, {size / 1e6:.1f} MB, {raw_n} records, "
                f"median of {args.repeats}"
            )
            print(f"  raw pyevtx-rs iteration  {raw_s:7.3f} s  {raw_n / raw_s:9.0f} rec/s")
            print(
                f"  read_evtx(rust)+parquet  {rust_s:7.3f} s  {rust_n / rust_s:9.0f} rec/s"
                f"  {raw_s / rust_s:.2f}x of raw"
            )
        small = [corpus_root() / SMALL_PYTHON_SAMPLE]
        py_s, py_n, _, _ = _timed_pair(
            lambda: reader_pass(small, Path(tmp), "python"), lambda: 0, args.repeats
        )
    print(f"read_evtx(python), 1 small file  {py_n / py_s:10.0f} rec/s ({py_n} records)")


if __name__ == "__main__":
    main()
