"""lmtrace simulate: the bundles read back, match their ground truth, and look like Windows.

Every check reads the written bytes with pyevtx-rs (the default engine), never
the simulator's own objects: the ground truth is compared with what a reader
finds in the files.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import evtx
import pytest
from typer.testing import CliRunner

from parsers.pfirewall import PfirewallSettings, read_pfirewall
from parsers.time_values import parse_zone
from pipeline.simulate import SimulateError, SimulateOptions, parse_size, simulate
from pipeline.simulate.layouts import LAYOUTS
from pipeline.simulate.plan import load_presets

PRESETS = load_presets()
SCENARIOS = tuple(PRESETS)
SMALL = dict(noise=30.0, load=3.0)
INBOUND = "%%14592"


def read(path: Path) -> list[dict[str, Any]]:
    """Every record of an .evtx as a flat dict; fails the test on any unreadable record."""
    out = []
    for r in evtx.PyEvtxParser(str(path)).records_json():
        event = json.loads(r["data"])["Event"]
        system = event["System"]
        eid = system["EventID"]
        payload = event.get("EventData")
        if payload is None and event.get("UserData"):
            payload = next(iter(event["UserData"].values()))
            payload = {k: v for k, v in payload.items() if k != "#attributes"}
        out.append(
            {
                "record_id": r["event_record_id"],
                "time": datetime.fromisoformat(system["TimeCreated"]["#attributes"]["SystemTime"]),
                "provider": system["Provider"]["#attributes"]["Name"],
                "event_id": eid["#text"] if isinstance(eid, dict) else eid,
                "version": system["Version"],
                "computer": system["Computer"],
                "data": payload or {},
            }
        )
    return out


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def truth(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "ground_truth.json").read_text())


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small bundle per scenario (with pfirewall.log for the bug)."""
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for name in SCENARIOS:
        opts = SimulateOptions(scenario=name, seed=7, pfirewall=name == "quarantine-bug", **SMALL)
        simulate(opts, root / name)
        out[name] = root / name
    return out


def guest_files(bundle: Path, gt: dict[str, Any], role: str = "guest") -> dict[str, Path]:
    return {m["name"]: bundle / m["folder"] for m in gt["machines"] if m["role"] == role}


def folder_of(bundle: Path, gt: dict[str, Any], computer: str) -> Path:
    """The folder of the machine that logs ``computer`` (hosts may log their FQDN)."""
    return bundle / next(m["folder"] for m in gt["machines"] if m["name"] == computer)


def other_records(gt: dict[str, Any], guest: str) -> set[int]:
    """Record ids, in the guest's Security.evtx, of traffic the quarantine does not govern
    (the realism knobs' multicast, broadcast and loopback events), listed apart."""
    return {
        o["record_id"]
        for o in gt.get("other_inbound", [])
        if o["guest"] == guest and o["record_id"] is not None
    }


def network_guid(guest_folder: Path) -> str:
    """The domain network's Guid: the one of the guest's boot-time 10000."""
    profile = read(guest_folder / "Microsoft-Windows-NetworkProfile%4Operational.evtx")
    return next(e for e in profile if e["event_id"] == 10000)["data"]["Guid"]


def classifying(e: dict[str, Any], guid: str) -> bool:
    """An event that means "the network was classified": the network's 10000, a 2010 to a
    real profile, a 4042 with Capability >= 1 (--nla-chatter writes others too)."""
    d = e["data"]
    return (
        (e["event_id"] == 10000 and d.get("Guid") == guid)
        or (e["event_id"] == 2010 and d.get("NewProfile") in (1, 2, 4))
        or (e["event_id"] == 4042 and d.get("Capability", 0) >= 1)
    )


