"""lmtrace batch: verdicts per bundle against ground truth, resume, isolation, the CLI.

Every bundle is written by the simulator (real .evtx bytes) or built here from
real bytes (a zip of a simulated bundle, a truncated tar.gz, a hostile zip);
every analysis runs in the real child process the batch starts. Expected
verdicts and counts come from each bundle's ground_truth.json, which the
analysis never reads.
"""

from __future__ import annotations

import html
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline import __version__
from pipeline.batch import (
    SUMMARY_SCHEMA,
    BatchResult,
    BatchSettings,
    overview_html,
    run_batch,
    safe_name,
)
from pipeline.cli import app
from pipeline.simulate import SimulateOptions, simulate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "bundles"

SMALL = dict(noise=30.0, load=3.0)
HOSTILE_NAME = '<img src=x onerror="alert(1)">.zip'


def _truth(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "ground_truth.json").read_text(encoding="utf-8"))


def _zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(folder).as_posix())
    return archive


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three small simulated bundles: two folders and one as a .zip archive."""
    root = tmp_path_factory.mktemp("bundles")
    made = {}
    for seed, scenario in enumerate(("quarantine-bug", "healthy", "no-audit"), start=3):
        made[scenario] = root / scenario
        simulate(SimulateOptions(scenario=scenario, seed=seed, **SMALL), made[scenario])
    archive = _zip_folder(made.pop("no-audit"), root / "no-audit.zip")
    shutil.rmtree(root / "no-audit")
    made["no-audit.zip"] = archive
    return made


@pytest.fixture(scope="module")
def truths(bundles: dict[str, Path]) -> dict[str, dict]:
    """Ground truth per bundle name (the zip's is read from inside the archive)."""
    out = {}
    for name, path in bundles.items():
        if path.is_dir():
            out[name] = _truth(path)
        else:
            with zipfile.ZipFile(path) as z:
                out[name] = json.loads(z.read("ground_truth.json"))
    return out


def check_against_truth(summary: pl.DataFrame, truths: dict[str, dict]) -> None:
    """Verdict, migrations, affected VMs, longest quarantine and blocked count per bundle."""
    for name, truth in truths.items():
        row = summary.filter(pl.col("bundle") == name).row(0, named=True)
        assert row["status"] == "ok", row["error"]
        assert row["verdict"] == truth["verdict"], name
        assert row["migrations"] == len(truth["migrations"])
        hit = {
            m["vm_name"]
            for m in truth["migrations"]
            if m["verdict"] in ("affected", "likely-affected")
        }
        assert row["affected_vms"] == len(hit)
        durations = [q["duration_s"] for q in truth["quarantines"]]
        if durations:
            assert row["longest_quarantine_s"] == pytest.approx(max(durations), abs=0.2)
        # Blocked figures count packets (the truth's blocked attempts), where the guest's
        # logs can show them at all.
        observable = {
            m["name"]
            for m in truth["machines"]
            if m["role"] == "guest" and (m["wfp_auditing"] or truth["arguments"]["pfirewall"])
        }
        blocked = sum(
            sum(q["blocked_attempts"].values())
            for q in truth["quarantines"]
            if q["guest"] in observable
        )
        assert row["blocked_inbound"] == blocked
        assert row["files_unreadable"] == 0 and row["records_unreadable"] == 0


def _batch(inputs: list[Path], out: Path, **options: Any) -> BatchResult:
    return run_batch(inputs, out, BatchSettings(**{"jobs": 2, **options}))


def test_verdicts_equal_ground_truth_then_reuse_then_force(
    bundles: dict[str, Path], truths: dict[str, dict], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    inputs = list(bundles.values())
    first = _batch(inputs, out)
    check_against_truth(first.summary, truths)
    assert first.exit_code == 0 and first.reused == 0
    assert first.summary["bundle"].to_list() == list(bundles)  # input order
    assert (first.summary["peak_rss_mb"] > 50).all()  # measured on the child, not made up

    # The table as written: Parquet and CSV hold the same rows; every folder is under OUT.
    written = pl.read_parquet(out / "summary.parquet")
    assert written.schema == pl.Schema(SUMMARY_SCHEMA)
    assert written.equals(first.summary)
    as_csv = pl.read_csv(out / "summary.csv", schema=SUMMARY_SCHEMA)
    assert as_csv.drop("error").equals(first.summary.drop("error"))
    for row in first.summary.iter_rows(named=True):
        folder = (out / row["folder"]).resolve()
        assert folder.parent == (out / "bundles").resolve()
        result = json.loads((folder / "result.json").read_text())
        findings = json.loads((folder / "findings.json").read_text())
        assert result["sha256"] == row["sha256"] and findings["verdict"] == row["verdict"]
    page = (out / "index.html").read_text()
    for row in first.summary.iter_rows(named=True):
        assert f'href="{row["folder"]}/' in page
    assert f"Generated by lmtrace {html.escape(__version__)}." in page  # an archived page
    assert first.summary["lmtrace_version"].unique().to_list() == [__version__]

    # Nothing new: every bundle is reused and nothing is rewritten (the time this saves
    # is measured by tests/benchmarks/bench_batch.py, not here).
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("bundles/*/result.json")}
    second = _batch(inputs, out)
    assert second.reused == len(inputs)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    keep = ["bundle", "sha256", "folder", "status", "verdict", "blocked_inbound", "seconds"]
    assert second.summary.select(keep).equals(first.summary.select(keep))

    # --force analyses everything again.
    forced = _batch(inputs, out, force=True)
    assert forced.reused == 0
    assert all(p.stat().st_mtime_ns != t for p, t in mtimes.items())
    check_against_truth(forced.summary, truths)


def test_changed_bundle_is_analysed_again_the_rest_reused(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "quarantine-bug"
    shutil.copytree(bundles["quarantine-bug"], folder)
    out = tmp_path / "out"
    inputs = [folder, bundles["no-audit.zip"]]
    first = _batch(inputs, out)
    os.utime(bundles["no-audit.zip"])  # a new mtime with the same bytes: same hash
    extra = folder / "HV-NODE1" / "notes.txt"
    extra.write_text("collected again\n")  # new bytes: a new bundle
    second = _batch(inputs, out)
    rows = {r["bundle"]: r for r in second.summary.iter_rows(named=True)}
    assert rows["no-audit.zip"]["reused"] and not rows["quarantine-bug"]["reused"]
    assert rows["quarantine-bug"]["sha256"] != first.summary["sha256"][0]
    assert rows["quarantine-bug"]["verdict"] == "affected"


def _write_hostile_zip(path: Path) -> Path:
    """Members that climb out of any folder, an absolute path, and a bomb by ratio."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("../../escaped.evtx", b"ElfFile\0" + bytes(4088))
        z.writestr("/etc/absolute.evtx", b"ElfFile\0" + bytes(4088))
        z.writestr("bomb.evtx", bytes(64 << 20))
    return path


def _write_truncated_tgz(folder: Path, path: Path) -> Path:
    """A real bundle as .tar.gz, cut off halfway: a transfer that did not finish."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_corrupt_and_hostile_bundles_fail_alone(
    bundles: dict[str, Path], truths: dict[str, dict], tmp_path: Path
) -> None:
    hostile = _write_hostile_zip(tmp_path / HOSTILE_NAME)
    truncated = _write_truncated_tgz(bundles["healthy"], tmp_path / "healthy-cut.tar.gz")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04" + os.urandom(2000))
    good = bundles["quarantine-bug"]
    before = {p: p.stat().st_mtime_ns for p in (hostile, truncated, junk)}
    out = tmp_path / "out"
    result = _batch([hostile, good, truncated, junk], out)
    rows = {r["bundle"]: r for r in result.summary.iter_rows(named=True)}
    check_against_truth(result.summary, {"quarantine-bug": truths["quarantine-bug"]})
    assert result.exit_code == 1
    assert rows[HOSTILE_NAME]["status"] == "failed"
    assert "no readable" in rows[HOSTILE_NAME]["error"]
    assert rows["junk.zip"]["status"] == "failed"
    assert "not a readable zip" in rows["junk.zip"]["error"]
    cut = rows["healthy-cut.tar.gz"]
    assert cut["status"] in ("partial", "failed") and cut["error"]
    # Nothing escaped: no file outside OUT, the inputs untouched.
    assert not list(tmp_path.parent.rglob("escaped.evtx"))
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [HOSTILE_NAME, "healthy-cut.tar.gz", "junk.zip", "out"]
    )
    # The untrusted name reaches the page only escaped, and its folder name is safe.
    page = (out / "index.html").read_text()
    assert "<img" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.zip" in page
    assert rows[HOSTILE_NAME]["folder"].startswith("bundles/img_src_x_onerror_alert_1_zip-")


