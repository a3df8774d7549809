"""`lmtrace analyze` and `lmtrace correlate` as a user runs them: real processes, real bundles."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.simulate import simulate
from pipeline.simulate.plan import SimulateOptions
from tests import samples

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "bundles"


def lmtrace(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def mismatched_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    bundle = tmp_path_factory.mktemp("bundle") / "b"
    simulate(
        SimulateOptions(
            scenario="quarantine-bug", seed=21, guest_clock_offset=-12.0, name_mismatch=True
        ),
        bundle,
    )
    return bundle, json.loads((bundle / "ground_truth.json").read_text(encoding="utf-8"))


def test_analyze_prints_the_verdict_and_writes_findings(
    tmp_path: Path, mismatched_bundle: tuple[Path, dict]
) -> None:
    bundle, truth = mismatched_bundle
    done = lmtrace("analyze", bundle, "--out", tmp_path / "out", "--quiet")
    assert done.returncode == 0, done.stderr
    assert f"verdict: {truth['verdict']}" in done.stdout
    findings = json.loads((tmp_path / "out" / "findings.json").read_text(encoding="utf-8"))
    assert findings["verdict"] == truth["verdict"]
    assert findings["integrity"]["records_unreadable"] == 0
    migrations = pl.read_parquet(tmp_path / "out" / "migrations.parquet")
    assert migrations.height == len(truth["migrations"])
    assert (
        (tmp_path / "out" / "migrations.csv")
        .read_text(encoding="utf-8")
        .startswith("migration_id,")
    )
    # correlate on the store that analyze wrote gives the same verdict
    again = lmtrace("correlate", tmp_path / "out" / "store", "--out", tmp_path / "again")
    assert again.returncode == 0, again.stderr
    redo = json.loads((tmp_path / "again" / "findings.json").read_text(encoding="utf-8"))
    assert redo["verdict"] == findings["verdict"]


def test_events_whose_time_cannot_be_read_are_left_out_and_named(tmp_path: Path) -> None:
    """A host's VMMS log whose two migration events lost their time (one damaged byte)
    made two timeless migrations, and the timeline stopped on them with a traceback.
    They are left out and named; the other host's events still show the migration."""
    from tests import samples

    bundle = tmp_path / "bundle"
    shutil.copytree(EXAMPLES / "quarantine-bug", bundle)
    samples.timeless_vmms_log(bundle / "HV-NODE1")
    done = lmtrace("analyze", bundle, "--out", tmp_path / "out", "--json")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    doc = json.loads(done.stdout)
    truth = json.loads((bundle / "ground_truth.json").read_text(encoding="utf-8"))
    assert doc["verdict"] == truth["verdict"] == "affected"
    assert len(doc["migrations"]) == len(truth["migrations"])
    left_out = [n for n in doc["notes"] if "no readable time" in n]
    assert len(left_out) == 1 and left_out[0].startswith("2 event(s)")
    assert (tmp_path / "out" / "timeline.html").is_file()


def test_a_firewall_log_with_no_computer_is_said_not_a_crash(tmp_path: Path) -> None:
    """A guest folder holding only its pfirewall.log (the log names no computer, and no
    log beside it does): its rows made a machine named null, and the report stopped with
    a TypeError. They are left out and said; without the guest's logs, inconclusive."""
    bundle = tmp_path / "bundle"
    shutil.copytree(EXAMPLES / "quarantine-bug", bundle)
    for log in (bundle / "APP-VM01").glob("*.evtx"):
        log.unlink()
    done = lmtrace("analyze", bundle, "--out", tmp_path / "out", "--json")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    doc = json.loads(done.stdout)
    assert doc["verdict"] == "inconclusive"
    lines = (bundle / "APP-VM01" / "pfirewall.log").read_text().splitlines()
    rows = sum(1 for line in lines if line and not line.startswith("#"))
    (note,) = [n for n in doc["notes"] if "name no computer" in n]
    assert note.startswith(f"{rows} event(s) name no computer") and "pfirewall.log" in note


def _outcome(out: Path) -> tuple[str, list[tuple[str, int]], list[str]]:
    """The verdict, each migration's guest and blocked inbound packets, and the notes."""
    doc = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    blocked = [(m["machine"], m["blocked_inbound"]) for m in doc["migrations"]]
    return doc["verdict"], blocked, doc["notes"]


def test_a_flat_bundle_gives_the_guest_its_named_firewall_log(tmp_path: Path) -> None:
    """QA: the guest's APP-VM01-pfirewall.log in a flat folder went to hv-node1 (the
    computer that logged most there), and the verdict fell from affected to likely-affected
    with a false reason. The name in the file's name decides: the same verdict and blocked
    count as the same files in one folder per machine."""
    per_machine = tmp_path / "per-machine"
    shutil.copytree(EXAMPLES / "quarantine-bug", per_machine)
    (per_machine / "APP-VM01" / "Security.evtx").unlink()
    flat = samples.flat_bundle(
        EXAMPLES / "quarantine-bug", tmp_path / "flat", "APP-VM01-pfirewall.log"
    )
    for bundle in (per_machine, flat):
        done = lmtrace("analyze", bundle, "--out", tmp_path / f"{bundle.name}.out", "--quiet")
        assert done.returncode == 0, done.stderr
    verdict, blocked, notes = _outcome(tmp_path / "flat.out")
    assert (verdict, blocked) == _outcome(tmp_path / "per-machine.out")[:2]
    assert verdict == "affected" and blocked == [("app-vm01", 51)]
    assert [n for n in notes if n.startswith("pfirewall.log of ")] == [
        n for n in _outcome(tmp_path / "per-machine.out")[2] if n.startswith("pfirewall.log of ")
    ]


