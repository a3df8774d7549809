"""An analysis folder is one case: other inputs refused, late logs added, re-read on new options.

Runs ``lmtrace analyze`` in-process on the committed example bundles, as the issue's
support engineer did: two bundles into one --out, a corrected --guest-tz, an --out that
is a file or lies inside the bundle, ``lmtrace events OUT``, and a batch over
``examples/bundles/*`` (which also matches its README.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from parsers.model import EventFilter
from pipeline.cli import app
from pipeline.store import init_store, scan_events

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "bundles"
runner = CliRunner()


def _analyze(*args: object) -> object:
    return runner.invoke(app, ["analyze", *map(str, args), "--jobs", "1", "--quiet"])


def _one_line_error(run: object, *words: str) -> None:
    assert run.exit_code == 2, run.output
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmtrace: error: "), run.stderr
    for word in words:
        assert word in lines[0]


def test_other_inputs_into_a_used_out_are_refused_then_added(tmp_path: Path) -> None:
    out = tmp_path / "case"
    bug, healthy = EXAMPLES / "quarantine-bug", EXAMPLES / "healthy"
    first = _analyze(bug, "--out", out, "--guest-tz", "Europe/Berlin")
    assert first.exit_code == 0, first.output
    before = json.loads((out / "findings.json").read_text())
    # A second customer's bundle into the same folder: refused, both ways on named.
    other = _analyze(healthy, "--out", out)
    _one_line_error(other, str(bug), str(healthy), "--add", "another --out")
    assert json.loads((out / "findings.json").read_text()) == before  # nothing changed
    # The same inputs again: fine.
    assert _analyze(bug, "--out", out, "--guest-tz", "Europe/Berlin").exit_code == 0
    # Late logs of the same case, said so: added, read as the case's logs were.
    added = _analyze(healthy, "--out", out, "--add")
    assert added.exit_code == 0, added.output
    assert "read again" not in added.stderr
    doc = json.loads((out / "findings.json").read_text())
    assert doc["inputs"] == [str(bug), str(healthy)]
    report = (out / "report.html").read_text()
    assert str(bug) in report and str(healthy) in report
    md = (out / "report.md").read_text()
    assert "**Inputs:**" in md and "healthy" in md


def test_a_case_with_an_unreadable_file_exits_1_on_every_run_and_names_it(
    tmp_path: Path,
) -> None:
    """The store holds a cut-short Security.evtx: a re-run, an --add and correlate skip
    reading it again, and still exit 1 as the first run did, naming it on stderr."""
    bundle = tmp_path / "b"
    shutil.copytree(EXAMPLES / "quarantine-bug", bundle)
    security = bundle / "APP-VM01" / "Security.evtx"
    security.write_bytes(
        (EXAMPLES / "quarantine-bug" / "APP-VM01" / "Security.evtx").read_bytes()[:300_000]
    )
    out = tmp_path / "case"

    def named_once(run: object, earlier: bool) -> None:
        lines = [line for line in run.stderr.splitlines() if str(security) in line]
        assert len(lines) == 1 and lines[0].startswith("lmtrace: partial: "), run.stderr
        assert "chunk cut short" in lines[0]
        assert ("as an earlier run read it" in lines[0]) == earlier

    first = _analyze(bundle, "--out", out)
    assert first.exit_code == 1, first.output
    named_once(first, earlier=False)
    again = _analyze(bundle, "--out", out)
    assert again.exit_code == 1, again.output
    named_once(again, earlier=True)
    assert json.loads((out / "findings.json").read_text())["integrity"]["files_with_problems"] == 1
    added = _analyze(EXAMPLES / "healthy", "--out", out, "--add")
    assert added.exit_code == 1, added.output
    named_once(added, earlier=True)
    correlated = runner.invoke(app, ["correlate", str(out), "--out", str(tmp_path / "c")])
    assert correlated.exit_code == 1, correlated.output
    named_once(correlated, earlier=True)


def test_a_corrected_guest_zone_reads_the_logs_again(tmp_path: Path) -> None:
    """pfirewall.log read as UTC, then with its real zone: the rows move by an hour."""
    out = tmp_path / "case"
    bundle = EXAMPLES / "quarantine-bug"

    def firewall_times() -> pl.Series:
        rows = scan_events(out / "store").filter(pl.col("provider") == "pfirewall.log")
        return rows.select("timestamp").collect()["timestamp"].sort()

    first = _analyze(bundle, "--out", out, "--guest-tz", "UTC")
    assert first.exit_code == 0, first.output
    utc = firewall_times()
    again = _analyze(bundle, "--out", out, "--guest-tz", "Europe/Berlin")
    assert again.exit_code == 0, again.output
    assert "read again" in again.stderr and "--guest-tz UTC -> Europe/Berlin" in again.stderr
    berlin = firewall_times()
    assert len(berlin) == len(utc) > 0
    assert ((utc - berlin).dt.total_seconds() == 3600).all()  # Berlin is UTC+1 in March
    assert json.loads((out / "case.json").read_text())["read_options"]["guest_tz"] == (
        "Europe/Berlin"
    )


def test_out_that_is_a_file_or_inside_the_bundle_is_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _one_line_error(_analyze(EXAMPLES / "healthy", "--out", a_file), "must be a folder")
    bundle = tmp_path / "bundle"
    shutil.copytree(EXAMPLES / "healthy", bundle)
    before = sorted(p.name for p in bundle.rglob("*"))
    _one_line_error(_analyze(bundle, "--out", bundle / "out"), "inside the input")
    ingest = runner.invoke(app, ["ingest", str(bundle), "--out", str(bundle / "APP-VM01/s")])
    _one_line_error(ingest, "inside the input")
    assert sorted(p.name for p in bundle.rglob("*")) == before  # nothing written into it


@pytest.mark.parametrize("wrong", ["empty folder", "text file", "missing"])
def test_a_failed_first_run_leaves_nothing_and_the_corrected_one_runs(
    tmp_path: Path, wrong: str
) -> None:
    """Inputs that hold no log, or none at all, exit 2 before storing a row: the run takes
    away what it created (--out, its store), keeps what was there, and the corrected
    command into the same --out is a first analysis, not 'an analysis whose inputs are
    not recorded'."""
    given = tmp_path / "given"
    if wrong == "empty folder":
        given.mkdir()
    elif wrong == "text file":
        given.write_text("notes from the customer\n")
    out, kept = tmp_path / "out", tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("the user's")
    _one_line_error(_analyze(given, "--out", out), str(given))
    assert not out.exists()
    _one_line_error(_analyze(given, "--out", kept), str(given))
    assert [p.name for p in kept.iterdir()] == ["mine.txt"]
    store = tmp_path / "store"
    _one_line_error(runner.invoke(app, ["ingest", str(given), "--out", str(store)]), str(given))
    assert not store.exists()
    corrected = _analyze(EXAMPLES / "healthy", "--out", out)
    assert corrected.exit_code == 0, corrected.output
    assert json.loads((out / "case.json").read_text())["inputs"] == [str(EXAMPLES / "healthy")]


