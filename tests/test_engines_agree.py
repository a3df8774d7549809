"""Differential test: pyevtx-rs and python-evtx give identical rows.

On every corpus file that python-evtx reads completely (MANIFEST pyevtx_errors=0,
no PARSER DIFF) and that is small (python-evtx decodes ~150 records/s), both
engines must produce the same frame, every column but ``engine``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from parsers.evtx_reader import Provenance, ReadSettings, read_evtx
from tests.conftest import corpus_root

pytestmark = pytest.mark.corpus

MAX_RECORDS = 80  # python-evtx is slow: keeps this file near 20 s


def _small_complete_files() -> list[str]:
    path = corpus_root() / "MANIFEST.tsv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [
        r["file"]
        for r in rows
        if r["kind"] == "evtx"
        and r["pyevtx_errors"] == "0"
        and "PARSER DIFF" not in r["notes"]
        and 0 < int(r["rust_records"]) <= MAX_RECORDS
    ]


def _read(path: Path, engine: str) -> pl.DataFrame:
    result = read_evtx(path, ReadSettings(engine=engine), Provenance(str(path), None, "-"))
    frame = pl.concat(list(result))
    assert result.report.engine == engine and result.report.fallback is None
    assert frame["engine"].unique().to_list() == [engine]
    return frame.drop("engine")


@pytest.mark.parametrize("name", _small_complete_files())
def test_both_engines_give_identical_rows(corpus_dir: Path, name: str) -> None:
    path = corpus_dir / name
    rust = _read(path, "rust")
    python = _read(path, "python")
    assert rust.height > 0
    assert_frame_equal(rust, python)
