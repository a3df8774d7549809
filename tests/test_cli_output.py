"""What the CLI shows a person and a script: version, help, JSON, tables that fit, verdicts.

Runs the commands on the committed example bundles (analysed once per session) and
checks the text as a terminal of a given width, or a pipe, would receive it.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import typer.main
from typer.testing import CliRunner

from pipeline import __version__
from pipeline.cli import app
from pipeline.cli.output import print_verdict
from pipeline.store import scan_events, scan_files
from pipeline.wording import banner, clock_words, verdict_lines

runner = CliRunner()


def test_version_everywhere(example_analysis) -> None:
    run = runner.invoke(app, ["--version"])
    assert run.exit_code == 0 and run.stdout.splitlines()[0] == f"lmtrace {__version__}"
    assert run.stdout.splitlines()[1].startswith("EVTX rows: ")
    out = example_analysis("quarantine-bug").out
    assert json.loads((out / "findings.json").read_text())["lmtrace_version"] == __version__
    assert f"by lmtrace {__version__}" in (out / "report.html").read_text()
    assert f"by lmtrace {__version__}" in (out / "report.md").read_text()
    assert f"by lmtrace {html.escape(__version__)}." in (out / "timeline.html").read_text()


def _commands() -> dict[str, typer.main.click.Command]:
    return typer.main.get_command(app).commands  # type: ignore[attr-defined]


@pytest.mark.parametrize("argv", [[], *([name] for name in sorted(_commands()))])
def test_help_shows_flags_without_a_value(argv: list[str]) -> None:
    """``--quiet <bool>`` invites ``--quiet true``, which then reads 'true' as an input."""
    run = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "120"})
    assert run.exit_code == 0
    assert "<bool>" not in run.stdout
    assert "--help" in run.stdout


def test_analyze_json_prints_the_verdict_for_scripts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    bundle = Path(__file__).parents[1] / "examples/bundles/healthy"
    run = runner.invoke(app, ["analyze", str(bundle), "--out", str(out), "--json", "--jobs", "1"])
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout)  # the whole of stdout is one JSON document
    findings = json.loads((out / "findings.json").read_text())
    assert summary["verdict"] == findings["verdict"] == "not-affected"
    assert summary["lmtrace_version"] == __version__ and summary["exit_code"] == 0
    assert [m["migration_id"] for m in summary["migrations"]] == [
        m["migration_id"] for m in findings["migrations"]
    ]
    assert summary["migrations"][0]["reason"] == findings["migrations"][0]["reason"]
    assert str(out / "report.html") in summary["written"]


@pytest.mark.parametrize("width", ["60", "250"])
def test_files_table_never_breaks_a_path(example_analysis, width: str) -> None:
    """On an analysis folder (its store is read), in a narrow and a wide terminal."""
    out = example_analysis("quarantine-bug").out
    run = runner.invoke(app, ["files", str(out)], env={"COLUMNS": width})
    assert run.exit_code == 0, run.output
    lines = run.stdout.splitlines()
    assert max(len(line) for line in lines) <= int(width) or width == "60"
    bundle = str(Path(__file__).parents[1] / "examples/bundles/quarantine-bug")
    assert f"files under {bundle}" in run.stdout
    for path in scan_files(out / "store").collect()["source_path"]:
        relative = path[len(bundle) + 1 :]
        assert any(relative in line for line in lines), relative


@pytest.mark.parametrize("width", ["70", "250"])
def test_events_table_never_breaks_a_timestamp(example_analysis, width: str) -> None:
    out = example_analysis("quarantine-bug").out
    run = runner.invoke(app, ["events", str(out), "--limit", "20"], env={"COLUMNS": width})
    assert run.exit_code == 0, run.output
    first = scan_events(out / "store").sort("timestamp").head(20).collect()
    for at in first["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"):
        assert at in run.stdout
    if width == "250":  # wide enough: a table, one line per event
        assert (
            sum(bool(re.search(r"\d{4}-\d\d-\d\dT", line)) for line in run.stdout.splitlines())
            == 20
        )


def test_a_piped_verdict_keeps_each_command_on_one_line(
    example_analysis, capsys, monkeypatch
) -> None:
    """The no-audit example asks for auditpol commands longer than any terminal."""
    monkeypatch.setenv("COLUMNS", "40")
    analysis = example_analysis("no-audit")
    print_verdict(analysis.result, analysis.out)
    lines = capsys.readouterr().out.splitlines()
    hints = [h["how"] for h in analysis.result.summary.collect]
    assert hints and max(map(len, hints)) > 200
    for how in hints:
        assert f"  collect: {how}" in lines


def test_many_migrations_are_summed_up_not_listed() -> None:
    migrations = [
        {"vm_name": f"VM{i % 4}", "verdict": "affected" if i < 18 else "not-affected"}
        for i in range(30)
    ]
    assert banner(migrations) == "18 of 30 migrations affected, 4 VMs; 12 not affected"
    lines = verdict_lines({"reasons": [f"r{i}" for i in range(18)], "migrations": migrations})
    assert lines[0] == banner(migrations) and lines[1:4] == ["r0", "r1", "r2"]
    assert lines[4].startswith("… and 15 more")
    assert banner(migrations[:1]) is None


def test_the_guest_clock_is_worded_one_way_everywhere(example_analysis) -> None:
    analysis = example_analysis("quarantine-bug")
    row = analysis.result.migrations.row(0, named=True)
    words = clock_words(row["clock_offset_s"], row["offset_method"])
    side = "ahead of" if row["clock_offset_s"] > 0 else "behind"
    assert f"s {side} the host" in words
    assert words in (analysis.out / "report.html").read_text()
    assert clock_words(row["clock_offset_s"]) in (analysis.out / "timeline.html").read_text()
    assert "guest, shifted" not in (analysis.out / "timeline.html").read_text()


def test_no_blocked_count_where_no_guest_was_found(example_analysis, capsys) -> None:
    analysis = example_analysis("quarantine-bug")
    orphan = analysis.result.migrations.with_columns(pl.lit(None, pl.String).alias("machine"))
    from dataclasses import replace

    from pipeline.report import report_html

    print_verdict(replace(analysis.result, migrations=orphan), analysis.out)
    table = capsys.readouterr().out
    assert "│ 51 " not in table and "│ 0 " not in table
    doc = json.loads((analysis.out / "findings.json").read_text())
    for m in doc["migrations"]:
        m["machine"] = None
    page = report_html(doc)
    assert "(TCP" not in page


@pytest.mark.parametrize("argv", [["files", "{out}"], ["events", "{out}", "--format", "csv"]])
def test_a_reader_that_went_away_is_no_error(argv: list[str], example_analysis) -> None:
    """``lmtrace events OUT | head``: once head has gone, lmtrace stops without a word (it
    said 'error: <stdout>: Broken pipe' with exit 2, 'fatal'), with click's and rich's
    status for it. The pipe's reading end is closed before lmtrace writes, so every write
    fails, whatever the timing."""
    out = example_analysis("healthy").out
    read, write = os.pipe()
    os.close(read)
    args = [a.format(out=out) for a in argv]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *args], stdout=write, stderr=subprocess.PIPE,
        text=True, timeout=120,
    )  # fmt: skip
    os.close(write)
    assert done.stderr == "" and done.returncode == 1, done.stderr


def test_a_window_end_is_worded_the_same_everywhere_and_never_as_a_code(
    example_analysis, capsys
) -> None:
    """The CLI, report.md, report.html and the timeline say what closed the window, and
    what class of window it was, in the same words (quarantine.END_WORDS, CLASS_WORDS),
    and none shows the internal code for either (the terminal table's "class" column
    showed ``safety-timeout``, the timeline's hover and legend too)."""
    from pipeline.quarantine import CLASS_WORDS, END_WORDS

    analysis = example_analysis("quarantine-bug")
    print_verdict(analysis.result, analysis.out)
    shown = {
        "CLI": capsys.readouterr().out,
        **{p: (analysis.out / p).read_text() for p in ("report.md", "report.html")},
        "timeline.html": (analysis.out / "timeline.html").read_text(),
    }
    (words,) = analysis.result.migrations["end_words"].to_list()
    (code,) = analysis.result.migrations["quarantine_class"].to_list()
    assert "safety timeout" in words and code == "safety-timeout"
    for name, text in shown.items():
        assert words in html.unescape(text), name  # HTML escapes the apostrophe
        assert CLASS_WORDS[code] in html.unescape(text), name
        assert not [end for end in END_WORDS if end in text], name
        assert code not in text, name


def test_event_kinds_are_worded_the_same_in_the_reports_and_the_timeline(
    example_analysis,
) -> None:
    """A catalog kind reaches a page as words (wording.kind_words), in the reports and
    in the timeline's hover texts alike; the timeline showed ``migration.completed``."""
    from pipeline.catalog import load_catalog
    from pipeline.wording import kind_words, kind_words_expr

    codes = sorted(load_catalog().kinds)
    words = pl.select(kind_words_expr(pl.Series(codes))).to_series().to_list()
    assert words == [kind_words(code) for code in codes]  # one spelling, two forms
    out = example_analysis("quarantine-bug").out
    (m,) = json.loads((out / "findings.json").read_text())["migrations"]
    shown = {p: html.unescape((out / p).read_text()) for p in ("report.html", "timeline.html")}
    for name, text in shown.items():
        for event in m["host_evidence"]:
            assert kind_words(event["kind"]) in text, (name, event["kind"])
        assert not [code for code in codes if "." in code and code in text], name


def test_what_to_collect_is_worded_not_named_by_its_catalog_id(example_analysis) -> None:
    """report.html listed each log to collect under its catalog id (``wfp-audit``);
    both reports say what is missing and how to collect it, in words only."""
    out = example_analysis("no-audit").out
    (hint,) = json.loads((out / "findings.json").read_text())["collect"]
    assert hint["id"] == "wfp-audit"
    for name in ("report.html", "report.md"):
        text = (out / name).read_text()
        assert hint["id"] not in text, name
        assert "no 5152/5157/5156 in the guest" in text and "auditpol /set" in text, name
