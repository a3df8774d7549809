"""The simulator's realism knobs write what real Windows logs hold, and the truth says so.

Each check reads the written .evtx with pyevtx-rs and compares it with
ground_truth.json; where the public corpus has the real events a knob imitates
(tugix456's network loss, velociraptor's mDNS drops, DE_RDP_Tunnel's loopback
RDP), the simulated payload values are checked against those. No correlator
code is imported: the simulator is an independent oracle.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import evtx
import pytest
from typer.testing import CliRunner

from pipeline.simulate import SimulateError, SimulateOptions, simulate
from pipeline.simulate.plan import REALISM, load_presets

INBOUND = "%%14592"
NONE_PROFILE = 2147483649  # FW_PROFILE_TYPE_NONE, as tugix456's Firewall 2010 logs it
PROFILE = "Microsoft-Windows-NetworkProfile%4Operational.evtx"
NCSI = "Microsoft-Windows-NCSI%4Operational.evtx"
FIREWALL = "Microsoft-Windows-Windows Firewall With Advanced Security%4Firewall.evtx"
SMALL: dict[str, Any] = {"noise": 20.0, "load": 3.0}
NO_REALISM: dict[str, Any] = dict.fromkeys(REALISM, False)
ALL_REALISM: dict[str, Any] = {
    "multicast_drops": True,
    "loopback_connections": True,
    "nla_chatter": True,
    "guest_nics": 2,
    "extra_network_changes": 1,
    "pfirewall": True,
}


@dataclass(frozen=True)
class Event:
    record_id: int
    time: datetime
    event_id: int
    provider: str
    computer: str
    pid: int
    data: dict[str, Any]


def read(path: Path) -> list[Event]:
    out = []
    for r in evtx.PyEvtxParser(str(path)).records_json():
        event = json.loads(r["data"])["Event"]
        s = event["System"]
        eid = s["EventID"]
        payload = event.get("EventData")
        if payload is None and event.get("UserData"):
            payload = next(iter(event["UserData"].values()))
        out.append(
            Event(
                r["event_record_id"],
                datetime.fromisoformat(s["TimeCreated"]["#attributes"]["SystemTime"]),
                eid["#text"] if isinstance(eid, dict) else eid,
                s["Provider"]["#attributes"]["Name"],
                s["Computer"],
                s["Execution"]["#attributes"]["ProcessID"],
                {k: v for k, v in (payload or {}).items() if k != "#attributes"},
            )
        )
    return out


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def make(root: Path, name: str, **knobs: Any) -> tuple[Path, dict[str, Any]]:
    options = {"scenario": "quarantine-bug", "seed": 5, **SMALL, **knobs}
    result = simulate(SimulateOptions(**options), root / name)
    return root / name, result.ground_truth


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Small bundles, each built once for the whole module."""
    root = tmp_path_factory.mktemp("realism")
    return {
        "bug": make(root, "bug", **ALL_REALISM),
        "bug-plain": make(root, "bug-plain", pfirewall=True, **NO_REALISM),
        "bug-routine": make(
            root,
            "bug-routine",
            **NO_REALISM
            | {
                "pfirewall": True,
                "multicast_drops": True,
                "loopback_connections": True,
                "nla_chatter": True,
            },
        ),
        "healthy": make(root, "healthy", scenario="healthy", **ALL_REALISM),
        "quiet": make(
            root,
            "quiet",
            scenario="healthy",
            wfp_audit="failure-only",
            classification_logs=False,
            multicast_drops=True,
            load=0.3,
        ),
        "site": make(
            root,
            "site",
            scenario="cluster-drain",
            host_fqdn=True,
            upper_case_vmids=True,
            unrelated_machines=2,
        ),
    }


def guest_of(gt: dict[str, Any]) -> dict[str, Any]:
    (guest,) = [m for m in gt["machines"] if m["role"] == "guest"]
    return guest