def test_a_firewall_log_several_computers_fit_is_not_guessed(tmp_path: Path) -> None:
    """The same flat folder with the log named plain pfirewall.log: three computers' logs
    lie beside it and its name names none. It is given to no one (not to the host that
    logged most), the notes name the candidates and --firewall-computer, and the verdict's
    reason says the log is no machine's. analyze --firewall-computer then decides it."""
    flat = samples.flat_bundle(EXAMPLES / "quarantine-bug", tmp_path / "flat", "pfirewall.log")
    out = tmp_path / "out"
    done = lmtrace("analyze", flat, "--out", out, "--quiet")
    assert done.returncode == 0, done.stderr
    verdict, blocked, notes = _outcome(out)
    assert verdict == "likely-affected" and blocked == [("app-vm01", 0)]
    (note,) = [n for n in notes if "where it lies names several" in n]
    assert note.startswith(f"{flat / 'pfirewall.log'} names no computer")
    assert "(app-vm01, hv-node1, hv-node2)" in note and "--firewall-computer" in note
    assert not [n for n in notes if n.startswith("pfirewall.log of hv-node")]
    reasons = json.loads((out / "findings.json").read_text(encoding="utf-8"))["reasons"]
    assert any("a pfirewall.log of the bundle is no machine's" in r for r in reasons), reasons
    assert not any("no Security log or pfirewall.log" in r for r in reasons)

    told = lmtrace("analyze", flat, "--out", out, "--quiet", "--firewall-computer", "APP-VM01")
    assert told.returncode == 0, told.stderr
    assert "--firewall-computer (none) -> APP-VM01" in told.stderr  # the logs read again
    verdict, blocked, notes = _outcome(out)
    assert verdict == "affected" and blocked == [("app-vm01", 51)]
    assert not [n for n in notes if "names no computer" in n]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("analyze", "no-such-bundle", "--out", "o"), "no-such-bundle: no such file or folder"),
        (("correlate", "not-a-store", "--out", "o"), "not-a-store: no such store folder"),
        (("analyze", ".", "--out", "o", "--clock-offset", "x"), "expected GUEST=OFFSET"),
        (("analyze", ".", "--out", "o", "--map", "absent.csv"), "cannot read the mapping file"),
        (("analyze", ".", "--out", "o", "--catalog", "absent.toml"), "cannot read catalog"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process (a process per error cost 2 s each; tests/test_cli.py runs the installed
    command once to show that no traceback reaches a real terminal either)."""
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 2
    assert message in done.stderr
    assert done.exception is None or isinstance(done.exception, SystemExit)
    assert len(done.stderr.strip().splitlines()) == 1


def test_bad_mapping_line_names_file_and_line(tmp_path: Path) -> None:
    mapping = tmp_path / "map.csv"
    mapping.write_text("APP-VM01,SQL7\nonly-one-column\n")
    argv = ["analyze", str(tmp_path), "--out", str(tmp_path / "o"), "--map", str(mapping)]
    done = CliRunner().invoke(app, argv)
    assert done.exit_code == 2
    assert f"{mapping}:2: expected 'vm name or VMID,guest host name'" in done.stderr


def invoke(*args: str | Path) -> object:
    """In-process, as the CLI runs it (the real process is shown by the first test)."""
    return CliRunner().invoke(app, [str(a) for a in args])


def test_mapping_and_clock_offset_are_used_reported_and_reused_by_timeline(
    tmp_path: Path, mismatched_bundle: tuple[Path, dict]
) -> None:
    bundle, truth = mismatched_bundle
    guest = next(m for m in truth["machines"] if m["role"] == "guest")
    mapping = tmp_path / "map.csv"
    mapping.write_text(f"# which guest is which VM\nvm,guest\n{guest['vm_name']},{guest['name']}\n")
    out = tmp_path / "out"
    done = invoke(
        "analyze", bundle, "--out", out, "--map", mapping,
        "--clock-offset", f"{guest['name']}=-12s", "--quiet", "--jobs", "1",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    row = pl.read_parquet(out / "migrations.parquet").row(0, named=True)
    assert (row["match_method"], row["offset_method"], row["clock_offset_s"]) == (
        "mapping",
        "given",
        -12.0,
    )
    (out / "timeline.html").unlink()
    again = invoke("timeline", out)
    assert again.exit_code == 0, again.output
    assert "using the correlation options saved" in again.stderr
    assert "(given)" in (out / "timeline.html").read_text(encoding="utf-8")
    # Options given on the command line replace the saved ones.
    override = invoke("timeline", out, "--tolerance", "2", "--out", tmp_path / "t.html")
    assert override.exit_code == 0, override.output
    assert "using the correlation options saved" not in override.stderr
    assert "(given)" not in (tmp_path / "t.html").read_text(encoding="utf-8")


def test_a_clock_offset_given_wrong_is_not_taken_for_a_trigger_that_did_not_fire(
    tmp_path: Path,
) -> None:
    """The example's guest logged its Netvsc 14 0.3 s after the completion; a --clock-offset
    of +300 s (a sign or unit slip) looks for it five minutes later. That proves nothing:
    inconclusive, naming the offset that would make the logged change the trigger."""
    out = tmp_path / "out"
    bundle = Path(__file__).resolve().parents[1] / "examples" / "bundles" / "quarantine-bug"
    done = invoke(
        "analyze", bundle, "--out", out, "--clock-offset", "APP-VM01=+300s", "--quiet"
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    [migration] = json.loads((out / "findings.json").read_text())["migrations"]
    assert (migration["verdict"], migration["rule"]) == ("inconclusive", "trigger-elsewhere")
    assert "--clock-offset app-vm01=+0.3s" in migration["reason"]
    assert "did not fire" not in migration["reason"]
