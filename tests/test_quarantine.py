"""Quarantine windows on small hand-made frames: every way a window can end.

The end-to-end tests run the simulator, which cannot produce every branch; these
build the guest's events by hand, one table row per event, and call the module's
functions directly.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from pipeline.catalog import load_catalog
from pipeline.quarantine import _last_network_event, _packet_ids, measure, traffic_scope

CATALOG = load_catalog()
MODEL = CATALOG.model
Q0 = datetime(2025, 3, 4, 9, 11, 18, tzinfo=timezone.utc)
GUEST = "app-vm01"
ME = "10.20.1.11"


def at(seconds: float) -> datetime:
    return Q0 + timedelta(seconds=seconds)


EVENT_SCHEMA = {
    "machine": pl.String,
    "timestamp": pl.Datetime("us", "UTC"),
    "kind": pl.String,
    "event_id": pl.Int32,
    "inbound": pl.Boolean,
    "protocol": pl.Int32,
    "local_address": pl.String,
    "local_port": pl.Int32,
    "remote_address": pl.String,
    "remote_port": pl.Int32,
    "filter_origin": pl.String,
    "source_path": pl.String,
    "member": pl.String,
    "record_id": pl.Int64,
}


def events(*rows: tuple) -> pl.DataFrame:
    """(seconds after Q0, kind, event id, protocol, local, local port, remote) per event."""
    out = []
    for n, (seconds, kind, event_id, *traffic) in enumerate(rows, start=1):
        protocol, local, lport, remote = (traffic + [None] * 4)[:4]
        out.append(
            {
                "machine": GUEST,
                "timestamp": at(seconds),
                "kind": kind,
                "event_id": event_id,
                "inbound": protocol is not None,
                "protocol": protocol,
                "local_address": local,
                "local_port": lport,
                "remote_address": remote,
                "remote_port": 50001 if remote else None,
                "filter_origin": None,
                "source_path": "Security.evtx",
                "member": None,
                "record_id": n,
            }
        )
    return pl.DataFrame(out, schema=EVENT_SCHEMA)


TRIGGER = (0.0, "guest.network_changed", 14)


def drop(seconds: float, remote: str = "10.30.0.9", port: int = 443, event_id: int = 5157):
    kind = "wfp.blocked_connection" if event_id == 5157 else "wfp.blocked_packet"
    return (seconds, kind, event_id, 6, ME, port, remote)


def allowed(seconds: float, remote: str = "10.30.0.9", local: str = ME):
    return (seconds, "wfp.allowed_connection", 5156, 6, local, 3389, remote)


def classified(seconds: float):
    return (seconds, "firewall.profile_changed", 2010)


WINDOW = pl.DataFrame(
    {"migration_id": ["M001"], "machine": [GUEST], "q0": [Q0], "clock_offset_s": [0.0]},
    schema={
        "migration_id": pl.String,
        "machine": pl.String,
        "q0": pl.Datetime("us", "UTC"),
        "clock_offset_s": pl.Float64,
    },
)


def logs(covered: bool) -> pl.DataFrame:
    """The guest's classification logs: covering the window, or not exported at all."""
    rows = [{"machine": GUEST, "logged_from": at(-3600), "last_seen": at(3600)}] if covered else []
    return pl.DataFrame(
        rows,
        schema={
            "machine": pl.String,
            "logged_from": pl.Datetime("us", "UTC"),
            "last_seen": pl.Datetime("us", "UTC"),
        },
    )


def window(*rows: tuple, covered: bool = True) -> dict[str, object]:
    measured, _ = measure(WINDOW, events(TRIGGER, *rows), logs(covered), MODEL, CATALOG.scopes)
    [row] = measured.to_dicts()
    return row


def test_classification_closes_a_normal_window() -> None:
    w = window(drop(0.5), drop(1.5), classified(2.4), drop(3.0))
    assert (w["end_evidence"], w["quarantine_class"]) == ("classified", "normal")
    assert w["q_duration_s"] == pytest.approx(2.4)
    assert w["blocked_inbound"] == 2  # the drop after the end is not the window's


def test_allowed_inbound_from_another_machine_closes_it() -> None:
    w = window(drop(0.5), allowed(1.2), drop(2.0))
    assert (w["end_evidence"], w["quarantine_class"]) == ("allowed-inbound", "normal")
    assert w["blocked_inbound"] == 1


def test_no_drop_and_traffic_allowed_at_once_is_no_quarantine() -> None:
    assert window(allowed(0.3))["quarantine_class"] == "none"


def test_silent_classification_logs_mean_the_safety_timeout() -> None:
    w = window(drop(1.0), drop(6.5), drop(9.0))
    assert (w["end_evidence"], w["quarantine_class"]) == (
        "timeout-no-classification",
        "safety-timeout",
    )
    assert w["q_duration_s"] == pytest.approx(MODEL.safety_timeout_s)
    assert w["blocked_inbound"] == 2


def test_a_classification_after_the_timeout_comes_too_late() -> None:
    w = window(drop(1.0), classified(9.5))
    assert w["end_evidence"] == "timeout-no-classification"
    assert w["q_duration_s"] == pytest.approx(MODEL.safety_timeout_s)


def test_without_classification_logs_drops_until_the_timeout_and_traffic_after_bracket_it():
    w = window(drop(1.0), drop(6.6), allowed(7.4), covered=False)
    assert (w["end_evidence"], w["quarantine_class"]) == ("timeout-bracketed", "safety-timeout")