def test_a_knob_leaves_the_incident_as_it_was(bundles: dict) -> None:
    """Same seed with and without the traffic and NLA knobs: the same incident, event for event."""
    (_, plain), (_, real) = bundles["bug-plain"], bundles["bug-routine"]
    for key in ("network_change", "start", "end", "blackout_s"):
        assert plain["migrations"][0][key] == real["migrations"][0][key]
    same = ("start", "end", "blocked_attempts", "blocked_packets", "blocked_inbound")
    assert [plain["quarantines"][0][k] for k in same] == [real["quarantines"][0][k] for k in same]
    key = ("time", "event_id", "packet", "local_port", "remote_address", "remote_port")
    assert [tuple(b[k] for k in key) for b in plain["blocked_inbound"]] == [
        tuple(b[k] for k in key) for b in real["blocked_inbound"]
    ]
    # pfirewall.log gains the multicast lines: the quarantine's drops move down, unchanged.
    assert [{k: v for k, v in d.items() if k != "line"} for d in plain["pfirewall_drops"]] == [
        {k: v for k, v in d.items() if k != "line"} for d in real["pfirewall_drops"]
    ]
    # Two more adapters and a repeated indication lengthen the window, by design.
    assert bundles["bug"][1]["quarantines"][0]["end"] > plain["quarantines"][0]["end"]


def test_inbound_drops_in_the_window_are_the_quarantines_or_listed_apart(bundles: dict) -> None:
    """Every inbound 5152/5157 in a window is a quarantine drop or a listed multicast one."""
    bundle, gt = bundles["bug"]
    guest = guest_of(gt)
    (q,) = gt["quarantines"]
    start, end = when(q["start"]), when(q["end"])
    security = read(bundle / guest["folder"] / "Security.evtx")
    in_window = {
        e.record_id
        for e in security
        if e.event_id in (5152, 5157) and e.data["Direction"] == INBOUND and start <= e.time < end
    }
    quarantine = {b["record_id"] for b in gt["blocked_inbound"]}
    other = {
        o["record_id"]
        for o in gt["other_inbound"]
        if o["in_quarantine_of"] == q["migration_id"] and o["event_id"] in (5152, 5157)
    }
    assert other and quarantine and not other & quarantine
    assert in_window == quarantine | other
    # Packets, not events: a 5152 and a 5157 of one packet count once.
    packets = {(b["protocol"], b["packet"]) for b in gt["blocked_inbound"]}
    assert sum(q["blocked_packets"].values()) == len(packets) < sum(q["blocked_inbound"].values())
    facts = gt["migrations"][0]["facts"]
    assert facts["blocked_packets"] == facts["blocked_packets_logged"] == len(packets)
    assert facts["other_inbound_packets"] == sum(q["other_inbound"].values()) > 0


def test_multicast_and_broadcast_drops_look_like_the_real_ones(bundles: dict) -> None:
    """Sides as the corpus shows them: velociraptor's mDNS, DE_RDP_Tunnel's SSDP and NetBIOS."""
    bundle, gt = bundles["bug"]
    guest = guest_of(gt)
    by_id = {e.record_id: e for e in read(bundle / guest["folder"] / "Security.evtx")}
    forms = Counter()
    for o in gt["other_inbound"]:
        if o["event_id"] not in (5152, 5157):
            continue
        e = by_id[o["record_id"]]
        assert e.time == when(o["time"]) and e.data["Direction"] == INBOUND
        group = o["local_address"]  # the multicast group or the broadcast address
        sender_source = o["event_id"] == 5152 or group == "224.0.0.251"
        if sender_source:  # every 5152; velociraptor's mDNS 5157
            assert (e.data["SourceAddress"], e.data["SourcePort"]) == (
                o["remote_address"],
                str(o["remote_port"]),
            )
            assert e.data["DestAddress"] == group
        else:  # DE_RDP_Tunnel's SSDP and NetBIOS connection events
            assert (e.data["SourceAddress"], e.data["SourcePort"]) == (group, str(o["local_port"]))
        assert (e.data["LayerName"], e.data["LayerRTID"]) == ("%%14610", 44)
        assert o["local_port"] in (5355, 5353, 1900, 137, 138)
        assert group.endswith(".255") == (o["traffic"] == "broadcast")
        forms[(o["event_id"], sender_source, o["traffic"])] += 1
    assert {(5157, True, "multicast"), (5157, False, "multicast")} <= set(forms)
    assert {(5152, True, "multicast"), (5152, True, "broadcast")} <= set(forms)
    # The same packets as DROP lines in pfirewall.log, each listed with its line.
    lines = (bundle / guest["folder"] / "pfirewall.log").read_text().splitlines()
    listed = [o for o in gt["other_inbound"] if o["event_id"] is None]
    assert listed
    for o in listed:
        fields = lines[o["line"] - 1].split(" ")
        assert fields[2] == "DROP" and (fields[4], fields[5]) == (
            o["remote_address"],
            o["local_address"],
        )
    # Today's verdict counts only the quarantine's pfirewall drops.
    assert len(gt["pfirewall_drops"]) == sum(gt["quarantines"][0]["blocked_attempts"].values())


