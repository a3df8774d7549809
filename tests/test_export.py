"""Timesketch JSONL and CSV exports of a store, compared with the store itself.

The store is built by ``ingest`` from .evtx files the project's writer makes,
one of them from a computer whose name a spreadsheet would run as a formula.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from typer.testing import CliRunner

from parsers.evtx_reader import ReadSettings
from parsers.evtx_writer import EventSpec, write_evtx
from parsers.model import EventFilter
from pipeline import __version__
from pipeline.cli import app
from pipeline.export import CSV_COLUMNS, ExportError, ExportFormat, export_store
from pipeline.ingest import ingest
from pipeline.store import StoreError, init_store, scan_events
from tests.conftest import EXAMPLES

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
    exported = {
        (x["computer"], x["record_id"], datetime.fromisoformat(x["datetime"])) for x in lines
    }
    stored = set(events.select("computer", "record_id", "timestamp").iter_rows())
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
    assert header == [",".join(CSV_COLUMNS)]
    assert header[0].startswith("message,datetime,timestamp_desc,timestamp,data_type,tag,")
    assert export_store(empty, ExportFormat.timesketch, tmp_path / "e.jsonl").rows == 0
    assert (tmp_path / "e.jsonl").read_bytes() == b""


# ----- an analysis folder exported for Timesketch (the example bundle that shows the bug)

# What timesketch/lib/utils.py (read_and_validate_jsonl) requires of each line, and the
# OpenSearch-internal keys it strips (a field of ours by such a name would be lost).
TIMESKETCH_REQUIRED = ("message", "datetime", "timestamp_desc")
TIMESKETCH_STRIPPED = ("_id", "_type", "_index", "_source", "__ts_timeline_id")


@pytest.fixture(scope="module")
def analysis_export(example_analysis, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    analysis = example_analysis("quarantine-bug")
    out = tmp_path_factory.mktemp("ts") / "case.jsonl"
    run = CliRunner().invoke(app, ["export", str(analysis.out), "--out", str(out)])
    assert run.exit_code == 0, run.output
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return analysis, lines


def test_every_line_is_what_timesketchs_importer_accepts(analysis_export: tuple) -> None:
    analysis, lines = analysis_export
    stored = scan_events(analysis.out / "store").select(pl.len()).collect().item()
    assert len(lines) == stored + 4  # + a start, a completion, a window opening and closing
    for line in lines:
        assert all(line.get(k) for k in TIMESKETCH_REQUIRED), line
        assert datetime.fromisoformat(line["datetime"]).utcoffset() == timedelta(0)
        assert not set(line) & set(TIMESKETCH_STRIPPED)
        assert not any("." in key for key in line)  # a dot would nest in OpenSearch
        if "tag" in line:  # a list of strings; never null (read as the tag "None")
            assert line["tag"] and all(isinstance(t, str) for t in line["tag"])
        assert line["lmtrace_version"] == __version__


def test_the_analysis_is_in_the_timeline(analysis_export: tuple) -> None:
    analysis, lines = analysis_export
    m = analysis.result.migrations.row(0, named=True)
    facts = {x["timestamp_desc"]: x for x in lines if x["data_type"].startswith("lmtrace:")}
    assert set(facts) == {
        "Migration Start",
        "Migration Completed",
        "Quarantine Window Opened",
        "Quarantine Window Closed",
    }
    done = facts["Migration Completed"]
    assert datetime.fromisoformat(done["datetime"]) == m["end"]
    assert (
        f"blackout {m['blackout_s']} s" in done["message"] and "verdict affected" in done["message"]
    )
    closed = facts["Quarantine Window Closed"]
    assert datetime.fromisoformat(closed["datetime"]) == m["q_end"]
    assert closed["window_class"] == m["quarantine_class"] == "safety-timeout"
    assert closed["window_s"] == m["q_duration_s"] and "after 7.0 s" in closed["message"]
    assert closed["tag"] == [m["migration_id"], "verdict affected"]


def test_the_evidence_is_tagged_with_migration_and_verdict(analysis_export: tuple) -> None:
    analysis, lines = analysis_export
    m = analysis.result.migrations.row(0, named=True)
    by_ref = {(x["source_path"], x["record_id"]): x for x in lines if "source_path" in x}
    trigger = by_ref[(m["trigger_ref"]["source_path"], m["trigger_ref"]["record_id"])]
    assert trigger["tag"] == ["M001", "verdict affected", "quarantine trigger"]
    blocked = analysis.result.blocked
    tagged = [x for x in lines if "blocked inbound" in x.get("tag", [])]
    assert len(tagged) == blocked.select("source_path", "record_id").n_unique() > 0
    completed = [e for e in m["host_evidence"] if e["kind"] == "migration.completed"]
    for ref in completed:
        assert "migration" in by_ref[(ref["source_path"], ref["record_id"])]["tag"]
    untagged = sum("tag" not in x for x in lines)
    assert untagged > len(lines) / 2  # only the evidence, not every event


def test_messages_read_as_words_and_the_payload_is_searchable(analysis_export: tuple) -> None:
    _, lines = analysis_export
    drop = next(x for x in lines if x.get("event_identifier") == 5157)
    assert drop["data_type"] == "windows:evtx:record"
    assert drop["source_name"] == "Microsoft-Windows-Security-Auditing"
    assert drop["computer_name"] == drop["computer"] == "APP-VM01"
    payload = json.loads(drop["data"])
    for key, value in payload.items():  # EventData broken out, values as logged
        assert drop[key] == value
    assert payload["Direction"] == "%%14592" and "Direction: Inbound" in drop["message"]
    names = {"6": "TCP", "17": "UDP"}
    assert f"Protocol: {names[payload['Protocol']]}" in drop["message"]
    assert "{" not in drop["message"]  # no JSON blob
    firewall = [x for x in lines if x["data_type"] == "windows:firewall:log_entry"]
    assert firewall and all(x["computer_name"] == "APP-VM01" for x in firewall)
    assert all(x["message"].startswith("pfirewall.log line on APP-VM01") for x in firewall)


def test_firewall_times_placed_in_the_zone_the_guests_system_log_names(
    analysis_export: tuple, tmp_path: Path
) -> None:
    """quarantine-bug's pfirewall.log is in Berlin time. Analysed without --guest-tz, the
    analysis takes the zone from the guest's EventLog 6013; the export must place the lines
    there too (as the --guest-tz analysis stored them), not an hour off as UTC."""
    from pipeline.analyze import AnalyzeSettings, analyze

    _, given = analysis_export  # analysed with --guest-tz Europe/Berlin
    out = tmp_path / "case"
    analyze([EXAMPLES / "quarantine-bug"], out, AnalyzeSettings())
    run = CliRunner().invoke(app, ["export", str(out), "--out", str(tmp_path / "x.jsonl")])
    assert run.exit_code == 0, run.output
    assert "local times read in Europe/Berlin, the zone its System log names" in run.output

    def firewall(lines: list[dict]) -> dict[int, str]:
        rows = [x for x in lines if x["data_type"] == "windows:firewall:log_entry"]
        return {x["record_id"]: x["datetime"] for x in rows}

    lines = [json.loads(x) for x in (tmp_path / "x.jsonl").read_text("utf-8").splitlines()]
    placed = firewall(lines)
    assert placed and placed == firewall(given)
    first = next(x for x in lines if x["data_type"] == "windows:firewall:log_entry")
    local = datetime.fromisoformat(f"{first['date']}T{first['time']}")
    assert datetime.fromisoformat(first["datetime"]) == local.replace(
        tzinfo=ZoneInfo("Europe/Berlin")
    ).astimezone(timezone.utc)

    # A bare store has no analysis to take the zone from: the export says so.
    log = EXAMPLES / "quarantine-bug" / "APP-VM01" / "pfirewall.log"
    run = CliRunner().invoke(app, ["ingest", str(log), "--out", str(tmp_path / "bare")])
    assert run.exit_code == 0, run.output
    run = CliRunner().invoke(app, ["export", str(tmp_path / "bare"), "--out", str(tmp_path / "y")])
    assert run.exit_code == 0, run.output
    assert "pfirewall.log local times shown as if UTC" in run.output


def test_events_and_time_filters_see_firewall_lines_where_the_analysis_placed_them(
    tmp_path: Path,
) -> None:
    """`lmtrace events` of an analysis folder shows pfirewall.log lines at the UTC time the
    analysis placed them (08:02:32 Berlin is 07:02:32 UTC), says so, and --since/--until
    and export's filters compare that time, not the local one read as UTC."""
    from pipeline.analyze import AnalyzeSettings, analyze

    out = tmp_path / "case"
    analyze([EXAMPLES / "quarantine-bug"], out, AnalyzeSettings())
    base = ["events", str(out), "--channel", "pfirewall.log", "--format", "csv"]
    run = CliRunner().invoke(app, [*base, "--limit", "1"])
    assert run.exit_code == 0, run.output
    assert "local times read in Europe/Berlin" in run.stderr
    first = run.stdout.splitlines()[1]
    assert first.startswith("2025-03-04T07:02:32.000000Z,") and '""time"": ""08:02:32""' in first
    window = ["--since", "2025-03-04T07:02:00Z", "--until", "2025-03-04T07:02:59Z"]
    run = CliRunner().invoke(app, [*base, *window])
    assert run.exit_code == 0, run.output
    shown = run.stdout.splitlines()[1:]
    assert shown and all(line.startswith("2025-03-04T07:02:") for line in shown)
    export = tmp_path / "x.csv"
    run = CliRunner().invoke(
        app, ["export", str(out), "--out", str(export), "--format", "csv", *window]
    )
    assert run.exit_code == 0, run.output
    exported = [x for x in export.read_text("utf-8").splitlines()[1:] if "pfirewall" in x]
    assert len(exported) == len(shown)


def test_csv_tags_are_lists_timesketch_reads_as_tags(
    analysis_export: tuple, tmp_path: Path
) -> None:
    """Timesketch's CSV import (pandas) reads an empty cell as NaN and tags the event 'nan';
    it reads a cell that is a JSON list as that list. Every tag cell is one, [] untagged."""
    analysis, lines = analysis_export
    out = tmp_path / "case.csv"
    run = CliRunner().invoke(
        app, ["export", str(analysis.out), "--format", "csv", "--out", str(out)]
    )
    assert run.exit_code == 0, run.output
    with out.open(encoding="utf-8", newline="") as f:
        tags = [json.loads(row["tag"]) for row in csv.DictReader(f)]
    assert len(tags) == len(lines)
    assert all(isinstance(t, list) and all(isinstance(x, str) for x in t) for t in tags)
    assert sorted(map(tuple, filter(None, tags))) == sorted(
        tuple(x["tag"]) for x in lines if "tag" in x
    )
