"""Migrations rebuilt from host events, on hand-made tagged frames (issue 9, item 9)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl

from pipeline.catalog import load_catalog
from pipeline.migrations import reconstruct

MODEL = load_catalog().model
T0 = datetime(2025, 3, 4, 9, 11, 0, tzinfo=timezone.utc)
VMID = "5e0f5a1c-1111-4a4a-9c9c-0123456789ab"


def host_events(*rows: tuple) -> pl.DataFrame:
    """(seconds, computer, kind, side, event id, destination payload) per event."""
    return pl.DataFrame(
        [
            {
                "timestamp": T0 + timedelta(seconds=s),
                "computer": computer,
                "kind": kind,
                "side": side,
                "event_id": event_id,
                "vm_name": "APP-VM01",
                "vmid": VMID.upper(),  # as real hosts write it
                "destination": destination,
                "blackout_s": None,
                "seconds": None,
                "provider": "Microsoft-Windows-Hyper-V-VMMS",
                "source_path": f"{computer}/VMMS-Admin.evtx",
                "member": None,
                "record_id": n,
            }
            for n, (s, computer, kind, side, event_id, destination) in enumerate(rows, 1)
        ]
    )


def test_only_stated_sides_are_asserted() -> None:
    [m] = reconstruct(
        host_events(
            (0, "HV-NODE1.corp.contoso.com", "migration.started", "source", 20413, "HV-NODE2"),
            (20, "HV-NODE1.corp.contoso.com", "migration.completed", None, 20415, None),
            (21, "HV-NODE2.corp.contoso.com", "migration.completed", None, 20418, None),
        ),
        MODEL,
    ).to_dicts()
    assert (m["source"], m["destination"]) == ("HV-NODE1.corp.contoso.com", "HV-NODE2")
    assert m["logged_by"] == ["HV-NODE1.corp.contoso.com", "HV-NODE2.corp.contoso.com"]
    assert m["vmid"] == VMID  # keyed in lower case whatever the host wrote


def test_the_destination_alone_names_no_side() -> None:
    [m] = reconstruct(
        host_events((21, "HV-NODE2", "migration.completed", None, 20418, None)), MODEL
    ).to_dicts()
    assert (m["source"], m["destination"]) == (None, None)
    assert m["logged_by"] == ["HV-NODE2"]


def test_a_source_equal_to_the_destination_is_never_reported() -> None:
    [m] = reconstruct(
        host_events(
            (0, "HV-NODE2", "migration.started", "source", 20413, "hv-node2.corp.contoso.com"),
            (20, "HV-NODE2", "migration.completed", None, 20418, None),
        ),
        MODEL,
    ).to_dicts()
    assert (m["source"], m["destination"]) == (None, None)


def test_a_failed_attempt_and_its_retry_are_two_migrations() -> None:
    migrations = reconstruct(
        host_events(
            (0, "HV-NODE1", "migration.started", "source", 20413, "HV-NODE2"),
            (10, "HV-NODE1", "migration.failed", None, 21024, None),
            (60, "HV-NODE1", "migration.started", "source", 20413, "HV-NODE2"),
            (80, "HV-NODE1", "migration.completed", None, 20415, None),
        ),
        MODEL,
    )
    assert migrations["status"].to_list() == ["failed", "completed"]
    assert migrations["migration_id"].to_list() == ["M001", "M002"]
