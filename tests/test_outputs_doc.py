"""docs/outputs.md names every column and key an analysis writes, and nothing else.

Issue 13 asked for every output documented in one place and checked against the code
that writes it: this reads the tables of docs/outputs.md and compares them with what
an analysis of the example bundle wrote, both ways.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from pipeline.batch import SUMMARY_SCHEMA

DOC = Path(__file__).resolve().parents[1] / "docs" / "outputs.md"


def documented() -> dict[str, set[str]]:
    """Section name (the first backticked word of its heading) -> the names its table lists."""
    sections: dict[str, set[str]] = {}
    name = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            name = (re.findall(r"`([^`]+)`", line) or [line[3:]])[0].split(".")[0]
            sections[name] = set()
        elif name and line.startswith("| `"):
            first_cell = line.split("|")[1]
            sections[name] |= set(re.findall(r"`([^`]+)`", first_cell))
    return sections


@pytest.mark.parametrize("table", ["migrations", "blocked", "machines", "clock_changes"])
def test_every_written_column_is_documented_and_no_other(example_analysis, table: str) -> None:
    out = example_analysis("quarantine-bug").out
    written = set(pl.read_parquet(out / f"{table}.parquet").columns)
    assert documented()[f"{table}"] == written


def test_every_findings_key_is_documented_and_no_other(example_analysis) -> None:
    doc = json.loads((example_analysis("quarantine-bug").out / "findings.json").read_text())
    assert documented()["findings"] == set(doc)


def test_the_batch_summary_is_documented() -> None:
    assert documented()["summary"] == set(SUMMARY_SCHEMA)