def test_timeout_and_memory_cap_fail_with_reason_and_are_retried_with_new_limits(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    inputs = [bundles["quarantine-bug"]]
    out = tmp_path / "out"
    timed = _batch(inputs, out, timeout_s=0.1)  # no analysis starts Python that fast
    assert timed.summary["status"].to_list() == ["failed"]
    assert "timed out after 0.1 s" in timed.summary["error"][0]
    capped = _batch(inputs, out, max_memory_mb=32)  # new limits: tried again
    assert capped.reused == 0
    assert "memory cap reached" in capped.summary["error"][0]
    again = _batch(inputs, out, max_memory_mb=32)  # same limits: the failure stands
    assert again.reused == 1 and again.summary["status"][0] == "failed"
    assert again.exit_code == 1
    assert not (out / "bundles" / ".work").exists() or not any((out / "bundles/.work").iterdir())


# Run in a fresh process: the real `lmtrace batch` command, except that the progress
# bar's "a bundle is done" event stops the batch itself, as kill -9 or a terminal's
# Ctrl-C would at that moment. Driven by the event, not by a timer, so that exactly
# one bundle is done whatever the machine's load.
_STOP_AFTER_FIRST_BUNDLE = """
import os, sys
from pipeline.cli import commands as cli
from pipeline.cli import output as cli_output
stop = int(sys.argv[1])

class StopAfterFirst(cli_output.BatchBar):
    def done(self, row):
        super().done(row)
        os.kill(os.getpid(), stop)

cli_output.BatchBar = StopAfterFirst  # the batch command takes it from cli_output when run
sys.argv = ["lmtrace", *sys.argv[2:]]
cli.app()
"""


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_run_resumes_with_what_is_left(
    bundles: dict[str, Path], truths: dict[str, dict], tmp_path: Path, stop: int
) -> None:
    """A batch stopped (kill -9, Ctrl-C) right after its first bundle is done records that
    bundle only (none as failed); after the kill, the next run does exactly the rest."""
    out = tmp_path / "out"
    args = ["batch", *map(str, bundles.values()), "--out", str(out), "--jobs", "1"]
    process = subprocess.run(
        [sys.executable, "-c", _STOP_AFTER_FIRST_BUNDLE, str(int(stop)), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if stop == signal.SIGINT:  # one line, the shell's code for Ctrl-C, no traceback
        assert process.returncode == 130, process.stderr
        assert process.stderr.strip().splitlines()[-1] == (
            "lmtrace: interrupted (the same command resumes)"
        )
        assert "Traceback" not in process.stderr
    else:
        assert process.returncode == -signal.SIGKILL
    done = {p.parent.name for p in out.glob("bundles/*/result.json")}
    assert len(done) == 1
    [folder] = done  # a bundle cut off is not recorded as failed: it has no result
    assert json.loads((out / "bundles" / folder / "result.json").read_text())["status"] == "ok"
    assert not (out / "summary.parquet").exists()
    if stop == signal.SIGINT:
        return  # what resuming does after a stop is the same after either (kill-9 shows it)
    resumed = _batch(list(bundles.values()), out)
    assert resumed.reused == 1
    assert set(resumed.summary.filter(pl.col("reused"))["folder"].str.slice(8)) == done
    check_against_truth(resumed.summary, truths)


def test_safe_names_stay_one_plain_component() -> None:
    for name in ("../../etc", "..", ".", "", "a/b\\c", "CON", "ünïcødé bundle.tar.gz", "x" * 300):
        slug = safe_name(name)
        assert slug and len(slug) <= 60
        assert set(slug) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
        assert not slug.startswith(("-", "_"))


def test_overview_links_only_reports_that_exist(tmp_path: Path) -> None:
    (tmp_path / "bundles" / "a-1").mkdir(parents=True)
    (tmp_path / "bundles" / "a-1" / "findings.json").write_text("{}")
    row = {k: None for k in SUMMARY_SCHEMA} | {
        "bundle": "a&b",
        "sha256": "ab" * 32,
        "folder": "bundles/a-1",
        "status": "ok",
    }
    missing = row | {"bundle": "c", "folder": "bundles/c-2", "status": "failed", "error": "<x>"}
    page = overview_html(pl.DataFrame([row, missing], schema=SUMMARY_SCHEMA), tmp_path)
    assert '<a href="bundles/a-1/findings.json">a&amp;b</a>' in page
    assert "bundles/c-2" not in page and "&lt;x&gt;" in page


# ----- the command line


def test_cli_exit_codes_json_and_one_line_errors(bundles: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    ok = runner.invoke(
        app, ["batch", str(bundles["quarantine-bug"]), "--out", str(out), "--json", "--jobs", "1"]
    )
    assert ok.exit_code == 0, ok.output
    document = json.loads(ok.stdout)
    assert document["ok"] == 1 and document["summary"][0]["verdict"] == "affected"

    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b" + bytes(100))
    partial = runner.invoke(
        app, ["batch", str(junk), str(bundles["quarantine-bug"]), "-o", str(out)]
    )
    assert partial.exit_code == 1
    assert f"lmtrace: failed: {junk}: " in partial.stderr
    assert "2 bundles: 1 ok, 0 partial, 1 failed (1 reused)" in partial.stdout

    missing = runner.invoke(app, ["batch", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == 2
    assert missing.stderr.strip().splitlines() == [
        f"lmtrace: error: {tmp_path / 'nope'}: no such file or folder"
    ]

    a_file = tmp_path / "file"
    a_file.write_text("x")
    bad_out = runner.invoke(app, ["batch", str(bundles["quarantine-bug"]), "--out", str(a_file)])
    assert bad_out.exit_code == 2 and "--out must be a folder" in bad_out.stderr

    inside = runner.invoke(
        app, ["batch", str(bundles["healthy"]), "--out", str(bundles["healthy"] / "out")]
    )
    assert inside.exit_code == 2 and "--out is inside the bundle" in inside.stderr
    assert not (bundles["healthy"] / "out").exists()


def test_firewall_computer_decides_a_firewall_log_several_computers_fit(tmp_path: Path) -> None:
    """A flat bundle whose pfirewall.log several computers fit: no machine's without
    --firewall-computer (the guest's drops unseen), the guest's with it, and the changed
    option analyses the bundle again rather than reuse the first result."""
    from tests import samples

    flat = samples.flat_bundle(EXAMPLES / "quarantine-bug", tmp_path / "flat", "pfirewall.log")
    out = tmp_path / "out"
    runner = CliRunner()
    runs = [([], "likely-affected", 0), (["--firewall-computer", "APP-VM01"], "affected", 51)]
    for given, verdict, blocked in runs:
        done = runner.invoke(app, ["batch", str(flat), "--out", str(out), "--json", *given])
        assert done.exit_code == 0, done.output
        (row,) = json.loads(done.stdout)["summary"]
        assert (row["status"], row["verdict"], row["blocked_inbound"]) == ("ok", verdict, blocked)


def test_a_running_batch_holds_out_and_a_dead_ones_lock_is_taken_over(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".batch.lock").write_text(str(sleeper.pid))
        held = CliRunner().invoke(app, ["batch", str(bundles["no-audit.zip"]), "-o", str(out)])
        assert held.exit_code == 2
        assert f"another lmtrace batch (process {sleeper.pid}) is writing here" in held.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    taken = CliRunner().invoke(app, ["batch", str(bundles["no-audit.zip"]), "-o", str(out)])
    assert taken.exit_code == 0, taken.output
    assert not (out / ".batch.lock").exists()