def test_loopback_connections_in_the_window_are_allowed_as_de_rdp_tunnel_shows(
    bundles: dict,
) -> None:
    bundle, gt = bundles["bug"]
    guest = guest_of(gt)
    (q,) = gt["quarantines"]
    security = read(bundle / guest["folder"] / "Security.evtx")
    by_id = {e.record_id: e for e in security}
    inside = [
        o for o in gt["other_inbound"]
        if o["traffic"] in ("loopback", "self") and o["in_quarantine_of"] == q["migration_id"]
    ]  # fmt: skip
    assert len(inside) >= 2
    for o in inside:
        e = by_id[o["record_id"]]
        assert e.event_id == 5156 and e.data["Direction"] == INBOUND
        assert (e.data["Application"], e.data["ProcessID"]) == ("System", 4)
        assert (e.data["SourceAddress"], e.data["SourcePort"]) == (
            o["local_address"],
            str(o["local_port"]),
        )
        assert (e.data["LayerName"], e.data["LayerRTID"], e.data["FilterRTID"]) == (
            "%%14610",
            44,
            0,
        )
        # The client's outbound 5156 of the same connection, at the same microsecond.
        client = [
            c for c in security
            if c.event_id == 5156 and c.time == e.time and c.data["Direction"] == "%%14593"
            and c.data["DestPort"] == e.data["SourcePort"]
        ]  # fmt: skip
        assert len(client) == 1 and client[0].data["SourcePort"] == e.data["DestPort"]
        if o["traffic"] == "loopback":
            assert (e.data["SourceAddress"], e.data["DestAddress"]) == ("127.0.0.2", "127.0.0.1")


def nla(bundle: Path, folder: str) -> list[Event]:
    events = [*read(bundle / folder / PROFILE), *read(bundle / folder / NCSI)]
    events += read(bundle / folder / FIREWALL)
    return sorted(events, key=lambda e: e.time)


def classifying(e: Event, network_guid: str) -> bool:
    """What the issue calls a real classification: the network's 10000, a 2010 to a real
    profile, a 4042 with Capability >= 1."""
    return (
        (e.event_id == 10000 and e.data["Guid"] == network_guid)
        or (e.event_id == 2010 and e.data["NewProfile"] in (1, 2, 4))
        or (e.event_id == 4042 and e.data["Capability"] >= 1)
    )


def network_guid(bundle: Path, folder: str) -> str:
    """The domain network's Guid: the one of the boot's 10000."""
    return next(e for e in read(bundle / folder / PROFILE) if e.event_id == 10000).data["Guid"]


def test_bug_logs_nla_chatter_but_no_classification_in_the_window(bundles: dict) -> None:
    bundle, gt = bundles["bug"]
    guest = guest_of(gt)
    (q,) = gt["quarantines"]
    start, end = when(q["start"]), when(q["end"])
    real = network_guid(bundle, guest["folder"])
    window = [e for e in nla(bundle, guest["folder"]) if start <= e.time < end]
    assert not [e for e in window if classifying(e, real)]
    ids = Counter(e.event_id for e in window)
    assert ids[10001] == 1 and ids[10000] == 1 and ids[4004] >= 1 and ids[4001] == 1
    assert ids[2010] == ids[4042] == len(guest["nics"]) == 2
    placeholder = next(e for e in window if e.event_id == 10000)
    assert placeholder.data["Name"] == "Identifying..." and placeholder.data["Guid"] != real
    assert {e.data["NewProfile"] for e in window if e.event_id == 2010} == {NONE_PROFILE}
    assert {e.data["Capability"] for e in window if e.event_id == 4042} == {0}
    # 4004 fires before the placeholder; the loss comes within 25 ms of the change.
    first_4004 = next(e for e in window if e.event_id == 4004)
    assert first_4004.time < placeholder.time
    lost = next(e for e in window if e.event_id == 10001)
    assert lost.time - start <= timedelta(milliseconds=25)


