"""The catalog checked against the customer's own logs (issue 9, "Self-check").

No public Hyper-V host log exists, so host entries are inferred and the simulator
writes the same guesses. These tests give the check logs that do not fit the
catalog (a host build that names VMMS 20415's payload otherwise, a Hyper-V event no
entry knows, a catalog whose firewall sides are the wrong way round) and check that
every analysis, and ``lmtrace catalog check``, says so, and that ``--catalog`` fixes it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from graft import graft
from typer.testing import CliRunner

from parsers.evtx_writer import EventSpec, UserDataSpec
from pipeline.catalog import load_catalog
from pipeline.catalog_check import check_store
from pipeline.cli import app
from pipeline.ingest import ingest
from pipeline.simulate import simulate
from pipeline.simulate.plan import SimulateOptions
from pipeline.store import scan_events

VML = "http://www.microsoft.com/Windows/Virtualization/Events"
OTHER_BUILD = """
[[event]]
provider = "Microsoft-Windows-Hyper-V-VMMS"
event_id = 20415
kind = "migration.completed"
fields = { vm_name = "VmName", vmid = "VmId", blackout_s = "BlackoutTime" }
confidence = "seen"
source = "this customer's host (build 17763)"
"""
WRONG_SIDES = """
[[event]]
provider = "Microsoft-Windows-Security-Auditing"
channel = "Security"
event_id = 5156
kind = "wfp.allowed_connection"
confidence = "inferred"
source = "a wrong guess: the sides of 5152"

[event.fields]
direction = "Direction"
protocol = "Protocol"
local_address = "DestAddress"
local_port = "DestPort"
remote_address = "SourceAddress"
remote_port = "SourcePort"
"""


def _vmms(event_id: int, when: datetime, payload: dict[str, object]) -> EventSpec:
    return EventSpec(
        timestamp=when,
        provider="Microsoft-Windows-Hyper-V-VMMS",
        provider_guid="{6066f867-7ca1-4418-85fd-36e3f9c0600c}",
        event_id=event_id,
        channel="Microsoft-Windows-Hyper-V-VMMS-Admin",
        computer="HV-NODE1",
        user_data=UserDataSpec("VmlEventLog", VML, tuple(payload.items())),
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A healthy bundle whose source host also logged, twice, a 20415 the way another build
    would (named payload elements, not Parameter0-2), and an event no catalog entry knows."""
    root = tmp_path_factory.mktemp("check")
    result = simulate(SimulateOptions(scenario="healthy", seed=2, noise=60.0), root / "bundle")
    [m] = result.ground_truth["migrations"]
    end = datetime.fromisoformat(str(m["end"]).replace("Z", "+00:00"))
    other = {"VmName": m["vm_name"], "VmId": str(m["vmid"]).upper(), "BlackoutTime": "0.4"}
    graft(
        root / "bundle",
        "HV-NODE1",
        "vmms",
        [
            _vmms(20415, end + timedelta(hours=2), other),
            _vmms(20415, end + timedelta(hours=3), other),
            _vmms(20999, end + timedelta(hours=2, seconds=1), {"Parameter0": "x"}),
        ],
    )
    ingest([root / "bundle"], root / "store")
    return root / "store"


def test_a_field_another_build_names_otherwise_is_reported(store: Path) -> None:
    problems = check_store(scan_events(store), load_catalog()).problems()
    assert any(
        p.startswith("Microsoft-Windows-Hyper-V-VMMS 20415") and "Parameter2 empty in 2" in p
        for p in problems
    ), problems
    assert any("20999" in p and "no catalog entry knows" in p for p in problems)


def test_the_correcting_catalog_makes_the_misfit_go(store: Path, tmp_path: Path) -> None:
    extra = tmp_path / "build17763.toml"
    extra.write_text(OTHER_BUILD, encoding="utf-8")
    problems = check_store(scan_events(store), load_catalog([extra])).problems()
    assert not any("20415" in p for p in problems), problems


def test_firewall_sides_the_wrong_way_round_are_noticed(store: Path, tmp_path: Path) -> None:
    """With the sides of 5156 guessed wrong, inbound connections seem to come *from* a
    service port *to* an ephemeral one: the check says the sides may be swapped."""
    assert not [
        p for p in check_store(scan_events(store), load_catalog()).problems() if "sides" in p
    ]
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(WRONG_SIDES, encoding="utf-8")
    problems = check_store(scan_events(store), load_catalog([wrong])).problems()
    assert any(
        p.startswith("Microsoft-Windows-Security-Auditing 5156") and "sides" in p for p in problems
    )


def test_the_command_prints_the_misfits_and_exits_1(store: Path) -> None:
    done = CliRunner().invoke(app, ["catalog", "check", str(store), "--format", "json"])
    assert done.exit_code == 1, done.output
    assert "misfit: Microsoft-Windows-Hyper-V-VMMS 20415" in done.output


def test_every_analysis_reports_the_check(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["correlate", str(store), "--out", str(out)])
    assert done.exit_code == 0, done.output
    doc = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    assert any("20415" in p for p in doc["catalog_check"]["problems"])
