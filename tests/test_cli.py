"""The ingest, events and files commands: exit codes, streams, outputs that parse back."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import polars as pl
import pytest
from typer.core import TyperGroup, TyperOption
from typer.main import get_command
from typer.testing import CliRunner

from parsers.model import EVENT_COLUMNS, FILE_COLUMNS, EventFilter
from pipeline.cli import app
from pipeline.store import scan_events, scan_files

SYSTEM = "network/tugix456__System.evtx"
FIREWALL = (
    "network/tugix456__Microsoft-Windows-Windows_Firewall_With_Advanced_Security%4Firewall.evtx"
)
BAD_CHUNK = "parsers/omerbenamram-evtx__sample_with_a_bad_chunk_magic.evtx"

runner = CliRunner()


@pytest.fixture(scope="module")
def store(corpus_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "store"
    result = runner.invoke(
        app,
        [
            "ingest",
            str(corpus_dir / SYSTEM),
            str(corpus_dir / FIREWALL),
            "--out",
            str(out),
            "--jobs",
            "1",
            "--quiet",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["files"]["read"] == 2 and summary["events_stored"] > 0
    assert result.stderr == ""  # --quiet: no progress bar, and nothing went wrong
    return out


def test_ingest_partial_read_exits_1_and_names_the_file(corpus_dir, tmp_path):
    shutil.copyfile(corpus_dir / BAD_CHUNK, tmp_path / "damaged.evtx")
    result = runner.invoke(
        app, ["ingest", str(tmp_path / "damaged.evtx"), "--out", str(tmp_path / "s")]
    )
    assert result.exit_code == 1
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("lmtrace: partial:")]
    assert "damaged.evtx" in line and "chunk" in line
    assert "files 0 read, 1 partial" in result.stdout
    assert scan_events(tmp_path / "s").select(pl.len()).collect().item() > 0  # the rest is kept


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "{tmp}/nope.evtx", "--out", "{tmp}/s"], "nope.evtx: no such file or folder"),
        (["events", "{tmp}"], "not an lmtrace store"),
        (["files", "{tmp}/missing"], "no such store folder"),
        (["files", "{store}/store.json"], "store.json: is a file, not a store folder"),
        (
            ["events", "{store}", "--since", "last tuesday"],
            "--since: 'last tuesday' is not an ISO 8601",
        ),
    ],
)
def test_user_errors_are_one_line_and_exit_2(store, tmp_path, args, message):
    argv = [a.format(tmp=tmp_path, store=store) for a in args]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert result.stderr.startswith("lmtrace: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_inputs_holding_no_log_are_a_user_error(corpus_dir, tmp_path):
    """A wrong folder says so (exit 2) instead of reporting zero events or a verdict built
    on nothing; logs already in the store still count as logs (exit 0, nothing added)."""
    empty, notes, bomb = tmp_path / "empty", tmp_path / "notes", tmp_path / "bomb.tar.gz"
    empty.mkdir()
    notes.mkdir()
    (notes / "readme.txt").write_text("not a log\n")
    with tarfile.open(bomb, "w:gz") as tar:  # one member: 64 MiB of zeros in 65 KB
        member = tarfile.TarInfo("bomb.evtx")
        member.size = 64 << 20
        tar.addfile(member, io.BytesIO(bytes(member.size)))
    for argv, message in (
        (["ingest", str(empty), "--out", str(tmp_path / "s1")], ": the input holds no files"),
        (
            ["analyze", str(notes), "--out", str(tmp_path / "o1")],
            f"in the one file found ({notes / 'readme.txt'}: not a recognized log",
        ),
        (  # the archive cut short after its refused member is no second file
            ["analyze", str(bomb), "--out", str(tmp_path / "o2")],
            f"in the one file found ({bomb}!bomb.evtx: inflates more than 200:1",
        ),
        (
            ["analyze", str(notes), str(bomb), "--out", str(tmp_path / "o3")],
            f"among 2 files (first: {notes / 'readme.txt'}: not a recognized log",
        ),
    ):
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, result.output
        inputs = ", ".join(argv[1 : argv.index("--out")])
        assert result.stderr.startswith(f"lmtrace: error: {inputs}: no readable .evtx or")
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    shutil.copyfile(corpus_dir / SYSTEM, tmp_path / "System.evtx")
    for _ in range(2):
        again = runner.invoke(
            app, ["ingest", str(tmp_path / "System.evtx"), "--out", str(tmp_path / "s2")]
        )
        assert again.exit_code == 0, again.output
    assert "files 0 read" in again.stdout and "1 repeated" in again.stdout


def test_usage_errors_exit_2(store):
    result = runner.invoke(app, ["events", str(store), "--format", "xml"])
    assert result.exit_code == 2 and "xml" in result.stderr


def test_installed_command_prints_no_traceback(tmp_path):
    lmtrace = Path(sys.executable).parent / "lmtrace"
    done = subprocess.run([str(lmtrace), "files", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "not an lmtrace store" in done.stderr


def test_events_csv_parses_back(store):
    result = runner.invoke(
        app,
        [
            "events",
            str(store),
            "--format",
            "csv",
            "--event-id",
            "7040",
            "--event-id",
            "2004",
            "--channel",
            "SYSTEM",
        ],
    )
    assert result.exit_code == 0
    frame = pl.read_csv(io.StringIO(result.stdout), infer_schema_length=None)
    assert tuple(frame.columns) == EVENT_COLUMNS
    want = scan_events(
        store, EventFilter(event_ids=frozenset({7040, 2004}), channels=frozenset({"system"}))
    ).collect()
    assert frame.height == want.height > 0
    assert set(frame["event_id"]) == set(want["event_id"])
    assert frame["timestamp"].to_list() == sorted(frame["timestamp"].to_list())
    assert frame["timestamp"].str.ends_with("Z").all()


def test_events_jsonl_parses_back_with_limit(store):
    since = "2024-11-11 18:00"  # naive: UTC
    result = runner.invoke(
        app, ["events", str(store), "--format", "jsonl", "--since", since, "--limit", "25"]
    )
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 25
    assert all(r["timestamp"] >= "2024-11-11T18:00:00" for r in rows)
    stored = scan_events(store).collect()
    assert rows[0]["record_id"] in stored["record_id"].to_list()


def test_events_table_says_when_it_truncates(store):
    # A wide terminal, whatever runs the tests (narrow ones get name: value blocks).
    result = runner.invoke(app, ["events", str(store)], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    total = scan_events(store).select(pl.len()).collect().item()
    assert f"showing the first 100 of {total:,} events" in result.stderr
    assert "timestamp" in result.stdout and "record_id" in result.stdout


def test_files_json_and_csv_parse_back(store, corpus_dir):
    result = runner.invoke(app, ["files", str(store), "--format", "json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    stored = scan_files(store).collect()
    assert len(rows) == stored.height == 2 and set(rows[0]) == set(FILE_COLUMNS)
    by_name = {Path(r["source_path"]).name: r for r in rows}
    assert (
        by_name[Path(SYSTEM).name]["records"]
        == stored.filter(pl.col("source_path") == str(corpus_dir / SYSTEM))["records"].item()
    )
    assert by_name[Path(SYSTEM).name]["channels"] == ["System"]
    csv_result = runner.invoke(app, ["files", str(store), "--format", "csv"])
    frame = pl.read_csv(io.StringIO(csv_result.stdout))
    assert frame.height == 2 and tuple(frame.columns) == FILE_COLUMNS


def test_every_option_teaches():
    command = get_command(app)
    assert isinstance(command, TyperGroup)
    for name in ("ingest", "events", "files"):
        sub = command.commands[name]
        assert sub.help, name
        for param in sub.params:
            if isinstance(param, TyperOption):
                assert param.help, f"{name} {param.opts}"
    ingest_help = runner.invoke(app, ["ingest", "--help"]).stdout
    assert "UTC" in ingest_help and "--event-id" in ingest_help and "Exit code" in ingest_help


_LOADED_FOR = """
import sys
import tarfile
from pipeline.cli import app
try:
    app(sys.argv[1:], prog_name="lmtrace")