def test_healthy_window_ends_at_the_first_real_classification(bundles: dict) -> None:
    bundle, gt = bundles["healthy"]
    guest = guest_of(gt)
    (q,) = gt["quarantines"]
    assert q["ended_by"] == "classification" and q["end_event"]
    real = network_guid(bundle, guest["folder"])
    after = [e for e in nla(bundle, guest["folder"]) if e.time >= when(q["start"])]
    first = next(e for e in after if classifying(e, real))
    assert first.time == when(q["end"])
    assert first.event_id == (2010 if q["end_event"].startswith("Firewall") else 10000)
    # The real network's 10000 comes seconds after the first 4004.
    connected = next(e for e in after if e.event_id == 10000 and e.data["Guid"] == real)
    state = next(e for e in after if e.event_id == 4004)
    assert connected.time - state.time >= timedelta(seconds=1)


@pytest.mark.corpus
def test_network_loss_values_are_tugix456s(corpus_dir: Path, bundles: dict) -> None:
    """The loss the chatter writes carries the values Windows logged in tugix456."""
    real = []
    for name in ("NetworkProfile%4Operational", "NCSI%4Operational"):
        real += read(corpus_dir / f"network/tugix456__Microsoft-Windows-{name}.evtx")
    fw = "Windows_Firewall_With_Advanced_Security%4Firewall"
    real += read(corpus_dir / f"network/tugix456__Microsoft-Windows-{fw}.evtx")
    lost_2010 = {e.data["NewProfile"] for e in real if e.event_id == 2010} - {1, 2, 4}
    lost_4042 = {
        (e.data["Capability"], e.data["CapabilityChangeReason"], e.data["PreviousCapability"])
        for e in real
        if e.event_id == 4042 and e.data["Capability"] == 0
    }
    placeholder_states = {(e.data["Type"], e.data["Category"]) for e in real if e.event_id == 10000}
    bundle, gt = bundles["bug"]
    sim = nla(bundle, guest_of(gt)["folder"])
    start = when(gt["quarantines"][0]["start"])
    sim = [e for e in sim if e.time >= start]
    assert {e.data["NewProfile"] for e in sim if e.event_id == 2010} == lost_2010 == {NONE_PROFILE}
    assert {
        (e.data["Capability"], e.data["CapabilityChangeReason"], e.data["PreviousCapability"])
        for e in sim
        if e.event_id == 4042
    } == lost_4042
    placeholder = next(e for e in sim if e.data.get("Name") == "Identifying...")
    assert (placeholder.data["Type"], placeholder.data["Category"]) in placeholder_states
    identifying = next(e for e in sim if e.event_id == 4001)
    assert identifying.data["CurrentOrNextState"] == 0
    assert 0 <= (placeholder.time - identifying.time).total_seconds() < 0.001
    # The layouts only the chatter writes have the real events' field names and value kinds.
    healthy = nla(bundles["healthy"][0], guest_of(bundles["healthy"][1])["folder"])
    for event_id in (4001, 4002):
        mine = next(e for e in [*sim, *healthy] if e.event_id == event_id)
        theirs = next(e for e in real if e.event_id == event_id)
        assert {k: type(v) for k, v in mine.data.items()} == {
            k: type(v) for k, v in theirs.data.items()
        }


def test_several_nics_and_repeated_changes_end_seven_seconds_after_the_last(
    bundles: dict,
) -> None:
    bundle, gt = bundles["bug"]
    guest = guest_of(gt)
    (m,) = gt["migrations"]
    (q,) = gt["quarantines"]
    changes = m["network_changes"]
    assert len(changes) == 4  # two adapters, two rounds
    assert {c["nic"] for c in changes} == {
        "Microsoft Hyper-V Network Adapter",
        "Microsoft Hyper-V Network Adapter #2",
    }
    netvsc = [e for e in read(bundle / guest["folder"] / "System.evtx") if e.event_id == 14]
    assert [(e.time, e.data["MiniportName"]) for e in netvsc] == [
        (when(c["time"]), c["nic"]) for c in changes
    ]
    assert when(q["start"]) == netvsc[0].time
    assert when(q["last_network_change"]) == netvsc[-1].time
    assert when(q["end"]) - netvsc[-1].time == timedelta(seconds=7)
    assert q["duration_s"] > 7.0
    assert m["facts"]["network_events"] == 4 and m["facts"]["nics"] == 2


