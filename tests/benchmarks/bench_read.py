"""Throughput of the EVTX reader against raw pyevtx-rs iteration, in one process.

Not collected by pytest (named bench_*). Run:

    python tests/benchmarks/bench_read.py [EXTRA.evtx ...] [--repeats N] [--no-corpus]

Inputs: every .evtx under the corpus's attack/ and parsers/ folders, plus any
paths given (reported again as their own group). Per group, interleaved so
that machine load hits each alike, repeated (median shown):

* raw: ``evtx.PyEvtxParser(path).records_json()`` iterated without decoding;
* rust: ``read_evtx`` (default engine) + ``pl.concat`` + ``write_parquet``;
* rust, filtered: the same with an ``event_ids`` filter of the investigation's
  events (the payload is then flattened for the kept rows only).

and once: the python-evtx engine on one small file (records per second).
Both wall-clock and process CPU time are shown: on a shared machine the wall
clock swings with other load; CPU seconds are steadier. The issue's target is
rust/raw >= 0.5.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import evtx
import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from parsers.evtx_layout import is_evtx  # noqa: E402
from parsers.evtx_reader import Provenance, ReadSettings, read_evtx  # noqa: E402
from parsers.model import EventFilter  # noqa: E402
from tests.conftest import corpus_root  # noqa: E402

LARGE = 1 << 20  # files this big show per-record cost more than per-file overhead
SMALL_PYTHON_SAMPLE = "network/EVTX-ATTACK-SAMPLES__DE_RDP_Tunnel_5156.evtx"
# Netvsc, NetworkProfile, NCSI, firewall, WFP audit, Hyper-V VMMS live migration ids
INVESTIGATION_IDS = frozenset(
    {10, 11, 12, 13, 14, 4004, 4042, 10000, 10001, 10002, 2003, 2004, 2010, 4950, 5152, 5156}
    | {5157, 20413, 20415, 20417, 21300, 21301}
)


def _inputs(extra: list[Path], corpus: bool) -> list[Path]:
    root = corpus_root()
    files = sorted(p for d in ("attack", "parsers") for p in (root / d).glob("*.evtx"))
    files = (files if corpus else []) + extra
    return [p for p in files if p.stat().st_size and is_evtx(p.read_bytes()[:8])]


def raw_pass(files: list[Path]) -> int:
    """Records pyevtx-rs yields from ``files``; a file it cannot open at all (the corpus has
    one with a truncated header) adds none, as it adds no time."""
    n = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            try:
                parser = evtx.PyEvtxParser(str(path), skip_errors=True)
            except OSError:
                continue
            for _ in parser.records_json():
                n += 1
    return n


def reader_pass(files: list[Path], out_dir: Path, settings: ReadSettings) -> int:
    """Every file's frames, concatenated and written as one Parquet file (a store append)."""
    frames: list[pl.DataFrame] = []
    for path in files:
        frames.extend(read_evtx(path, settings, Provenance(str(path), None, "-")))
    frame = pl.concat(frames)
    frame.write_parquet(out_dir / "events.parquet")
    return frame.height


def _medians(workloads: list[Callable[[], int]], repeats: int) -> list[tuple[float, float, int]]:
    """(median wall s, median CPU s, rows) per workload, the workloads interleaved."""
    wall: list[list[float]] = [[] for _ in workloads]
    cpu: list[list[float]] = [[] for _ in workloads]
    rows = [0] * len(workloads)
    for _ in range(repeats):
        for i, work in enumerate(workloads):
            w0, c0 = time.perf_counter(), time.process_time()
            rows[i] = work()
            wall[i].append(time.perf_counter() - w0)
            cpu[i].append(time.process_time() - c0)
    return [
        (statistics.median(w), statistics.median(c), n)
        for w, c, n in zip(wall, cpu, rows, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extra", nargs="*", type=Path, help="more .evtx files to include")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--no-corpus",
        action="store_true",
        help="only the given files (a quick check that the script runs; the figures need "
        "the corpus)",
    )
    args = parser.parse_args()
    files = _inputs(args.extra, corpus=not args.no_corpus)
    groups = [
        ("all inputs", files),
        (f"inputs >= {LARGE >> 20} MiB", [p for p in files if p.stat().st_size >= LARGE]),
    ]
    if args.extra:
        groups.append(("given paths", [p for p in files if p in args.extra]))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for label, group in groups:
            if not group:
                print(f"{label}: none")
                continue
            size = sum(p.stat().st_size for p in group)
            (raw_w, raw_c, raw_n), (rd_w, rd_c, rd_n), (f_w, f_c, f_n) = _medians(
                [
                    lambda g=group: raw_pass(g),
                    lambda g=group: reader_pass(g, out, ReadSettings()),
                    lambda g=group: reader_pass(
                        g, out, ReadSettings(filter=EventFilter(event_ids=INVESTIGATION_IDS))
                    ),
                ],
                args.repeats,
            )
            print(
                f"{label}: {len(group)} files, {size / 1e6:.1f} MB, {raw_n} records, "
                f"median of {args.repeats}"
            )
            print(
                f"  {'':34s} {'wall s':>8s} {'rec/s':>9s} {'x raw':>6s} {'CPU s':>8s} {'x raw':>6s}"
            )
            for name, w, c in (
                ("raw pyevtx-rs iteration", raw_w, raw_c),
                ("read_evtx(rust) + parquet", rd_w, rd_c),
                (f"  same, event_ids filter ({f_n} kept)", f_w, f_c),
            ):
                print(
                    f"  {name:34s} {w:8.3f} {raw_n / w:9.0f} {raw_w / w:6.2f} "
                    f"{c:8.3f} {raw_c / c:6.2f}"
                )
            if rd_n != raw_n:
                print(f"  NOTE: the reader yielded {rd_n} rows, raw iteration {raw_n} records")
        small = [corpus_root() / SMALL_PYTHON_SAMPLE]
        [(py_w, _, py_n)] = _medians(
            [lambda: reader_pass(small, out, ReadSettings(engine="python"))], args.repeats
        )
    print(f"read_evtx(python), 1 small file: {py_n / py_w:.0f} rec/s ({py_n} records)")


if __name__ == "__main__":
    main()
