"""Which WFP column is the guest's own side: checked on Windows' events, then on the simulator's.

Windows names the sides per event id: the packet drop 5152 puts the sender in
Source*, the connection events 5156/5157 put the local side in Source* in both
directions (Microsoft's event-5156.md / event-5157.md; catalog.toml cites the
samples). The real events below go through lmtrace's own ingest and tag path, so
the catalog cannot agree with the simulator on a mistake: the arbiter is what
Windows logged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import evtx
import polars as pl
import pytest

from pipeline.catalog import load_catalog, tag
from pipeline.ingest import ingest
from pipeline.simulate import SimulateOptions, simulate
from pipeline.store import scan_events

SHORT = "parsers/omerbenamram-evtx__Security_short_selected.evtx"
RDP_TUNNEL = "network/EVTX-ATTACK-SAMPLES__DE_RDP_Tunnel_5156.evtx"
VELOCIRAPTOR = "parsers/velociraptor__RDPAuth_Security.evtx"
SIDES = ["local_address", "local_port", "remote_address", "remote_port"]


@pytest.fixture(scope="module")
def real(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """The three samples' WFP events, ingested into a store and tagged by the shipped catalog."""
    store = tmp_path_factory.mktemp("wfp") / "store"
    ingest([corpus_dir / SHORT, corpus_dir / RDP_TUNNEL, corpus_dir / VELOCIRAPTOR], store)
    tagged = tag(scan_events(store), load_catalog())
    return tagged.filter(pl.col("event_id").is_in([5152, 5156, 5157]))


def sides(frame: pl.DataFrame, sample: str, record_id: int) -> dict[str, Any]:
    rows = frame.filter(
        pl.col("source_path").str.ends_with(Path(sample).name)
        & (pl.col("header_record_id") == record_id)
    )
    assert rows.height == 1, (sample, record_id)
    return {k: v for k, v in rows.row(0, named=True).items() if k in [*SIDES, "kind", "inbound"]}


@pytest.mark.corpus
def test_one_dropped_packet_logged_twice_names_the_same_sides(real: pl.DataFrame) -> None:
    """Records 5 (5152) and 6 (5157): one inbound ICMP echo, opposite column order, same sides."""
    packet = sides(real, SHORT, 5)
    connection = sides(real, SHORT, 6)
    expected = {
        "local_address": "169.46.6.101",
        "local_port": 8,
        "remote_address": "169.46.118.42",
        "remote_port": 0,
        "inbound": True,
    }
    assert packet == {**expected, "kind": "wfp.blocked_packet"}
    assert connection == {**expected, "kind": "wfp.blocked_connection"}
    # A 5152 alone, at the transport layer: the RDP client is the remote side.
    assert sides(real, SHORT, 1) == {
        "local_address": "169.46.6.101",
        "local_port": 3389,
        "remote_address": "23.94.153.202",
        "remote_port": 59639,
        "inbound": True,
        "kind": "wfp.blocked_packet",
    }


@pytest.mark.corpus
def test_allowed_connections_name_the_local_side_source(real: pl.DataFrame) -> None:
    """DE_RDP_Tunnel_5156: inbound loopback RDP, outbound Kerberos, inbound NetBIOS broadcast."""
    rdp = sides(real, RDP_TUNNEL, 26)
    assert rdp["inbound"] and (rdp["local_address"], rdp["local_port"]) == ("127.0.0.2", 3389)
    assert (rdp["remote_address"], rdp["remote_port"]) == ("127.0.0.1", 49271)
    plink = sides(real, RDP_TUNNEL, 25)  # the same connection seen leaving the client
    assert not plink["inbound"]
    assert (plink["local_port"], plink["remote_port"]) == (49271, 3389)
    kerberos = sides(real, RDP_TUNNEL, 4)
    assert not kerberos["inbound"]
    assert (kerberos["local_address"], kerberos["local_port"]) == ("10.0.2.17", 49263)
    assert (kerberos["remote_address"], kerberos["remote_port"]) == ("10.0.2.15", 88)
    netbios = sides(real, RDP_TUNNEL, 18)
    assert netbios["inbound"]
    assert (netbios["local_address"], netbios["local_port"]) == ("10.255.255.255", 137)
    assert netbios["remote_address"] == "10.0.2.18"
    # Every outbound 5156 of the sample is sent from the machine's own addresses.
    outbound = real.filter(
        pl.col("source_path").str.ends_with(Path(RDP_TUNNEL).name)
        & (pl.col("event_id") == 5156)
        & ~pl.col("inbound")
    )
    assert outbound.height > 10
    assert set(outbound["local_address"]) <= {
        "10.0.2.17",
        "127.0.0.1",
        "::1",
        "fe80::80ac:4126:fa58:1b81",
    }