def test_failure_only_auditing_and_no_classification_logs(bundles: dict) -> None:
    bundle, gt = bundles["quiet"]
    guest = guest_of(gt)
    assert guest["observability"] == {
        "wfp_audit": "failure-only",
        "pfirewall_log": False,
        "classification_logs": False,
    }
    files = {p.name for p in (bundle / guest["folder"]).iterdir()}
    assert files == {"System.evtx", "Security.evtx"}
    ids = Counter(e.event_id for e in read(bundle / guest["folder"] / "Security.evtx"))
    assert ids[5156] == 0 and ids[5152] > 0
    # Little inbound traffic: the multicast drops outnumber the quarantine's.
    (q,) = gt["quarantines"]
    assert q["ended_by"] == "classification"
    other = sum(1 for o in gt["other_inbound"] if o["event_id"])
    assert other > len(gt["blocked_inbound"])
    # Nothing in these logs can show the window over: no classification logs, no 5156.
    assert gt["migrations"][0]["facts"]["end_evidence"] is None


def test_end_evidence_is_the_first_logged_sign_the_window_is_over(bundles: dict) -> None:
    """Classification where exported; else the first non-loopback inbound TCP 5156 after it."""
    bundle, gt = bundles["healthy"]
    (q,) = gt["quarantines"]
    evidence = gt["migrations"][0]["facts"]["end_evidence"]
    assert evidence == {
        "by": "classification",
        "time": q["end"],
        "seconds_after_change": pytest.approx(q["duration_s"], abs=1e-6),
    }
    bundle, gt = bundles["bug"]
    (q,) = gt["quarantines"]
    evidence = gt["migrations"][0]["facts"]["end_evidence"]
    assert evidence["by"] == "5156"
    security = read(bundle / guest_of(gt)["folder"] / "Security.evtx")
    allowed = [
        e for e in security
        if e.event_id == 5156 and e.data["Direction"] == INBOUND and e.data["Protocol"] == 6
        and not e.data["SourceAddress"].startswith("127.")
        and e.data["SourceAddress"] != e.data["DestAddress"]
        and e.time >= when(q["end"])
    ]  # fmt: skip
    assert min(e.time for e in allowed) == when(evidence["time"])


def test_hosts_write_fqdn_and_upper_case_vmids_and_unrelated_machines_are_listed(
    bundles: dict,
) -> None:
    bundle, gt = bundles["site"]
    hosts = [m for m in gt["machines"] if m["role"] == "host"]
    assert all(h["name"] == f"{h['folder']}.corp.contoso.com" for h in hosts)
    for h in hosts:
        vmms = read(bundle / h["folder"] / "Microsoft-Windows-Hyper-V-VMMS-Admin.evtx")
        assert {e.computer for e in vmms} <= {h["name"]}
    vmids = {m["vmid"] for m in gt["migrations"]}
    node1 = bundle / "HV-NODE1"
    logged = {
        e.data["Parameter1"]
        for e in read(node1 / "Microsoft-Windows-Hyper-V-VMMS-Admin.evtx")
        if e.event_id == 20413
    }
    assert logged == {v.upper() for v in vmids} and all(v == v.lower() for v in vmids)
    cluster = [e for e in read(node1 / "System.evtx") if e.event_id == 1153]
    assert cluster and all("." not in e.data["TargetNode"] for e in cluster)

    unrelated = [m for m in gt["machines"] if m["role"] == "unrelated"]
    assert len(unrelated) == 2 and all(m["unrelated_because"] for m in unrelated)
    assert not {m["name"] for m in unrelated} & {m["guest"] for m in gt["migrations"]}
    first_start = min(when(m["start"]) for m in gt["migrations"])
    last_end = max(when(m["end"]) for m in gt["migrations"])
    away, local = unrelated
    times = [e.time for f in (bundle / away["folder"]).glob("*.evtx") for e in read(f)]
    assert times and max(times) < first_start - timedelta(days=2)
    assert any(e.event_id == 14 for e in read(bundle / away["folder"] / "System.evtx"))
    system = read(bundle / local["folder"] / "System.evtx")
    assert min(e.time for e in system) < first_start and max(e.time for e in system) > last_end
    assert not [e for e in system if e.event_id == 14]
    assert {e.computer for e in system} == {local["name"]}