except SystemExit:
    pass
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize("args", [["--help"], ["files", "--help"], ["--version"]])
def test_help_loads_no_analysis_library(args):
    """A help page or the version answers in a tenth of a second: it must not load polars
    (0.2 s), plotly, the EVTX engines, the archive libraries, dask or psutil; each command
    loads them when it runs (pipeline/cli/commands.py)."""
    done = subprocess.run(
        [sys.executable, "-c", _LOADED_FOR, *args], capture_output=True, text=True, check=True
    )
    loaded = set(done.stdout.split())
    heavy = {"polars", "plotly", "evtx", "Evtx", "msgspec", "py7zr", "pyzipper", "dask"}
    assert not loaded & (heavy | {"psutil", "pydantic", "narwhals"}), sorted(loaded & heavy)
    assert {"typer", "pipeline"} <= loaded  # the check itself ran


def test_the_script_a_reading_process_runs_again_loads_no_command_line():
    """Reading processes are spawned; each runs the ``lmtrace`` script again, importing
    what it imports (pipeline/__main__.py): that must not be typer and the commands."""
    code = "import sys, pipeline.__main__; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    assert "pipeline.__main__" in loaded  # the check itself ran
    assert not {m for m in loaded if m.split(".")[0] in {"typer", "click", "rich", "polars"}}
    assert not {m for m in loaded if m.startswith("pipeline.cli")}


EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "bundles"


def test_logs_sent_in_forms_lmtrace_cannot_read_are_named_as_problems(tmp_path):
    """An XML export, a legacy .evt and symbolic links (to a log, to a folder of logs)
    were logs the customer sent: each is named on stderr, in the files table's errors and
    in the report's "What could not be read", and the run exits 1; the ground truth
    beside the logs is not a log, and stays quiet."""
    bundle = tmp_path / "bundle"
    shutil.copytree(EXAMPLES / "quarantine-bug", bundle)
    guest = bundle / "APP-VM01"
    (guest / "Security.evtx").unlink()
    (guest / "Security.xml").write_text(
        '<?xml version="1.0"?><Events><Event xmlns="http://schemas.microsoft.com/win/2004/08/'
        'events/event"><System><EventID>5152</EventID></System></Event></Events>'
    )
    (guest / "Application.evt").write_bytes(b"\x30\0\0\0LfLe" + bytes(40))
    (guest / "pfirewall.log").unlink()
    (guest / "pfirewall.log").symlink_to(EXAMPLES / "quarantine-bug/APP-VM01/pfirewall.log")
    (bundle / "HV-NODE3").symlink_to(EXAMPLES / "healthy/HV-NODE1", target_is_directory=True)
    out = tmp_path / "out"
    result = runner.invoke(app, ["analyze", str(bundle), "--out", str(out), "--jobs", "1"])
    assert result.exit_code == 1, result.output
    refused = {
        Path(path).name: reason
        for _, _, path, reason in (
            line.split(": ", 3)
            for line in result.stderr.splitlines()
            if line.startswith("lmtrace: refused: ")
        )
    }
    assert set(refused) == {"Security.xml", "Application.evt", "pfirewall.log", "HV-NODE3"}
    assert refused["Security.xml"].startswith("an event log exported as XML, not EVTX")
    assert refused["Application.evt"].startswith("a legacy .evt event log")
    assert refused["pfirewall.log"] == "symbolic link inside a folder: not followed"
    assert refused["HV-NODE3"].startswith("symbolic link to a folder inside a folder")
    listed = scan_files(out / "store").collect()
    errors = {Path(p).name: e for p, e in listed.select("source_path", "errors").rows()}
    assert {name: errors[name] for name in refused} == {n: [r] for n, r in refused.items()}
    assert errors["ground_truth.json"] == []
    report = (out / "report.html").read_text(encoding="utf-8")
    integrity = report[report.index('id="integrity"') : report.index('id="catalog"')]
    assert all(name in integrity for name in refused)
    assert "ground_truth.json" not in integrity
    doc = json.loads((out / "findings.json").read_text())["integrity"]
    assert (doc["files_refused"], doc["files_not_logs"]) == (4, 1)
