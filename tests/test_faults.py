"""Faults a customer's machine and a customer's bundle bring: kill -9, a full or read-only
disk, names that are not UTF-8 or carry control characters, records lost without a word.

Every test here runs the real pipeline on real bytes (the shipped example bundle,
zipped; corpus files; writer-made files and their mutated copies). A kill -9 hits
the process at a named step (tests/kill_driver.py), never after a guessed sleep.
A full or read-only disk is a real small tmpfs where the machine lets the test
mount one (tests/disks.py says how it is simulated elsewhere).
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import evtx
import polars as pl
import psutil
import pytest
from typer.testing import CliRunner, Result

from parsers.evtx_layout import scan_layout
from parsers.evtx_reader import Provenance, ReadSettings, read_evtx
from pipeline.analyze import AnalyzeSettings, correlate_store
from pipeline.cli import app
from pipeline.ingest import ingest
from pipeline.names import name_bytes
from pipeline.store import StoreError, incomplete, scan_events, scan_files
from pipeline.timeline import TimelineSettings, timeline_figure
from pipeline.writes import WriteError
from tests import samples
from tests.disks import clear, leave_free, read_only, tmpfs
from tests.samples import renamed_bundle

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "bundles" / "quarantine-bug"
DRIVER = str(ROOT / "tests" / "kill_driver.py")
LMTRACE = str(Path(sys.executable).with_name("lmtrace"))
LIVE_ID = "parsers/omerbenamram-evtx__2-system-Microsoft-Windows-LiveId%4Operational.evtx"


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
        ["catalog", "check", str(store)],  # its exit code says whether the catalog fits
    ):
        result = runner.invoke(app, args)
        expected = {"correlate": (1,), "catalog": (0, 1)}.get(args[0], (0,))
        assert result.exit_code in expected, result.output
        assert f"lmtrace: warning: {store}: the store is incomplete: " in result.stderr, args
    findings = json.loads((tmp_path / "c" / "findings.json").read_text(encoding="utf-8"))
    assert "an ingest started at" in findings["integrity"]["store_incomplete"]
    page = (tmp_path / "t.html").read_text(encoding="utf-8")
    assert '<p class="warning"><b>Warning:</b> the store is incomplete: an ingest ' in page


KILLS = [  # each leaves the zip's extracted members in the store's scratch folder
    ("ingest", "reading"),
    ("ingest", "committed"),
    ("ingest", "files"),  # every event committed, the files table not written
    ("analyze", "reporting"),  # analyze reads through the same ingest (killed at "committed"
]  # in the next test): here its own steps


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
    if moment != "reporting":  # what the dead run left: its lock and its scratch
        assert (store / ".lock").is_file() and list(store.glob(".ingest-*"))
    if moment in ("committed", "files"):  # the store was changed: it says so until redone
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
    """Late logs added to the same --out do not complete the killed run's inputs: the
    report, findings and exit code say that the store is incomplete."""
    out = tmp_path / "out"
    args = ["analyze", str(bundle_zip), "--out", str(out), "--jobs", "1", "--quiet"]
    kill_9(run_until("committed", args, tmp_path / "marker"))
    late = ["analyze", str(EXAMPLE / "HV-NODE1"), "--out", str(out), "--add"]
    result = CliRunner().invoke(app, late)
    assert result.exit_code == 1, result.output
    assert f"lmtrace: warning: {out}: the store is incomplete: " in result.stderr
    assert str(bundle_zip) in result.stderr
    assert "**Warning:** the store is incomplete: an ingest started at" in (
        out / "report.md"
    ).read_text(encoding="utf-8")
    for page in ("report.html", "timeline.html"):
        assert "<b>Warning:</b> the store is incomplete" in (out / page).read_text("utf-8")
    again = CliRunner().invoke(app, ["analyze", str(bundle_zip), "--out", str(out), "-q"])
    assert again.exit_code == 0, again.output
    assert "incomplete" not in again.stderr + (out / "report.md").read_text(encoding="utf-8")
    assert "<b>Warning:</b>" not in (out / "timeline.html").read_text(encoding="utf-8")


# ----- a full disk, a read-only disk


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real 12 MiB tmpfs (skips where the machine cannot mount one)."""
    with tmpfs(tmp_path_factory.mktemp("disk") / "mnt", 12 << 20) as mounted:
        yield mounted