@pytest.mark.parametrize("offset", [-5 * 3600.0, 26 * 3600.0])
def test_guest_clock_hours_off_end_to_end(tmp_path: Path, offset: float) -> None:
    bundle, gt = make(
        tmp_path, "off", guest_clock_offset=offset, pfirewall=True, guest_tz="Europe/Berlin"
    )
    guest = guest_of(gt)
    (m,) = gt["migrations"]
    (q,) = gt["quarantines"]
    shift = when(m["network_change"]) - when(m["network_change_host_clock"])
    assert shift == timedelta(seconds=offset)
    (netvsc,) = [e for e in read(bundle / guest["folder"] / "System.evtx") if e.event_id == 14]
    assert netvsc.time == when(q["start"]) == when(m["network_change"])
    security = {e.record_id: e for e in read(bundle / guest["folder"] / "Security.evtx")}
    for b in gt["blocked_inbound"]:
        assert when(q["start"]) <= security[b["record_id"]].time == when(b["time"]) < when(q["end"])
    source = next(h["folder"] for h in gt["machines"] if h["name"] == m["source"])
    vmms = read(bundle / source / "Microsoft-Windows-Hyper-V-VMMS-Admin.evtx")
    assert vmms[0].time == when(m["start"])  # hosts keep their own clock
    times = [e.time for e in security.values()]
    assert min(times) < when(q["start"]) < max(times)  # the guest's log spans its own window
    lines = (bundle / guest["folder"] / "pfirewall.log").read_text().splitlines()
    for d in gt["pfirewall_drops"]:
        assert lines[d["line"] - 1].startswith(d["local_time"] + " DROP")


def test_scenarios_may_turn_realism_on_and_bad_knobs_are_one_line_errors(
    tmp_path: Path,
) -> None:
    scenarios = tmp_path / "scenarios.toml"
    text = (Path(__file__).parents[1] / "pipeline" / "simulate" / "scenarios.toml").read_text()
    first = text.index("[quarantine-bug]")
    end = text.index("\n[", first)
    table = "\n".join(
        line for line in text[first:end].splitlines() if not line.startswith("nla_chatter")
    )
    scenarios.write_text(text[:first] + table + "\nnla_chatter = true\n" + text[end:])
    presets = load_presets(scenarios)
    assert presets["quarantine-bug"].nla_chatter
    assert presets["healthy"].nla_chatter == load_presets()["healthy"].nla_chatter
    for knobs, message in (
        ({"wfp_audit": "some"}, "--wfp-audit 'some'"),
        ({"guest_nics": 0}, "--guest-nics"),
        ({"extra_network_changes": 9}, "--extra-network-changes"),
        ({"unrelated_machines": 5}, "--unrelated-machines"),
    ):
        with pytest.raises(SimulateError, match=message) as err:
            make(tmp_path, "bad", **knobs)
        assert "\n" not in str(err.value)


def test_cli_knobs(tmp_path: Path) -> None:
    from pipeline.cli import app

    out = tmp_path / "cli"
    args = [
        "simulate", "--scenario", "healthy", "--out", str(out), "--seed", "2", "--noise", "10",
        "--nla-chatter", "--multicast-drops", "--wfp-audit", "failure-only",
        "--no-classification-logs", "--guest-nics", "2", "--unrelated-machines", "1",
        "--host-fqdn", "--upper-case-vmids",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    gt = json.loads((out / "ground_truth.json").read_text())
    arguments = gt["arguments"]
    assert arguments["nla_chatter"] and arguments["multicast_drops"]
    assert (arguments["wfp_audit"], arguments["classification_logs"]) == ("failure-only", False)
    assert (arguments["guest_nics"], arguments["unrelated_machines"]) == (2, 1)
    bad = CliRunner().invoke(app, [*args[:5], "--wfp-audit", "loud"])
    assert bad.exit_code == 2 and "--wfp-audit 'loud'" in bad.output