def classification_events(guest_folder: Path) -> list[dict[str, Any]]:
    names = ("NetworkProfile%4Operational", "NCSI%4Operational")
    events = [e for n in names for e in read(guest_folder / f"Microsoft-Windows-{n}.evtx")]
    fw = "Microsoft-Windows-Windows Firewall With Advanced Security%4Firewall.evtx"
    return sorted([*events, *read(guest_folder / fw)], key=lambda e: e["time"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_file_reads_back_and_counts_match_truth(
    bundles: dict[str, Path], scenario: str
) -> None:
    bundle = bundles[scenario]
    gt = truth(bundle)
    on_disk = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*.evtx"))
    listed = {f["path"]: f for f in gt["files"]}
    assert on_disk == sorted(p for p in listed if p.endswith(".evtx"))
    for rel in on_disk:
        events = read(bundle / rel)
        assert len(events) == listed[rel]["records"], rel
        assert [e["record_id"] for e in events] == list(range(1, len(events) + 1))
        assert (bundle / rel).stat().st_size == listed[rel]["bytes"]
    assert gt["scenario"] == scenario
    assert gt["seed"] == 7


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_verdict_is_the_one_the_scenario_is_built_for(
    bundles: dict[str, Path], scenario: str
) -> None:
    assert truth(bundles[scenario])["verdict"] == PRESETS[scenario].expect


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_blocked_inbound_in_quarantine_windows_equals_truth(
    bundles: dict[str, Path], scenario: str
) -> None:
    """Inbound 5152/5157 read inside each quarantine window are exactly the truth's."""
    bundle = bundles[scenario]
    gt = truth(bundle)
    for guest, folder in guest_files(bundle, gt).items():
        security = read(folder / "Security.evtx")
        windows = [
            (when(q["start"]), when(q["end"]), q) for q in gt["quarantines"] if q["guest"] == guest
        ]
        found = [
            e
            for e in security
            if e["event_id"] in (5152, 5157)
            and e["data"]["Direction"] == INBOUND
            and any(a <= e["time"] < b for a, b, _ in windows)
            and e["record_id"] not in other_records(gt, guest)
        ]
        expected = [b for b in gt["blocked_inbound"] if b["guest"] == guest]
        assert sorted(e["record_id"] for e in found) == sorted(b["record_id"] for b in expected)
        for _, _, q in windows:
            assert sum(q["blocked_inbound"].values()) == sum(
                1 for e in found if when(q["start"]) <= e["time"] < when(q["end"])
            )
        by_id = {e["record_id"]: e for e in found}
        for b in expected:
            e = by_id[b["record_id"]]
            assert e["event_id"] == b["event_id"]
            assert e["time"] == when(b["time"])
            # Windows names the sides per event: 5152 Source = the sender, 5157 Source = local.
            local, remote = ("Dest", "Source") if e["event_id"] == 5152 else ("Source", "Dest")
            assert e["data"][f"{local}Port"] == str(b["local_port"])
            assert e["data"][f"{remote}Address"] == b["remote_address"]
            assert e["data"][f"{remote}Port"] == str(b["remote_port"])
            assert e["data"]["Protocol"] == {"tcp": 6, "udp": 17}[b["protocol"]]


def test_quarantine_bug_shape(bundles: dict[str, Path]) -> None:
    """Netvsc 14 within 1 s after the blackout, 7 s of drops, no classification, then 5156 again."""
    bundle = bundles["quarantine-bug"]
    gt = truth(bundle)
    (m,) = gt["migrations"]
    (q,) = gt["quarantines"]
    assert q["ended_by"] == "safety-timeout"
    assert q["duration_s"] == pytest.approx(7.0, abs=1e-3)
    assert q["blocked_inbound"]["tcp"] > 0 and q["blocked_inbound"]["udp"] >= 0
    assert 0.1 <= (when(q["start_host_clock"]) - when(m["blackout_end"])).total_seconds() <= 1.0
    folder = guest_files(bundle, gt)[m["guest"]]
    system = read(folder / "System.evtx")
    (netvsc14,) = [e for e in system if e["event_id"] == 14]
    assert netvsc14["time"] == when(q["start"])
    assert netvsc14["provider"] == "Microsoft-Windows-Hyper-V-Netvsc"
    guid = network_guid(folder)
    after = [e for e in classification_events(folder) if e["time"] >= when(q["start"])]
    assert not [e for e in after if classifying(e, guid)]
    security = read(folder / "Security.evtx")
    after = [e for e in security if e["event_id"] == 5156 and e["time"] >= when(q["end"])]
    assert any(
        e["data"]["Direction"] == INBOUND and not e["data"]["SourceAddress"].startswith("127.")
        for e in after
    )


def test_healthy_ends_with_classification(bundles: dict[str, Path]) -> None:
    bundle = bundles["healthy"]
    gt = truth(bundle)
    (q,) = gt["quarantines"]
    assert q["ended_by"] == "classification"
    assert 2.0 <= q["duration_s"] <= 3.0
    folder = guest_files(bundle, gt)[q["guest"]]
    guid = network_guid(folder)
    after = [e for e in classification_events(folder) if e["time"] >= when(q["start"])]
    first = next(e for e in after if classifying(e, guid))
    assert first["time"] == when(q["end"])
    connected = [e for e in after if e["event_id"] == 10000 and e["data"]["Guid"] == guid]
    assert len(connected) == 1 and connected[0]["time"] >= when(q["end"])
    assert any(e["event_id"] == 4042 and e["time"] > when(q["end"]) for e in after)


def test_host_fixed_and_failed_migration_have_no_network_change(bundles: dict[str, Path]) -> None:
    for scenario in ("host-fixed", "failed-migration"):
        bundle = bundles[scenario]
        gt = truth(bundle)
        assert gt["quarantines"] == [] and gt["blocked_inbound"] == []
        for folder in guest_files(bundle, gt).values():
            assert not [e for e in read(folder / "System.evtx") if e["event_id"] == 14]
    gt = truth(bundles["failed-migration"])
    (m,) = gt["migrations"]
    assert m["status"] == "failed" and m["blackout_s"] is None
    source = folder_of(bundles["failed-migration"], gt, m["source"])
    vmms = read(source / "Microsoft-Windows-Hyper-V-VMMS-Admin.evtx")
    assert [e["event_id"] for e in vmms] == [20413, 21024]
    assert vmms[1]["data"]["VmId"].lower() == m["vmid"] and vmms[1]["time"] == when(m["end"])
    ha = read(source / "Microsoft-Windows-Hyper-V-High-Availability-Admin.evtx")
    assert [e["event_id"] for e in ha] == [21300, 21111]


def test_quarantine_disabled_and_no_audit(bundles: dict[str, Path]) -> None:
    gt = truth(bundles["quarantine-disabled"])
    (m,) = gt["migrations"]
    assert m["network_change"] is not None and gt["quarantines"] == []
    folder = guest_files(bundles["quarantine-disabled"], gt)[m["guest"]]
    change = when(m["network_change"])
    security = read(folder / "Security.evtx")
    window = [e for e in security if change <= e["time"] < change + timedelta(seconds=7)]
    assert {
        e["event_id"]
        for e in window
        if e["data"].get("Direction") == INBOUND
        and e["record_id"] not in other_records(gt, m["guest"])
    } == {5156}

    gt = truth(bundles["no-audit"])
    (q,) = gt["quarantines"]
    assert q["blocked_inbound"] == {"tcp": 0, "udp": 0} and sum(q["blocked_attempts"].values())
    folder = guest_files(bundles["no-audit"], gt)[q["guest"]]
    ids = Counter(e["event_id"] for e in read(folder / "Security.evtx"))
    assert not ids.keys() & {5152, 5156, 5157}
    assert ids[4624] > 0


def test_cluster_drain_overlaps_and_mixes_outcomes(bundles: dict[str, Path]) -> None:
    bundle = bundles["cluster-drain"]
    gt = truth(bundle)
    moves = gt["migrations"]
    assert {folder_of(bundle, gt, m["source"]).name for m in moves} == {"HV-NODE1"}
    assert len(moves) == 4
    assert when(moves[1]["start"]) < when(moves[0]["end"])  # two at a time
    assert {q["ended_by"] for q in gt["quarantines"]} == {"classification", "safety-timeout"}
    node1 = read(bundle / "HV-NODE1" / "System.evtx")
    assert sum(1 for e in node1 if e["event_id"] == 1153) == 4
    for m in moves:
        dest = folder_of(bundle, gt, m["destination"])
        ha = read(dest / "Microsoft-Windows-Hyper-V-High-Availability-Admin.evtx")
        vmid = m["vmid"]
        done = [e for e in ha if e["event_id"] == 21307 and e["data"]["VmId"].lower() == vmid]
        assert len(done) == 1
        worker = read(dest / "Microsoft-Windows-Hyper-V-Worker-Admin.evtx")
        blackout = [
            e for e in worker if e["event_id"] == 22509 and e["data"]["VmId"].lower() == vmid
        ]
        assert float(blackout[0]["data"]["BlackoutSeconds"]) == m["blackout_s"]


def test_host_events_carry_the_truth(bundles: dict[str, Path]) -> None:
    bundle = bundles["quarantine-bug"]
    gt = truth(bundle)
    (m,) = gt["migrations"]
    vmms = read(folder_of(bundle, gt, m["source"]) / "Microsoft-Windows-Hyper-V-VMMS-Admin.evtx")
    start, done = vmms
    assert start["event_id"] == 20413 and start["time"] == when(m["start"])
    assert {**start["data"], "Parameter1": start["data"]["Parameter1"].lower()} == {
        "Parameter0": m["vm_name"],
        "Parameter1": m["vmid"],
        "Parameter2": m["destination"],
    }
    assert done["event_id"] == (20417 if m["blackout_s"] > 1 else 20415)
    assert done["time"] == when(m["end"])
    assert float(done["data"]["Parameter2"]) == m["blackout_s"]


def simulate_small(tmp: Path, **knobs: Any) -> tuple[Path, dict[str, Any]]:
    opts = SimulateOptions(**{"scenario": "quarantine-bug", "seed": 3, **SMALL, **knobs})
    result = simulate(opts, tmp)
    return tmp, result.ground_truth


def test_clock_offset_and_drift_shift_guest_events_only(tmp_path: Path) -> None:
    base, gt0 = simulate_small(tmp_path / "a")
    skew, gt1 = simulate_small(tmp_path / "b", guest_clock_offset=-90.0, guest_clock_drift=50.0)
    guest = gt0["machines"][-1]
    assert guest["role"] == "guest" and gt1["machines"][-1]["clock_offset_s"] == -90.0
    (n0,) = [e for e in read(base / guest["folder"] / "System.evtx") if e["event_id"] == 14]
    (n1,) = [e for e in read(skew / guest["folder"] / "System.evtx") if e["event_id"] == 14]
    host_clock = when(gt1["quarantines"][0]["start_host_clock"])
    elapsed = (host_clock - when(gt1["arguments"]["start"])).total_seconds()
    expected = timedelta(seconds=-90.0 + 50e-6 * elapsed)
    assert abs((n1["time"] - n0["time"]) - expected) <= timedelta(microseconds=1)
    assert n1["time"] == when(gt1["quarantines"][0]["start"])
    host = folder_of(base, gt0, gt0["migrations"][0]["source"]).name
    vmms0 = read(base / host / "Microsoft-Windows-Hyper-V-VMMS-Admin.evtx")
    vmms1 = read(skew / host / "Microsoft-Windows-Hyper-V-VMMS-Admin.evtx")
    assert [e["time"] for e in vmms0] == [e["time"] for e in vmms1]


def test_name_mismatch(tmp_path: Path) -> None:
    bundle, gt = simulate_small(tmp_path, vms=4, migrations=4, name_mismatch=True)
    guests = [m for m in gt["machines"] if m["role"] == "guest"]
    assert all(g["name"] != g["vm_name"] for g in guests)
    assert any(g["name"].split(".")[0].upper() == g["vm_name"] for g in guests)  # FQDN form
    assert any(g["name"].split(".")[0].upper() != g["vm_name"] for g in guests)  # unrelated
    for g in guests:
        computers = {e["computer"] for e in read(bundle / g["folder"] / "System.evtx")}
        assert computers == {g["name"]}
    vm_names = {m["vm_name"] for m in gt["migrations"]}
    logged = set()
    for host in ("HV-NODE1", "HV-NODE2"):
        for e in read(bundle / host / "Microsoft-Windows-Hyper-V-VMMS-Admin.evtx"):
            logged.add(e["data"]["Parameter0"])
    assert logged == vm_names


def digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_arguments_same_bytes(tmp_path: Path) -> None:
    knobs = dict(pfirewall=True, guest_tz="Europe/Berlin", ws2022_guests=1)
    a, _ = simulate_small(tmp_path / "a", **knobs)
    b, _ = simulate_small(tmp_path / "b", **knobs)
    c, _ = simulate_small(tmp_path / "c", **{**knobs, "seed": 4})
    assert digest(a) == digest(b)
    assert digest(a)["ground_truth.json"] != digest(c)["ground_truth.json"]


def test_size_is_reached_within_five_percent(tmp_path: Path) -> None:
    target = parse_size("6MB")
    bundle, gt = simulate_small(tmp_path, size=target)
    total = sum(p.stat().st_size for p in bundle.rglob("*.evtx"))
    assert abs(total - target) <= 0.05 * target
    security = next(f for f in gt["files"] if f["path"].endswith("Security.evtx"))
    assert len(read(bundle / security["path"])) == security["records"]
    with pytest.raises(SimulateError, match="too small"):
        simulate_small(tmp_path / "tiny", size=parse_size("100KB"))


def test_parse_size() -> None:
    assert parse_size("1GB") == 1024**3
    assert parse_size("1.5 MiB") == int(1.5 * 1024**2)
    assert parse_size("4096") == 4096
    for bad in ("", "GB", "-1MB", "1TBX"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_ws2022_guest_logs_filter_origin(tmp_path: Path) -> None:
    bundle, gt = simulate_small(tmp_path, ws2022_guests=1)
    (guest,) = [m for m in gt["machines"] if m["role"] == "guest"]
    blocked = {b["record_id"] for b in gt["blocked_inbound"]}
    assert blocked
    for e in read(bundle / guest["folder"] / "Security.evtx"):
        if e["record_id"] in blocked:
            keys = list(e["data"])
            assert e["data"]["FilterOrigin"] == "Quarantine Default"
            assert keys.index("InterfaceIndex") + 1 == keys.index("FilterRTID")


def test_pfirewall_log_in_guest_local_time(tmp_path: Path) -> None:
    bundle, gt = simulate_small(tmp_path, pfirewall=True, guest_tz="America/New_York")
    (guest,) = [m for m in gt["machines"] if m["role"] == "guest"]
    path = bundle / guest["folder"] / "pfirewall.log"
    assert path.read_bytes().startswith(b"#Version: 1.5\r\n#Software: Microsoft Windows Firewall")
    frame, report = read_pfirewall(
        path, PfirewallSettings(tz=parse_zone("America/New_York")), str(path), None, ""
    )
    assert not report.partial
    (q,) = gt["quarantines"]
    start, end = when(q["start"]), when(q["end"])
    # DROP lines (record id = line number), less the multicast ones the truth lists apart.
    routine = [o["line"] for o in gt.get("other_inbound", []) if o["line"] is not None]
    drops = frame.filter((frame["event_id"] == 1) & ~frame["record_id"].is_in(routine))
    in_window = [t for t in drops["timestamp"].to_list() if start - timedelta(seconds=1) < t < end]
    assert len(in_window) == sum(q["blocked_attempts"].values())
    assert len(gt["pfirewall_drops"]) == sum(q["blocked_attempts"].values())
    lines = path.read_text().splitlines()
    for d in gt["pfirewall_drops"]:
        assert lines[d["line"] - 1].startswith(d["local_time"] + " DROP")


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    for knobs, message in (
        ({"scenario": "nope"}, "unknown scenario 'nope'; valid: cluster-drain"),
        ({"hosts": 1}, "--hosts"),
        ({"guest_tz": "Mars/Olympus"}, "--guest-tz"),
        ({"ws2022_guests": 5}, "--ws2022-guests"),
    ):
        with pytest.raises(SimulateError, match=message.replace("(", r"\(")) as err:
            simulate_small(tmp_path, **knobs)
        assert "\n" not in str(err.value)


# --- the layouts are Windows' own ---------------------------------------------------------

CORPUS_SAMPLES = (
    "parsers/omerbenamram-evtx__Security_short_selected.evtx",  # 5152, 5157
    "attack/EVTX-ATTACK-SAMPLES__DE_1102_security_log_cleared.evtx",  # 5156
    "network/EVTX-ATTACK-SAMPLES__DE_RDP_Tunnel_5156.evtx",  # 5156, 4672
    "attack/EVTX-ATTACK-SAMPLES__ImpersonateUser-via_local_Pass_The_Hash_Sysmon_and_Security.evtx",
    "attack/EVTX-ATTACK-SAMPLES__4624_LT3_AnonymousLogon_Localhost_-_JuicyPotato.evtx",  # 4634
    "parsers/omerbenamram-evtx__sample-with-zero-data-size-event.evtx",  # Netvsc
    "network/tugix456__Microsoft-Windows-NetworkProfile%4Operational.evtx",
    "network/tugix456__Microsoft-Windows-NCSI%4Operational.evtx",
    "network/selim-pusat3__Microsoft-Windows-Windows_Firewall_With_Advanced_Security%4Firewall.evtx",
    "network/tugix456__System.evtx",  # Kernel-General 16
    "parsers/plaso__System.evtx",  # Service Control Manager 7036
)


def kinds(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """Field names in order, with the JSON kind of each value."""

    def kind(v: Any) -> str:
        return {bool: "bool", int: "number", float: "number", str: "string"}.get(
            type(v), type(v).__name__
        )

    return [(k, kind(v)) for k, v in payload.items() if k != "#attributes"]


def corpus_payloads(corpus_dir: Path) -> dict[tuple[str, int, int], dict[str, Any]]:
    """(provider, event id, version) -> the first real payload of that shape."""
    found: dict[tuple[str, int, int], dict[str, Any]] = {}
    for rel in CORPUS_SAMPLES:
        records = evtx.PyEvtxParser(str(corpus_dir / rel)).records_json()
        while True:
            try:
                r = next(records)
            except StopIteration:
                break
            except RuntimeError:  # a deliberately damaged record in a parser sample
                continue
            event = json.loads(r["data"])["Event"]
            s = event["System"]
            eid = s["EventID"]["#text"] if isinstance(s["EventID"], dict) else s["EventID"]
            key = (s["Provider"]["#attributes"]["Name"], int(eid), s.get("Version", 0))
            if isinstance(event.get("EventData"), dict):
                found.setdefault(key, event["EventData"])
    return found


@pytest.mark.corpus
def test_simulated_payloads_match_real_events(
    corpus_dir: Path, bundles: dict[str, Path], tmp_path: Path
) -> None:
    """Same field names, order and JSON value kinds as the real event, both read by pyevtx-rs."""
    real = corpus_payloads(corpus_dir)
    _, _ = simulate_small(tmp_path, ws2022_guests=1)
    # Machine facts (issue 14): a patched host (WindowsUpdateClient 19), a renamed guest
    # (EventLog 6011) whose clock steps on resume (Kernel-General 1).
    simulate_small(
        tmp_path / "facts", scenario="host-patched", rename_guest=True, guest_clock_jump=2.0
    )
    simulated: dict[tuple[str, int, int], dict[str, Any]] = {}
    for folder in [*bundles.values(), tmp_path]:
        for path in folder.rglob("*.evtx"):
            for e in read(path):
                simulated.setdefault((e["provider"], e["event_id"], e["version"]), e["data"])
    # Netvsc 14 shares the RndisStatusChange template of 10-13 (manifest dumps); the
    # corpus has 10-13 but no 14.
    netvsc = "Microsoft-Windows-Hyper-V-Netvsc"
    real[(netvsc, 14, 0)] = real[(netvsc, 12, 0)]
    real_ids = {(p, i) for p, i, _ in real}
    compared = set()
    for key, payload in simulated.items():
        if key in real:
            assert kinds(payload) == kinds(real[key]), key
            compared.add(key)
        elif key[:2] in real_ids:
            # Only layouts the corpus has no sample of may differ from it: the
            # Windows Server 2022 WFP layouts (FilterOrigin), stated by Microsoft's docs.
            sources = {
                lay.source
                for lay in LAYOUTS.values()
                if (lay.provider[0], lay.event_id, lay.version) == key
            }
            assert sources == {"stated"}, key
    # Every layout marked "seen" was checked against a real event, except VMMS 20415,
    # seen in a published XML (docs/domain.md) but absent from the public corpus.
    seen = {
        (lay.provider[0], lay.event_id, lay.version)
        for lay in LAYOUTS.values()
        if lay.source == "seen"
    }
    assert seen & set(simulated) <= compared | {("Microsoft-Windows-Hyper-V-VMMS", 20415, 0)}
    assert len(compared) >= 14


def test_cli_simulate(tmp_path: Path) -> None:
    from pipeline.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["simulate", "--scenario", "healthy", "--out", str(out), "--seed", "5", "--noise", "10"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert truth(out)["verdict"] == "not-affected"
    again = runner.invoke(app, ["simulate", "--scenario", "bogus", "--out", str(tmp_path / "x")])
    assert again.exit_code == 2
    lines = [line for line in again.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "quarantine-bug" in lines[0] and "bogus" in lines[0]
    assert not (tmp_path / "x").exists()


def test_options_record_every_argument(tmp_path: Path) -> None:
    _, gt = simulate_small(tmp_path, guest_clock_offset=-90.0)
    opts = replace(SimulateOptions(scenario="quarantine-bug"), guest_clock_offset=-90.0)
    assert set(gt["arguments"]) == set(opts.arguments())
    assert gt["arguments"]["guest_clock_offset"] == -90.0
    assert gt["arguments"]["start"] == "2025-03-04T09:00:00.000000Z"


EXAMPLES = Path(__file__).parents[1] / "examples" / "bundles"


def example_commands() -> list[list[str]]:
    """The ``lmtrace simulate`` lines of examples/bundles/README.md, as argument lists."""
    text = (EXAMPLES / "README.md").read_text()
    return [line.split()[1:] for line in text.splitlines() if line.startswith("lmtrace simulate")]


def test_example_bundles_are_rebuilt_by_their_commands(tmp_path: Path) -> None:
    from pipeline.cli import app

    commands = example_commands()
    assert {args[args.index("--scenario") + 1] for args in commands} == {
        "quarantine-bug",
        "healthy",
        "host-fixed",
        "no-audit",
    }
    for args in commands:
        committed = Path(__file__).parents[1] / args[args.index("--out") + 1]
        out = tmp_path / committed.name
        args[args.index("--out") + 1] = str(out)
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert content(out) == content(committed), committed
        gt = truth(committed)
        assert gt["verdict"] == PRESETS[gt["scenario"]].expect


def content(bundle: Path) -> dict[str, object]:
    """What a bundle says, independent of how the writer packs it: every record as
    pyevtx-rs decodes it, the text files, and the ground truth without file sizes."""
    out: dict[str, object] = {}
    for p in sorted(bundle.rglob("*")):
        rel = p.relative_to(bundle).as_posix()
        if p.suffix == ".evtx":
            out[rel] = [r["data"] for r in evtx.PyEvtxParser(str(p)).records_json()]
        elif p.name == "ground_truth.json":
            gt = truth(bundle)
            gt["files"] = [{k: v for k, v in f.items() if k != "bytes"} for f in gt["files"]]
            out[rel] = gt
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def test_records_follow_time_with_small_reorderings(bundles: dict[str, Path]) -> None:
    """Record ids ascend with time, except neighbours < 2 ms apart, as in real logs."""
    backwards = 0
    for path in [
        *bundles["quarantine-bug"].rglob("*.evtx"),
        *bundles["cluster-drain"].rglob("*.evtx"),
    ]:
        times = [e["time"] for e in read(path)]
        for earlier, later in pairwise(times):
            if later < earlier:
                backwards += 1
                assert earlier - later < timedelta(milliseconds=2), path
    assert backwards > 0


STEP_BACK = SimulateOptions(
    scenario="quarantine-bug",
    seed=1,
    migrations=2,
    guest_clock_jump=-3.0,
    noise=600.0,
    load=3.0,
    pfirewall=True,
)
"""A guest whose clock steps back 3 s as it resumes after each of two migrations, busy
enough that every log holds events from the last seconds before each step."""


@pytest.fixture(scope="module")
def stepped_back(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stepped-back") / "bundle"
    simulate(STEP_BACK, out)
    return out


def falls(times: list[datetime]) -> list[int]:
    """Indexes where ``times`` fall back by more than a neighbour swap (2 ms)."""
    return [
        i + 1
        for i, (earlier, later) in enumerate(pairwise(times))
        if earlier - later >= timedelta(milliseconds=2)
    ]


def test_a_step_back_is_written_where_it_happened(stepped_back: Path) -> None:
    """Windows writes each log in the order things happen, each event with the time its
    clock showed: the guest's System log falls back at each Kernel-General 1 record (the
    step, stamped with the new time) and nowhere else; with each step undone from its
    record on, its times ascend but for neighbour swaps, which never cross a step."""
    gt = truth(stepped_back)
    [folder] = guest_files(stepped_back, gt).values()
    system = read(folder / "System.evtx")
    steps = [
        i
        for i, e in enumerate(system)
        if e["provider"] == "Microsoft-Windows-Kernel-General" and e["event_id"] == 1
    ]
    assert len(steps) == len(gt["migrations"]) == 2
    assert falls([e["time"] for e in system]) == steps
    undone, back = [], timedelta(0)
    for i, e in enumerate(system):
        if i in steps:
            back += when(e["data"]["OldTime"]) - when(e["data"]["NewTime"])
            assert e["time"] == when(e["data"]["NewTime"])
            # The record before it happened before the step, at a time shown again after.
            assert e["time"] < system[i - 1]["time"] < when(e["data"]["OldTime"])
        undone.append(e["time"] + back)
    assert back == timedelta(seconds=6)
    assert falls(undone) == []
    # Each migration's network change follows its step (the guest resumed, then saw it).
    netvsc = [i for i, e in enumerate(system) if e["event_id"] == 14]
    assert all(any(a < n < b for n in netvsc) for a, b in pairwise([*steps, len(system)]))


def test_every_guest_log_falls_back_where_the_clock_stepped(stepped_back: Path) -> None:
    """Security and pfirewall.log are written in the order things happened too: once per
    step their times fall back, from the last event before the step to the first after
    it, which is the quarantine's (inbound traffic is lost from the blackout until the
    network change); every drop of a quarantine is logged after its fall."""
    gt = truth(stepped_back)
    [folder] = guest_files(stepped_back, gt).values()
    security = read(folder / "Security.evtx")
    at = falls([e["time"] for e in security])
    assert len(at) == len(gt["quarantines"]) == 2
    for i, q in zip(at, gt["quarantines"], strict=True):
        first_after = security[i]
        assert when(q["start"]) <= first_after["time"] < when(q["end"])
        assert security[i - 1]["time"] - first_after["time"] < timedelta(seconds=3)
        drops = [
            b["record_id"] for b in gt["blocked_inbound"] if b["migration_id"] == q["migration_id"]
        ]
        assert drops and min(drops) >= first_after["record_id"]
    lines = (folder / "pfirewall.log").read_text(encoding="ascii").splitlines()
    times = [datetime.fromisoformat(line[:19]) for line in lines if line[:1].isdigit()]
    descending = [i for i, (a, b) in enumerate(pairwise(times)) if b < a]
    assert len(descending) == 2
    assert all(times[i] - times[i + 1] <= timedelta(seconds=3) for i in descending)