def test_an_empty_store_an_older_lmtrace_left_is_no_analysis(tmp_path: Path) -> None:
    """An older lmtrace left OUT/store made but empty after such a failure: no inputs are
    recorded because there are none, and the next run analyses into it."""
    out = tmp_path / "out"
    init_store(out / "store", EventFilter())
    run = _analyze(EXAMPLES / "healthy", "--out", out)
    assert run.exit_code == 0, run.output


def test_events_and_files_read_an_analysis_folder(example_analysis) -> None:
    out = example_analysis("healthy").out
    for command in (["events"], ["files"], ["catalog", "check"]):
        run = runner.invoke(app, [*command, str(out), "--format", "csv"])
        assert run.exit_code == 0, run.output
        assert run.stdout.count("\n") > 2


@pytest.mark.parametrize("again", [False, True], ids=["first run", "resume"])
def test_batch_skips_an_input_that_holds_no_log(tmp_path: Path, again: bool) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copytree(EXAMPLES / "host-fixed", archive / "host-fixed")
    shutil.copy(EXAMPLES / "README.md", archive / "README.md")
    args = ["batch", *map(str, sorted(archive.iterdir())), "--out", str(tmp_path / "sweep")]
    run = runner.invoke(app, [*args, "--jobs", "1"])
    if again:
        run = runner.invoke(app, [*args, "--jobs", "1"])
    assert run.exit_code == 0, run.output
    assert f"lmtrace: note: {archive / 'README.md'}: holds no .evtx" in run.stderr
    assert "1 ok, 0 partial, 0 failed" in run.stdout and "1 skipped" in run.stdout
    assert "failed:" not in run.stderr


def test_correlate_does_not_write_into_an_analysis_folder(tmp_path: Path) -> None:
    """correlate writes findings only: into an analysis folder (another case's, or its own
    with other options) it left a report and timeline disagreeing with them."""
    case, other = tmp_path / "case", tmp_path / "other"
    assert _analyze(EXAMPLES / "quarantine-bug", "--out", case).exit_code == 0
    assert _analyze(EXAMPLES / "healthy", "--out", other).exit_code == 0
    before = (other / "findings.json").read_bytes()
    for target in (other, case):
        run = runner.invoke(app, ["correlate", str(case), "--out", str(target)])
        _one_line_error(run, "holds an lmtrace analysis", "lmtrace analyze")
    assert (other / "findings.json").read_bytes() == before
    fresh = runner.invoke(app, ["correlate", str(case), "--out", str(tmp_path / "new")])
    assert fresh.exit_code == 0, fresh.output
