"""Every CSV lmtrace writes: formula-safe, one time format, and the Excel form.

The CSVs are the analysis tables (migrations, blocked, machines), the export, the
``events``/``files`` output and a batch's summary. Each is written here from the
example analysis with log text a spreadsheet would run as a formula, then read back
with Python's csv module as Excel would read the cells.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.batch import SUMMARY_SCHEMA, write_summary
from pipeline.cli import app
from pipeline.csv_tables import BOM
from pipeline.outputs import write_outputs

FORMULAS = ("=1+2", "-2+3", "+cmd|' /C calc'!A0", "@SUM(A1)", "\tx", "\rx")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
EXCEL = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
ANY_TIME = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d[^ ]*$")  # a time, not words
runner = CliRunner()


def _cells(data: bytes) -> list[str]:
    text = data.decode("utf-8")
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _check(name: str, data: bytes, times: re.Pattern[str]) -> int:
    """No cell a spreadsheet runs as a formula; every time cell in one format."""
    timed = 0
    for cell in _cells(data):
        if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
            assert _number(cell), f"{name}: {cell!r}"
        if ANY_TIME.match(cell):
            assert times.match(cell), f"{name}: {cell!r}"
            timed += 1
    return timed


@pytest.fixture(scope="module")
def hostile_tables(example_analysis, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's tables with formula text in names the logs control."""
    analysis = example_analysis("quarantine-bug")
    result = analysis.result
    migrations = result.migrations.with_columns(
        pl.lit(FORMULAS[0]).alias("vm_name"), pl.lit(FORMULAS[1]).alias("source")
    )
    machines = result.machines.with_columns(pl.lit(FORMULAS[2]).alias("computer"))
    blocked = result.blocked.with_columns(pl.lit(FORMULAS[3]).alias("remote_address"))
    hostile = replace(result, migrations=migrations, machines=machines, blocked=blocked)
    out = tmp_path_factory.mktemp("tables")
    write_outputs(hostile, out / "plain", analysis.files)
    write_outputs(hostile, out / "excel", analysis.files, excel=True)
    return out


@pytest.mark.parametrize("table", ["migrations", "blocked", "machines"])
def test_analysis_tables_are_formula_safe_in_one_time_format(
    hostile_tables: Path, table: str
) -> None:
    data = (hostile_tables / "plain" / f"{table}.csv").read_bytes()
    assert not data.startswith(BOM)
    assert _check(table, data, ISO) > 0 or table == "machines"
    assert any(cell.startswith("'") for cell in _cells(data))  # the formula was disarmed


@pytest.mark.parametrize("table", ["migrations", "blocked", "machines"])
def test_excel_form_has_a_bom_and_excel_times(hostile_tables: Path, table: str) -> None:
    data = (hostile_tables / "excel" / f"{table}.csv").read_bytes()
    assert data.startswith(BOM)
    assert _check(table, data[len(BOM) :], EXCEL) > 0 or table == "machines"


def test_export_events_files_and_summary_share_the_format(example_analysis, tmp_path: Path) -> None:
    out = example_analysis("quarantine-bug").out
    plain, excel = tmp_path / "case.csv", tmp_path / "case-excel.csv"
    for target, extra in ((plain, []), (excel, ["--excel"])):
        run = runner.invoke(
            app, ["export", str(out), "--format", "csv", "--out", str(target), *extra]
        )
        assert run.exit_code == 0, run.output
    assert _check("export", plain.read_bytes(), ISO) > 1000
    assert excel.read_bytes().startswith(BOM)
    assert _check("export --excel", excel.read_bytes()[len(BOM) :], EXCEL) > 1000
    for command in ("events", "files"):
        run = runner.invoke(app, [command, str(out), "--format", "csv"])
        assert run.exit_code == 0, run.output
        assert _check(command, run.stdout_bytes, ISO) > 0
    row = {k: None for k in SUMMARY_SCHEMA} | {
        "bundle": FORMULAS[0],
        "input": FORMULAS[4],
        "sha256": "ab" * 32,
        "folder": "bundles/x",
        "status": "ok",
        "error": FORMULAS[5],
    }
    write_summary(pl.DataFrame([row], schema=SUMMARY_SCHEMA), tmp_path)
    _check("summary", (tmp_path / "summary.csv").read_bytes(), ISO)