@pytest.mark.corpus
def test_multicast_connection_events_may_name_the_sender_source(real: pl.DataFrame) -> None:
    """The documented exception: velociraptor's inbound mDNS 5157 names the group Dest."""
    mdns = real.filter(
        pl.col("source_path").str.ends_with(Path(VELOCIRAPTOR).name) & (pl.col("event_id") == 5157)
    )
    assert mdns.height == 8
    assert set(mdns["local_address"]) == {"192.168.38.1", "172.16.1.1"}
    assert set(mdns["remote_address"]) == {"224.0.0.251"}
    entry = next(e for e in load_catalog().events if e.event_id == 5157)
    assert "multicast" in (entry.note or "") and "velociraptor" in entry.source


# --- the simulator writes what Windows writes --------------------------------------------


def records(path: Path) -> list[dict[str, Any]]:
    out = []
    for r in evtx.PyEvtxParser(str(path)).records_json():
        event = json.loads(r["data"])["Event"]
        s = event["System"]
        eid = s["EventID"]
        out.append(
            {
                "record_id": r["event_record_id"],
                "event_id": eid["#text"] if isinstance(eid, dict) else eid,
                "time": s["TimeCreated"]["#attributes"]["SystemTime"],
                "data": event.get("EventData") or {},
            }
        )
    return out


@pytest.fixture(scope="module")
def bug(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("sim") / "bundle"
    result = simulate(
        SimulateOptions(scenario="quarantine-bug", seed=19, load=6.0, noise=60.0), out
    )
    return out, result.ground_truth


def test_simulated_wfp_events_name_the_sides_as_windows_does(
    bug: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    bundle, gt = bug
    (guest,) = [m for m in gt["machines"] if m["role"] == "guest"]
    security = records(bundle / guest["folder"] / "Security.evtx")
    inbound = [e for e in security if e["data"].get("Direction") == "%%14592"]
    by_id = {e["record_id"]: e for e in security}
    for b in gt["blocked_inbound"]:
        data = by_id[b["record_id"]]["data"]
        local = ("Dest", "Source") if b["event_id"] == 5152 else ("Source", "Dest")
        assert data[f"{local[0]}Address"] == guest["address"]
        assert data[f"{local[0]}Port"] == str(b["local_port"])
        assert data[f"{local[1]}Address"] == b["remote_address"]
    loopback = {o["record_id"] for o in gt.get("other_inbound", []) if o["event_id"] == 5156}
    allowed = [e for e in inbound if e["event_id"] == 5156 and e["record_id"] not in loopback]
    assert allowed and all(e["data"]["SourceAddress"] == guest["address"] for e in allowed)
    # Through lmtrace's own path, every inbound WFP event has the guest as its local side.
    store = tmp_path / "store"
    ingest([bundle / guest["folder"] / "Security.evtx"], store)
    tagged = tag(scan_events(store), load_catalog()).filter(
        pl.col("inbound") & pl.col("kind").str.starts_with("wfp.")
    )
    # Less multicast groups (in either column: the mDNS exception), broadcasts and loopback
    # (--multicast-drops, --loopback-connections).
    routine = r"^2(2[4-9]|3\d)\.|\.255$|^127\."
    unicast = tagged.filter(
        ~pl.col("local_address").str.contains(routine)
        & ~pl.col("remote_address").str.contains(routine)
    )
    assert unicast.height > 0
    assert set(unicast["local_address"]) == {guest["address"]}


def test_one_blocked_packet_logged_twice_shares_time_and_filter(
    bug: tuple[Path, dict[str, Any]],
) -> None:
    bundle, gt = bug
    (guest,) = [m for m in gt["machines"] if m["role"] == "guest"]
    by_id = {e["record_id"]: e for e in records(bundle / guest["folder"] / "Security.evtx")}
    logged = [by_id[b["record_id"]] for b in gt["blocked_inbound"]]
    packets: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e, b in zip(logged, gt["blocked_inbound"], strict=True):
        packets.setdefault(
            (e["time"], b["remote_address"] + ":" + str(b["remote_port"])), []
        ).append(e)
    pairs = [p for p in packets.values() if len(p) == 2]
    assert pairs, "the bug bundle should log some packets as both 5152 and 5157"
    for pair in pairs:
        assert sorted(e["event_id"] for e in pair) == [5152, 5157]
        assert len({e["data"]["FilterRTID"] for e in pair}) == 1
        assert {(e["data"]["LayerName"], e["data"]["LayerRTID"]) for e in pair} == {("%%14610", 44)}
        assert len({e["data"]["Application"] for e in pair}) == 1