def test_without_classification_logs_drops_past_the_normal_span_show_a_long_window() -> None:
    w = window(drop(1.0), drop(5.5), covered=False)
    assert (w["end_evidence"], w["quarantine_class"]) == ("timeout-assumed", "prolonged")
    assert w["blocked_until_s"] == pytest.approx(5.5)


def test_without_classification_logs_and_no_late_drop_nothing_is_known() -> None:
    w = window(drop(1.0), covered=False)
    assert (w["end_evidence"], w["quarantine_class"]) == ("timeout-assumed", "undetermined")


def test_loopback_self_and_multicast_traffic_neither_ends_nor_counts() -> None:
    w = window(
        drop(0.5),
        allowed(1.0, remote="127.0.0.1", local="127.0.0.2"),
        allowed(1.5, remote=ME),
        drop(2.0, remote="224.0.0.251", port=5353),
        covered=False,
    )
    assert w["end_evidence"].startswith("timeout")
    assert (w["blocked_inbound"], w["blocked_out_of_scope"]) == (1, 1)


def test_the_timeout_counts_from_the_last_network_change() -> None:
    """A second NIC's (or a repeated) network change 4 s later extends the window."""
    w = window((4.0, "guest.network_changed", 14), drop(10.0))
    assert w["network_changes"] == 2
    assert w["q_duration_s"] == pytest.approx(4.0 + MODEL.safety_timeout_s)
    assert w["blocked_inbound"] == 1


def test_a_network_change_after_the_timeout_is_not_the_same_window() -> None:
    chained = _last_network_event(
        WINDOW, events(TRIGGER, (7.5, "guest.network_changed", 14)), MODEL.safety_timeout_s
    )
    assert chained["network_changes"].to_list() == [1]
    assert chained["last_change_at"].to_list() == [Q0]


def test_a_packet_logged_as_5152_and_5157_is_one_packet() -> None:
    frame = events(
        drop(1.0, event_id=5152),
        drop(1.0, event_id=5157),  # the same packet
        drop(2.0, event_id=5157),  # the client's retry: another packet
        drop(2.0, remote="10.30.0.10"),  # another client at the same instant
    ).with_columns(pl.lit("remote").alias("scope"))
    packets = _packet_ids(frame, MODEL.packet_pair_s).sort("record_id")["packet"].to_list()
    assert packets[0] == packets[1]
    assert len(set(packets)) == 3


def test_sides_swapped_in_one_of_the_pair_still_pair() -> None:
    """velociraptor's mDNS 5157 names the sender in Source: a pair whose events name the
    two endpoints the other way round is still one packet."""
    frame = events(drop(1.0, event_id=5152), drop(1.0, event_id=5157)).with_columns(
        pl.Series("local_address", [ME, "10.30.0.9"]),
        pl.Series("local_port", [443, 50001], dtype=pl.Int32),
        pl.Series("remote_address", ["10.30.0.9", ME]),
        pl.Series("remote_port", [50001, 443], dtype=pl.Int32),
    )
    assert _packet_ids(frame, MODEL.packet_pair_s)["packet"].n_unique() == 1


@pytest.mark.parametrize(
    ("local", "remote", "scope"),
    [
        (ME, "10.30.0.9", "remote"),
        ("127.0.0.2", "127.0.0.1", "loopback"),
        ("::1", "::1", "self"),
        (ME, ME, "self"),
        ("224.0.0.251", "192.168.38.1", "multicast"),  # velociraptor's sides for mDNS
        (ME, "224.0.0.252", "multicast"),
        ("ff02::1:3", "fe80::1", "multicast"),
        ("10.255.255.255", "10.0.2.18", "broadcast"),  # the RDP-tunnel sample's NetBIOS
        ("255.255.255.255", "0.0.0.0", "broadcast"),
        ("fe80::80ac:4126:fa58:1b81", "fe80::1", "remote"),  # link-local is another machine
    ],
)
def test_traffic_scope(local: str, remote: str, scope: str) -> None:
    frame = pl.DataFrame({"local_address": [local], "remote_address": [remote]})
    assert frame.select(traffic_scope(CATALOG.scopes))["scope"].to_list() == [scope]


def test_a_step_the_guest_did_not_log_is_searched_within_the_jump_allowed() -> None:
    """Without a logged step, a migration whose trigger is 25 s off its guest's offset
    takes the nearest unclaimed trigger within clock_jump_max_s; one 300 s off stays
    unfound (the logs cannot say it is this migration's)."""
    from pipeline.quarantine import find_windows

    pairs = pl.DataFrame(
        {
            "migration_id": ["M001", "M002", "M003"],
            "machine": [GUEST] * 3,
            "end": [at(0.0), at(1000.0), at(5000.0)],
            "clock_offset_s": [0.0] * 3,
        },
        schema_overrides={"end": pl.Datetime("us", "UTC")},
    )
    guest = events(
        (0.5, "guest.network_changed", 14),
        (1025.5, "guest.network_changed", 14),
        (5300.5, "guest.network_changed", 14),
    )
    found = find_windows(pairs, guest, MODEL, MODEL.tolerance_s).sort("migration_id")
    assert found.select("migration_id", "trigger_match").rows() == [
        ("M001", "offset"),
        ("M002", "clock-jump"),
    ]
    assert found["clock_offset_s"][1] == pytest.approx(25.5)
