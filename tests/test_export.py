"""Timesketch JSONL and CSV exports of a store, compared with the store itself.

The store is built by ``ingest`` from .evtx files the project's writer makes,
one of them from a computer whose name a spreadsheet would run as a formula.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from parsers.evtx_reader import ReadSettings
from parsers.evtx_writer import EventSpec, write_evtx
from pipeline.cli import app
from pipeline.export import ExportError, ExportFormat, export_store
from pipeline.ingest import ingest
from pipeline.store import EventFilter, StoreError, init_store, scan_events

FORMULA = '=HYPERLINK("http://x.example","y")'
START = datetime(2025, 3, 4, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    (root / "bundle").mkdir()
    for name, computer, count in (("a.evtx", "HV-NODE1", 700), ("b.evtx", FORMULA, 5)):
        write_evtx(
            root / "bundle" / name,
            (
                EventSpec(
                    timestamp=START + timedelta(milliseconds=250 * i),
                    provider="Microsoft-Windows-Hyper-V-VMMS",
                    event_id=20415 + i % 3,
                    channel="Microsoft-Windows-Hyper-V-VMMS-Admin",
                    computer=computer,
                    event_data=(("VmName", f"VM{i}"), ("Text", f'quote " comma , line\n{i}')),
                )
                for i in range(count)
            ),
        )
    ingest([root / "bundle"], root / "store", ReadSettings(), 1)
    return root / "store"


def test_timesketch_lines_carry_the_required_fields(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "case.jsonl"
    summary = export_store(store, ExportFormat.timesketch, out)
    events = scan_events(store).collect()
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert summary.rows == len(lines) == events.height == 705
    assert summary.without_time == 0
    for line in lines:
        assert line["message"] and line["timestamp_desc"] == "Event Recorded"
        at = datetime.fromisoformat(line["datetime"])
        assert at.utcoffset() == timedelta(0)
        assert line["timestamp"] == int(at.timestamp() * 1_000_000)
    exported = {(x["computer"], x["record_id"], x["datetime"]) for x in lines}
    stored = {
        (c, r, t.isoformat(timespec="microseconds"))
        for c, r, t in events.select("computer", "record_id", "timestamp").iter_rows()
    }
    assert exported == stored
    first = min(lines, key=lambda x: (x["computer"], x["record_id"]))
    assert json.loads(first["data"])["VmName"] in first["message"]


def test_csv_has_the_same_rows_and_disarms_formulas(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "case.csv"
    summary = export_store(store, ExportFormat.csv, out)
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert summary.rows == len(rows) == 705
    assert list(rows[0])[:3] == ["message", "datetime", "timestamp_desc"]
    formula = [r for r in rows if r["computer"].endswith(FORMULA)]
    assert len(formula) == 5
    assert all(r["computer"] == "'" + FORMULA for r in formula)
    assert not any(v.startswith(("=", "+", "@")) for r in rows for v in r.values())
    texts = {json.loads(r["data"])["Text"] for r in rows}
    assert 'quote " comma , line\n3' in texts  # quoting survives commas, quotes, newlines


def test_filters_select_what_is_exported(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "some.jsonl"
    picked = EventFilter(event_ids=frozenset({20416}), since=START + timedelta(seconds=60))
    summary = export_store(store, ExportFormat.timesketch, out, picked)
    expected = scan_events(store, picked).select(pl.len()).collect().item()
    assert summary.rows == expected > 0
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert {x["event_id"] for x in lines} == {20416}


def test_refuses_targets_that_would_harm_the_store(store: Path, tmp_path: Path) -> None:
    before = sorted(p.name for p in store.rglob("*"))
    with pytest.raises(ExportError, match="outside the store"):
        export_store(store, ExportFormat.csv, store / "events" / "x.csv")
    with pytest.raises(ExportError, match="does not exist"):
        export_store(store, ExportFormat.csv, tmp_path / "no" / "x.csv")
    with pytest.raises(ExportError, match="is a folder"):
        export_store(store, ExportFormat.csv, tmp_path)
    with pytest.raises(StoreError):
        export_store(tmp_path, ExportFormat.csv, tmp_path / "x.csv")
    assert sorted(p.name for p in store.rglob("*")) == before


def test_cli_export(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.jsonl"
    run = CliRunner().invoke(
        app, ["export", str(store), "--format", "timesketch", "--out", str(out)]
    )
    assert run.exit_code == 0, run.output
    assert "705 events as timesketch" in run.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == 705
    bad = CliRunner().invoke(app, ["export", str(store), "--out", str(store / "x.jsonl")])
    assert bad.exit_code == 2
    assert bad.output.count("\n") == 1 and "outside the store" in bad.output


def test_an_empty_store_gives_a_header_and_no_rows(tmp_path: Path) -> None:
    empty = init_store(tmp_path / "empty", EventFilter())
    summary = export_store(empty, ExportFormat.csv, tmp_path / "e.csv")
    assert summary.rows == 0
    header = (tmp_path / "e.csv").read_text(encoding="utf-8").splitlines()
    assert header == [
        "message,datetime,timestamp_desc,timestamp,computer,channel,provider,event_id,"
        "record_id,level,user_sid,data,source_path,member,file_sha256,engine"
    ]
    assert export_store(empty, ExportFormat.timesketch, tmp_path / "e.jsonl").rows == 0
    assert (tmp_path / "e.jsonl").read_bytes() == b""
