"""Faults a customer's machine and a customer's bundle bring: kill -9, a full or read-only
disk, names that are not UTF-8 or carry control characters, records lost without a word.

Every test here runs the real pipeline on real bytes (the shipped example bundle,
zipped; corpus files; writer-made files and their mutated copies). A kill -9 hits
the process at a named step (tests/kill_driver.py), never after a guessed sleep.
A full or read-only disk is a real small tmpfs where the machine lets the test
mount one (tests/disks.py says how it is simulated elsewhere).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import polars as pl
import psutil
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.ingest import ingest
from pipeline.store import StoreError, scan_events, scan_files

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "bundles" / "quarantine-bug"
DRIVER = str(ROOT / "tests" / "kill_driver.py")
LMTRACE = str(Path(sys.executable).with_name("lmtrace"))


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(folder).as_posix())
    return archive


@pytest.fixture(scope="module")
def bundle_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped quarantine-bug bundle as a zip: reading it extracts into the store."""
    return zip_folder(EXAMPLE, tmp_path_factory.mktemp("zip") / "case.zip")


def store_content(store: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The events and files tables in a fixed order, without run-dependent columns."""
    events = scan_events(store).collect()
    files = scan_files(store).collect().drop("seconds")
    return events.sort(events.columns, nulls_last=True), files.sort(
        "source_path", "member", "sha256", nulls_last=True
    )


@pytest.fixture(scope="module")
def clean_store(bundle_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("clean") / "store"
    ingest([bundle_zip], store, jobs=1)
    return store


# ----- kill -9, locks, scratch and stores left incomplete


def test_a_live_ingest_holds_the_store_and_a_dead_ones_lock_is_taken_over(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    ingest([EXAMPLE / "HV-NODE1"], store)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (store / ".lock").write_text(str(sleeper.pid))
        with pytest.raises(StoreError, match=rf"another ingest \(process {sleeper.pid}\)"):
            ingest([EXAMPLE / "HV-NODE2"], store)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert ingest([EXAMPLE / "HV-NODE2"], store).exit_code == 0
    assert not (store / ".lock").exists()


def run_until(moment: str, args: list[str], marker: Path) -> subprocess.Popen[bytes]:
    """Start ``lmtrace args`` and return once it holds at ``moment`` (still running)."""
    process = subprocess.Popen(
        [sys.executable, DRIVER, moment, str(marker), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"ended before {moment}: {process.stderr.read().decode()}")
        assert time.monotonic() < deadline, f"never reached {moment}"
        time.sleep(0.02)
    return process


def kill_9(process: subprocess.Popen[bytes]) -> None:
    """kill -9 the lmtrace process alone (not its group, as a user's kill PID does);
    assert that none of the processes it started outlives it."""
    family = psutil.Process(process.pid).children(recursive=True)
    process.kill()
    process.wait()
    _, alive = psutil.wait_procs(family, timeout=30)
    for orphan in alive:
        orphan.kill()
    assert not alive, f"processes left running after kill -9: {[p.pid for p in alive]}"


def assert_said_incomplete(store: Path, tmp_path: Path) -> None:
    """Every command that reads the store warns on stderr; correlate also exits 1 and
    writes the reason into findings.json."""
    runner = CliRunner()
    for args in (
        ["events", str(store)],
        ["files", str(store)],
        ["export", str(store), "--out", str(tmp_path / "x.csv"), "--format", "csv"],
        ["timeline", str(store), "--out", str(tmp_path / "t.html")],
        ["correlate", str(store), "--out", str(tmp_path / "c")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == (1 if args[0] == "correlate" else 0), result.output
        assert f"lmtrace: warning: {store}: the store is incomplete: " in result.stderr, args
    findings = json.loads((tmp_path / "c" / "findings.json").read_text(encoding="utf-8"))
    assert "an ingest started at" in findings["integrity"]["store_incomplete"]


KILLS = [
    ("ingest", "extracted"),
    ("ingest", "reading"),
    ("ingest", "committed"),
    ("analyze", "reading"),
    ("analyze", "reporting"),
]


@pytest.mark.parametrize(("command", "moment"), KILLS, ids=[f"{c}-{m}" for c, m in KILLS])
def test_kill_9_then_a_plain_rerun(
    command: str, moment: str, bundle_zip: Path, clean_store: Path, tmp_path: Path
) -> None:
    """kill -9 at a step: no process outlives the run; the same command again leaves no
    scratch and no lock, and a store equal to a clean ingest's."""
    out = tmp_path / "out"
    store = out if command == "ingest" else out / "store"
    args = [command, str(bundle_zip), "--out", str(out), "--jobs", "2", "--quiet"]
    kill_9(run_until(moment, args, tmp_path / "marker"))
    if moment == "committed":  # the store was changed: it says so until redone
        assert_said_incomplete(store, tmp_path)

    rerun = subprocess.run([LMTRACE, *args], capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert sorted(p.name for p in store.iterdir()) == ["events", "files", "store.json"]
    for table in ("events", "files"):
        assert all(p.name.startswith("part-") for p in (store / table).iterdir())
    events, files = store_content(store)
    clean_events, clean_files = store_content(clean_store)
    assert events.equals(clean_events)
    assert files.equals(clean_files)


def test_a_store_left_incomplete_is_reported_by_the_next_analysis(
    bundle_zip: Path, tmp_path: Path
) -> None:
    """An analysis of other inputs into the same --out does not complete the killed run's
    inputs: its report, findings and exit code say that the store is incomplete."""
    out = tmp_path / "out"
    args = ["analyze", str(bundle_zip), "--out", str(out), "--jobs", "1", "--quiet"]
    kill_9(run_until("committed", args, tmp_path / "marker"))
    result = CliRunner().invoke(app, ["analyze", str(EXAMPLE / "HV-NODE1"), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert f"lmtrace: warning: {out}: the store is incomplete: " in result.stderr
    assert str(bundle_zip) in result.stderr
    assert "**Warning:** the store is incomplete: an ingest started at" in (
        out / "report.md"
    ).read_text(encoding="utf-8")
    assert "the store is incomplete" in (out / "report.html").read_text(encoding="utf-8")
    again = CliRunner().invoke(app, ["analyze", str(bundle_zip), "--out", str(out), "-q"])
    assert again.exit_code == 0, again.output
    assert "incomplete" not in again.stderr + (out / "report.md").read_text(encoding="utf-8")