@pytest.fixture(scope="module")
def clean_folder_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("clean-folder") / "store"
    ingest([EXAMPLE], store, jobs=1)
    return store


def used_by(disk: Path, run: Callable[[], object]) -> int:
    """Bytes ``run`` leaves on ``disk`` (page-rounded, as the file system counts them)."""
    before = shutil.disk_usage(disk).used
    run()
    return shutil.disk_usage(disk).used - before


def test_a_full_disk_anywhere_in_an_ingest_is_one_error_and_a_store_that_says_so(
    disk: Path, clean_folder_store: Path
) -> None:
    """Fill the store's disk at many points of an ingest: each stop is one WriteError that
    names a file of the store and says "No space left on device"; the store is then as it
    was (nothing written) or marked incomplete; with space again, the same ingest completes
    it to a store equal to a clean one."""
    clear(disk)
    store = disk / "store"
    need = used_by(disk, lambda: ingest([EXAMPLE], store, jobs=1))
    failed_at: set[str] = set()
    # Evenly over the run, and densely near its end, where the last, small writes are.
    near_end = {need - d for d in (4096, 16384, 65536, 262144, 1 << 20) if d < need}
    for free in sorted(set(range(0, need, max(need // 12, 4096))) | near_end):
        clear(disk)
        filler = leave_free(disk, free)
        try:
            ingest([EXAMPLE], store, jobs=1)
        except WriteError as e:
            assert str(e).startswith(f"{disk}/") and "No space left on device" in str(e)
            assert Path(e.path).is_relative_to(store)
            failed_at.add(Path(e.path).relative_to(store).as_posix().split("-")[0])
            changed = any(any((store / t).glob("part-*")) for t in ("events", "files"))
            assert not changed or incomplete(store) is not None, f"unmarked at {e.path}"
            filler.unlink()
            assert ingest([EXAMPLE], store, jobs=1).exit_code == 0
        assert incomplete(store) is None
        events, files = store_content(store)
        clean_events, clean_files = store_content(clean_folder_store)
        assert events.equals(clean_events) and files.equals(clean_files)
    assert len(failed_at) >= 3, failed_at  # e.g. store.json, events/part, files/part


def one_error_line(result: Result, cause: str) -> str:
    """The command failed with exit 2 and said so in exactly one line naming the cause."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmtrace: error: "), result.stderr
    assert cause in lines[0], lines[0]
    return lines[0]


def test_a_full_disk_is_one_line_in_every_command_that_writes(
    disk: Path, clean_folder_store: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    clear(disk)
    store = disk / "store"
    need = used_by(disk, lambda: ingest([EXAMPLE], store, jobs=1))
    clear(disk)
    leave_free(disk, need - 4096)  # room for all but a page of the files table (3 pages)
    line = one_error_line(
        runner.invoke(app, ["ingest", str(EXAMPLE), "--out", str(store), "--jobs", "1"]),
        "No space left on device",
    )
    assert line.startswith(f"lmtrace: error: {store}/")
    said = runner.invoke(app, ["correlate", str(store), "--out", str(tmp_path / "c")])
    assert said.exit_code == 1 and "the store is incomplete: an ingest " in said.stderr

    # analyze: the store fits; the outputs do not, first the tables, then the timeline page
    for room, output in ((16 << 10, "migrations.parquet"), (1 << 20, "timeline.html")):
        clear(disk)
        leave_free(disk, need + room)
        out = disk / "analysis"
        line = one_error_line(
            runner.invoke(app, ["analyze", str(EXAMPLE), "--out", str(out), "--jobs", "1"]),
            "No space left on device",
        )
        assert line.startswith(f"lmtrace: error: {out}"), line
        assert output in line or line.startswith(f"lmtrace: error: {out}: "), line

    clear(disk)
    leave_free(disk, 0)
    for args in (
        ["correlate", str(clean_folder_store), "--out", str(disk / "c")],
        ["timeline", str(clean_folder_store), "--out", str(disk / "t.html")],
        ["export", str(clean_folder_store), "--out", str(disk / "x.jsonl")],
        ["simulate", "--scenario", "healthy", "--out", str(disk / "sim")],
    ):
        line = one_error_line(runner.invoke(app, args), "No space left on device")
        assert line.startswith(f"lmtrace: error: {disk}/"), (args[0], line)


def test_a_full_disk_met_by_reading_processes_is_one_line_without_their_tracebacks(
    disk: Path, tmp_path: Path
) -> None:
    """With --jobs 2 the reading processes stage parts on the full disk: the run stops with
    one line; they stop with it (a process given queued work after the run's manager was
    gone printed a traceback each)."""
    bundle = tmp_path / "bundle"
    for copy in range(4):  # files enough that work is queued when the disk fills
        shutil.copytree(EXAMPLE, bundle / str(copy))
    clear(disk)
    store = disk / "store"
    need = used_by(disk, lambda: ingest([bundle], store, jobs=1))
    for free in (need // 4, need // 2):
        clear(disk)
        leave_free(disk, free)
        run = subprocess.Popen(
            [LMTRACE, "ingest", str(bundle), "--out", str(store), "--jobs", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 2, stderr
        assert "Traceback" not in stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0], stderr
        # In process, where it can be seen: the ingest leaves no thread of its own running
        # when it raises. The pool's manager thread, still closing its pipe as Python's exit
        # woke it, made that exit print a traceback (1 run of the above in 30 under load).
        clear(disk)
        leave_free(disk, free)
        before = set(threading.enumerate())
        with pytest.raises(WriteError, match="No space left on device"):
            ingest([bundle], store, jobs=2)
        assert [t.name for t in set(threading.enumerate()) - before] == []


def test_a_read_only_out_is_one_line_in_every_command_that_writes(
    disk: Path, clean_folder_store: Path
) -> None:
    runner = CliRunner()
    clear(disk)
    shutil.copytree(clean_folder_store, disk / "store")
    read_only(disk)
    try:
        for args in (
            ["ingest", str(EXAMPLE), "--out", str(disk / "store"), "--jobs", "1"],
            ["ingest", str(EXAMPLE), "--out", str(disk / "new"), "--jobs", "1"],
            ["analyze", str(EXAMPLE), "--out", str(disk / "a"), "--jobs", "1"],
            ["correlate", str(disk / "store"), "--out", str(disk / "c")],
            ["timeline", str(disk / "store")],
            ["export", str(disk / "store"), "--out", str(disk / "x.csv"), "--format", "csv"],
            ["simulate", "--scenario", "healthy", "--out", str(disk / "sim")],
            ["batch", str(EXAMPLE), "--out", str(disk / "sweep"), "--jobs", "1"],
        ):
            line = one_error_line(runner.invoke(app, args), "Read-only file system")
            assert line.startswith(f"lmtrace: error: {disk}/"), line
    finally:
        read_only(disk, on=False)


def test_the_extraction_cap_has_its_own_message_and_max_extract_gib_raises_it(
    bundle_zip: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    args = ["ingest", str(bundle_zip), "--jobs", "1", "--quiet"]
    capped = runner.invoke(app, [*args, "--out", str(tmp_path / "a"), "--max-extract-gib", "1e-4"])
    assert capped.exit_code == 1, capped.output
    assert "extraction cap of 104.9 KiB for all archives together" in capped.stderr
    assert "--max-extract-gib raises the cap" in capped.stderr
    assert "free" not in capped.stderr  # not the disk: nothing about free space
    raised = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--max-extract-gib", "1"])
    assert raised.exit_code == 0, raised.output


def test_too_little_free_space_has_its_own_message_and_min_free_gib_lowers_it(
    disk: Path, bundle_zip: Path
) -> None:
    """A 12 MiB disk holds less than the 1 GiB lmtrace keeps free by default: members are
    refused for space (not for the cap, which --max-extract-gib would not change)."""
    clear(disk)
    runner = CliRunner()
    args = ["ingest", str(bundle_zip), "--jobs", "1", "--max-extract-gib", "100"]
    low = runner.invoke(app, [*args, "--out", str(disk / "a")])
    line = one_error_line(low, "not enough free disk space to extract it: ")
    assert f"MiB free on {disk}, and lmtrace keeps 1.0 GiB free" in line
    assert "lower --min-free-gib" in line and "extraction cap" not in line
    lowered = runner.invoke(app, [*args, "--out", str(disk / "b"), "--min-free-gib", "0.001"])
    assert lowered.exit_code == 0, lowered.output


def test_free_space_is_checked_apart_from_the_cap_on_any_disk(
    bundle_zip: Path, tmp_path: Path
) -> None:
    """The same separation where no small disk can be mounted: asking to keep more free
    space than any disk has refuses every member for space, whatever --max-extract-gib."""
    free = shutil.disk_usage(tmp_path).free
    args = ["ingest", str(bundle_zip), "--out", str(tmp_path / "a"), "--jobs", "1"]
    keep = f"{(free >> 30) + 1000}"
    low = CliRunner().invoke(app, [*args, "--max-extract-gib", "100", "--min-free-gib", keep])
    line = one_error_line(low, "not enough free disk space to extract it: ")
    assert f", and lmtrace keeps {keep}.0 GiB free" in line, line
    assert "lower --min-free-gib" in line and "extraction cap" not in line


# ----- names that are not UTF-8


def test_names_that_are_not_utf8_are_kept_escaped_and_shown_readably(tmp_path: Path) -> None:
    """A loose file, a file in a folder and a tar member whose names hold bytes that are not
    UTF-8: no crash, the files table is written, each name is kept losslessly (escaped,
    flagged, turned back into its bytes) and shown readably."""
    root = bytes(tmp_path)
    folder = root + b"/bundle"
    os.makedirs(folder + b"/guest\xff")
    shutil.copyfile(EXAMPLE / "APP-VM01" / "System.evtx", folder + b"/guest\xff/bad\xfe.evtx")
    loose = root + b"/loose\xfe\xff.evtx"
    shutil.copyfile(EXAMPLE / "APP-VM01" / "Security.evtx", loose)
    archive = tmp_path / "case.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(EXAMPLE / "HV-NODE1" / "System.evtx", arcname="guest/bad\udcff\udcfe.evtx")
    store = root + b"/store"
    command = [LMTRACE.encode(), b"ingest", folder, loose, bytes(archive), b"--out", store]
    done = subprocess.run([*command, b"--jobs", b"1"], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    files = scan_files(Path(os.fsdecode(store))).collect().filter(pl.col("kind") == "evtx")
    names = {
        (row["source_path"], row["member"]): row["name_escaped"]
        for row in files.iter_rows(named=True)
    }
    folder_text = f"{tmp_path}/bundle/guest\\xff/bad\\xfe.evtx"
    loose_text = f"{tmp_path}/loose\\xfe\\xff.evtx"
    assert names == {
        (folder_text, None): True,
        (loose_text, None): True,
        (str(archive), "guest/bad\\xff\\xfe.evtx"): True,
    }
    # read by the default engine, not python-evtx (100 records/s) for want of a UTF-8 path
    assert files.select("engine", pl.col("fallback").fill_null("")).unique().rows() == [
        ("rust", "")
    ]
    assert name_bytes(folder_text) == folder + b"/guest\xff/bad\xfe.evtx"
    assert name_bytes(loose_text) == loose
    assert name_bytes("guest/bad\\xff\\xfe.evtx") == b"guest/bad\xff\xfe.evtx"
    stored = scan_events(Path(os.fsdecode(store))).collect()
    assert set(stored["source_path"]) == {folder_text, loose_text, str(archive)}

    runner, text = CliRunner(), [os.fsdecode(a) for a in command[1:]]
    listed = runner.invoke(app, ["files", os.fsdecode(store), "--format", "csv"])
    assert listed.exit_code == 0 and "bad\\xff\\xfe.evtx" in listed.stdout
    again = runner.invoke(app, [*text, "--jobs", "1", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["files"]["read"] == 0


def test_an_out_or_store_path_that_is_not_utf8_is_one_error_line(
    clean_folder_store: Path, tmp_path: Path
) -> None:
    """Output and store paths are the user's, and go into polars' file lists and the pages,
    which take UTF-8 only: such a path is refused in one line (it crashed with
    UnicodeEncodeError in analyze, timeline and batch), and nothing is written."""
    runner = CliRunner()
    bad = f"{tmp_path}/out\udcff"
    for args in (
        ["analyze", str(EXAMPLE), "--out", bad],
        ["ingest", str(EXAMPLE), "--out", bad],
        ["batch", str(EXAMPLE), "--out", bad],
        ["timeline", str(clean_folder_store), "--out", f"{bad}.html"],
        ["export", str(clean_folder_store), "--out", f"{bad}.csv"],
        ["events", bad],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"lmtrace: error: {tmp_path}/out\\xff"), result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
    assert list(tmp_path.iterdir()) == []


def flagged_utf8_zip(path: Path, members: dict[bytes, Path], local_only: bool = False) -> Path:
    """A zip whose entries all carry the UTF-8 name flag (bit 11), with names that are
    whatever bytes ``members`` gives (zipfile writes only valid UTF-8 names); with
    ``local_only``, the flag is set in the local headers and not in the directory."""
    placeholders = {name: b"ab"[i : i + 1] * len(name) for i, name in enumerate(members)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, source in members.items():
            z.write(source, placeholders[name].decode())
    data = path.read_bytes()
    for name, placeholder in placeholders.items():
        assert data.count(placeholder) == 2  # the local header and the directory
        data = data.replace(placeholder, name)
    patched = bytearray(data)
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        if signature == b"PK\x01\x02" and local_only:
            continue
        at = patched.find(signature)
        while at >= 0:
            patched[at + flags_at + 1] |= 0x08  # bit 11 of the little-endian flags
            at = patched.find(signature, at + 4)
    path.write_bytes(bytes(patched))
    return path


def test_a_zip_whose_utf8_flagged_names_are_not_utf8_is_read_with_its_names_escaped(
    tmp_path: Path,
) -> None:
    """zipfile refuses a whole zip when one name flagged UTF-8 is not: its members are read
    all the same, that name kept escaped, a valid UTF-8 name kept as it is; a name flagged
    only in its local header (the directory disagrees) refuses that member alone."""
    members = {
        b"guest/bad\xff\xfe.evtx": EXAMPLE / "APP-VM01" / "System.evtx",
        "h\u00f4te/System.evtx".encode(): EXAMPLE / "HV-NODE1" / "System.evtx",
    }
    archive = flagged_utf8_zip(tmp_path / "flagged.zip", members)
    with pytest.raises(UnicodeDecodeError):
        zipfile.ZipFile(archive)  # what refused the archive before
    store = tmp_path / "store"
    done = CliRunner().invoke(app, ["ingest", str(archive), "--out", str(store), "-q"])
    assert done.exit_code == 0, done.output
    files = scan_files(store).collect().sort("member")
    assert files.select("member", "name_escaped", "records").rows() == [
        ("guest/bad\\xff\\xfe.evtx", True, 71),
        ("h\u00f4te/System.evtx", False, 149),
    ]
    assert name_bytes(files["member"][0]) == b"guest/bad\xff\xfe.evtx"
    assert archive.read_bytes().count(b"bad\xff\xfe") == 2  # the input left as it was

    members[b"host/System.evtx"] = members.pop("h\u00f4te/System.evtx".encode())
    local = flagged_utf8_zip(tmp_path / "local.zip", members, local_only=True)
    done = CliRunner().invoke(app, ["ingest", str(local), "--out", str(tmp_path / "l"), "-q"])
    assert done.exit_code == 1, done.output  # one member refused, the other read
    assert "damaged zip member: 'utf-8' codec can't decode byte 0xff" in done.stderr
    files = scan_files(tmp_path / "l").collect()
    assert files.filter(pl.col("kind") == "evtx")["records"].to_list() == [149]


# ----- control characters and other hostile text

HOSTILE_VM = 'vm\x1b]0;pwned\x07\nverdict: not-affected\u202e"[/x]'
"""An ESC sequence that retitles a terminal, a newline that prints a fake verdict line, a
right-to-left override, a quote (double-escaped in plotly once) and a rich closing tag."""
HOSTILE_HOST = "../../etc/x"
RAW = ("\x1b", "\x07", "\u202e")
SHOWN_VM = 'vm\\x1b]0;pwned\\x07\\nverdict: not-affected\\u202e"[/x]'


@pytest.fixture(scope="module")
def hostile_bundle(clean_folder_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example bundle with its VM named HOSTILE_VM and a host named ../../etc/x, and a
    damaged log whose file name holds an ESC sequence (its problem line names it)."""
    root = tmp_path_factory.mktemp("hostile")
    names = {"APP-VM01": HOSTILE_VM, "HV-NODE1": HOSTILE_HOST}
    bundle = renamed_bundle(EXAMPLE, clean_folder_store, root / "bundle", names)
    log = (EXAMPLE / "HV-NODE2" / "System.evtx").read_bytes()
    (bundle / "HV-NODE2" / "cut\x1b[2J.evtx").write_bytes(log[: len(log) - 1000])
    return bundle


def strings_in(value: object) -> Iterator[str]:
    """Every text of a plotly figure that plotly draws (``meta`` is data it never shows)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != "meta":
                yield from strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_in(item)


def test_control_characters_in_names_are_escaped_in_every_output(
    hostile_bundle: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    analysis = runner.invoke(
        app, ["analyze", str(hostile_bundle), "--out", str(out), "--jobs", "1"]
    )
    assert analysis.exit_code == 1, analysis.output  # the damaged log
    starts = [line for line in analysis.stdout.splitlines() if line.startswith("verdict")]
    assert starts == ["verdict: affected"]  # the name's newline printed no verdict line
    assert "lmtrace: partial: " in analysis.stderr and "cut\\x1b[2J.evtx" in analysis.stderr
    text_outputs = [p for p in out.glob("*.*") if p.suffix in (".md", ".html", ".csv", ".json")]
    written = {p.name: p.read_text(encoding="utf-8") for p in text_outputs}
    assert {"report.md", "report.html", "machines.csv", "findings.json"} <= set(written)
    for name, text in {**written, "stdout": analysis.stdout, "stderr": analysis.stderr}.items():
        assert not any(c in text for c in RAW), name
    assert SHOWN_VM.replace("[", "\\[").replace("]", "\\]") in written["report.md"]
    assert html.escape(SHOWN_VM) in written["report.html"]
    assert SHOWN_VM.replace('"', '""') in written["machines.csv"]  # CSV doubles quotes
    findings = json.loads(written["findings.json"])  # JSON keeps the name exactly
    assert HOSTILE_VM in {m["vm_name"] for m in findings["migrations"]}

    machines = pl.read_parquet(out / "machines.parquet")
    assert "" not in machines["machine"].to_list()
    assert HOSTILE_HOST in machines["machine"].to_list()

    # the timeline: every label and hover text, as plotly will decode them
    result = correlate_store(out / "store", AnalyzeSettings())
    texts = list(strings_in(timeline_figure(result, TimelineSettings()).to_plotly_json()))
    assert not any(c in t for t in texts for c in RAW)
    assert not any("&quot;" in t for t in texts)
    assert any(html.escape(SHOWN_VM).replace("&quot;", "&#34;") in t for t in texts)

    store = out / "store"
    for args in (
        ["events", str(store)],
        ["events", str(store), "--format", "csv"],
        ["files", str(store)],
        ["export", str(store), "--out", str(tmp_path / "x.csv"), "--format", "csv"],
    ):
        said = runner.invoke(app, args)
        assert said.exit_code == 0, said.output
        exported = tmp_path / "x.csv"
        shown = said.stdout + said.stderr
        shown += exported.read_text(encoding="utf-8") if exported.exists() else ""
        assert not any(c in shown for c in RAW), args
    lines = runner.invoke(app, ["events", str(store), "--format", "jsonl"]).stdout
    assert "\u202e" not in lines  # JSON escapes it, and the value is intact
    assert any(HOSTILE_VM in json.loads(line)["computer"] for line in lines.splitlines())


# ----- records lost without a word


@pytest.fixture(scope="module")
def five_chunks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writer-made log of 300 records in five chunks of 60 (ids 1..300)."""
    path = tmp_path_factory.mktemp("chunks") / "five-chunks.evtx"
    return samples.numbered_log(path, 300, 60)


def file_row(store: Path, name: str) -> dict:
    [row] = (
        scan_files(store)
        .filter(pl.col("source_path").str.ends_with(name))
        .collect()
        .rows(named=True)
    )
    return row


def test_a_chunk_overwritten_by_a_copy_is_reported_and_its_records_counted(
    five_chunks: Path, corpus_dir: Path, tmp_path: Path
) -> None:
    """Chunk 3 (ids 181..240) overwritten by chunk 1 (ids 61..120): read once, reported as a
    copy, and the 60 lost records counted and named in the files table."""
    mutant = samples.copied_chunk(five_chunks, tmp_path, 1, 3)
    live = samples.copied_chunk(corpus_dir / LIVE_ID, tmp_path, 2, 5)  # 16 chunks, 399 records
    lost = len(scan_layout(corpus_dir / LIVE_ID).chunks[5].record_ids)
    store = tmp_path / "store"
    assert ingest([mutant, live], store).exit_code == 1
    row = file_row(store, mutant.name)
    assert (row["records"], row["records_missing"], row["chunks_duplicated"]) == (240, 60, 1)
    assert row["errors"][0].startswith(
        "chunk 3, offset 0x31000: chunk holds the same record ids (61..120) as chunk 1: "
    )
    assert "record ids 181..240 are missing (60 records): no chunk holds them" in row["errors"]
    ids = scan_events(store).filter(pl.col("source_path") == str(mutant)).collect()
    assert sorted(ids["header_record_id"]) == [*range(1, 181), *range(241, 301)]
    row = file_row(store, live.name)
    assert (row["records"], row["records_missing"], row["chunks_duplicated"]) == (
        399 - lost,
        lost,
        1,
    )


def test_records_pyevtx_rs_skips_in_a_chunk_are_read_again_by_python_evtx(
    five_chunks: Path, tmp_path: Path
) -> None:
    """One flipped bit in the magic of chunk 2's 10th record: pyevtx-rs reads 9 of its 60
    records; python-evtx reads the other 51, kept with engine python, and the file says so."""
    mutant = samples.flipped_record_magic(five_chunks, tmp_path, 2, 9)
    store = tmp_path / "store"
    assert ingest([mutant], store).exit_code == 1
    row = file_row(store, mutant.name)
    assert row["engine"] == "rust"
    assert (row["records"], row["records_skipped"], row["records_recovered"]) == (300, 0, 51)
    assert (
        "chunk 2, offset 0x21000: pyevtx-rs read 9 of the chunk's 60 records; python-evtx "
        "read 51 more (their rows have engine python)"
    ) in row["errors"]
    read = scan_events(store).collect().sort("header_record_id")
    clean = pl.concat(read_evtx(five_chunks, ReadSettings(), Provenance("", None, "")))
    by_python = read.filter(pl.col("engine") == "python")["header_record_id"]
    assert by_python.to_list() == list(range(130, 181))
    columns = ["timestamp", "computer", "channel", "event_id", "record_id", "data"]
    assert read.select(columns).equals(clean.select(columns))


DECODED_ODDLY = [
    # (corpus file, how it was damaged, record id, what the record's issue says)
    (
        "network/tugix456__System.evtx",
        ("mutated", 110, 20),  # an element name becomes raw control bytes
        54,
        "record kept as decoded (JSON is malformed: invalid character (byte 464)): "
        "raw control characters escaped",
    ),
    (
        "parsers/omerbenamram-evtx__2-vss_0-Microsoft-Windows-RemoteDesktopServices-RdpCoreTS"
        "%4Operational.evtx",
        ("mutated", 1, 20),  # ProcessID becomes text
        6335006,
        "System Execution.ProcessID was",
    ),
    (
        "parsers/omerbenamram-evtx__Application_no_crc32.evtx",
        ("byte_set", 8009, 0x08),  # the UserID substitution's size: pyevtx-rs gives an integer
        429,
        "System Security.UserID was",
    ),
]


@pytest.mark.parametrize(("name", "damage", "record", "said"), DECODED_ODDLY)
def test_records_pyevtx_rs_decodes_are_kept_with_their_odd_fields(
    corpus_dir: Path, tmp_path: Path, name: str, damage: tuple, record: int, said: str
) -> None:
    """Every record pyevtx-rs decodes is a row, the odd field as it was (text) or null
    (a number column), and the issue says which field and what it held."""
    how, *args = damage
    mutant = getattr(samples, how)(corpus_dir / name, tmp_path, *args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        decoded = {
            r["event_record_id"]
            for r in evtx.PyEvtxParser(str(mutant), skip_errors=True).records_json()
        }
    read = read_evtx(mutant, ReadSettings(), Provenance(str(mutant), None, "-"))
    frame = pl.concat(read)
    assert decoded <= set(frame["header_record_id"])
    [issue] = [i for i in read.report.issues if i.record_id == record]
    assert said in issue.message
    row = frame.filter(pl.col("header_record_id") == record).row(0, named=True)
    if "UserID" in said:
        assert row["user_sid"] == issue.message.split("kept as '")[1].rstrip("'")
    if "ProcessID" in said:
        assert row["process_id"] is None and issue.message.endswith(": left null")
