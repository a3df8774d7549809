"""Which computer is which machine, what role it plays, and which rows belong to whom:
machines.py on small hand-made frames."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from pipeline.machines import attribute_unnamed, classify, short_name, unrelated

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("logged", "machine"),
    [
        ("SQL7.corp.example", "sql7"),
        (" Web01 ", "web01"),
        ("HV-NODE1.corp.contoso.com", "hv-node1"),
        ("HV-NODE1", "hv-node1"),
        ("../../etc/x.corp.contoso.com", "../../etc/x"),  # hostile, and never ''
        (".local", ".local"),
    ],
)
def test_one_short_name_rule(logged: str, machine: str) -> None:
    assert pl.select(short_name(pl.lit(logged))).item() == machine


def _cover(*rows: tuple[str, str]) -> pl.DataFrame:
    """(computer, channel) rows with a span, as machines.coverage gives them."""
    return pl.DataFrame(
        [
            {
                "computer": computer,
                "channel": channel,
                "first_ts": T0,
                "last_ts": T0 + timedelta(hours=1),
                "events": 10,
                "machine": pl.select(short_name(pl.lit(computer))).item(),
            }
            for computer, channel in rows
        ]
    )


TAGGED = pl.DataFrame({"computer": ["HV-NODE1.corp.contoso.com"], "kind": ["migration.completed"]})


def test_roles_from_what_each_computer_logged_and_the_users_word() -> None:
    cover = _cover(
        ("HV-NODE1.corp.contoso.com", "Microsoft-Windows-Hyper-V-VMMS-Admin"),
        ("HV-NODE1.corp.contoso.com", "System"),
        ("APP-VM01", "System"),
        ("DC03", "Security"),
    )
    roles = classify(cover, TAGGED, hosts=(), guests=())
    assert dict(roles.select("machine", "role").iter_rows()) == {
        "hv-node1": "host",
        "app-vm01": "guest",
        "dc03": "guest",
    }
    given = classify(cover, TAGGED, hosts=("dc03.corp.contoso.com",))
    assert given.filter(pl.col("machine") == "dc03").select("role", "role_source").row(0) == (
        "host",
        "given",
    )


def test_a_guest_covering_no_migration_is_unrelated_unless_the_user_said_so() -> None:
    cover = _cover(("APP-VM01", "System"), ("FS-LEGACY01", "System"), ("DC03", "System"))
    roles = classify(cover, TAGGED.clear(), guests=("dc03",))
    matches = pl.DataFrame({"machine": ["app-vm01"]})
    covers = pl.DataFrame(
        {"vm_key": [], "machine": []}, schema={"vm_key": pl.String, "machine": pl.String}
    )
    out = dict(
        unrelated(roles, matches, covers, any_migration=True).select("machine", "role").iter_rows()
    )
    assert out == {"app-vm01": "guest", "fs-legacy01": "unrelated", "dc03": "guest"}
    # Without any migration nothing can be told: every non-host stays a guest.
    assert set(unrelated(roles, matches, covers, any_migration=False)["role"]) == {"guest"}


def test_an_unnamed_log_takes_the_computer_of_its_folder() -> None:
    """pfirewall.log names no computer: it belongs to the machine whose logs share its
    folder, or a folder or two above (LogFiles/Firewall)."""
    events = pl.LazyFrame(
        {
            "computer": ["APP-VM01", None, "DC03", None],
            "source_path": [
                "case/APP-VM01/System.evtx",
                "case/APP-VM01/LogFiles/Firewall/pfirewall.log",
                "case/DC03/Security.evtx",
                "elsewhere/pfirewall.log",
            ],
            "member": [None, None, None, None],
        },
        schema={"computer": pl.String, "source_path": pl.String, "member": pl.String},
    )
    out = attribute_unnamed(events).collect()
    by_path = dict(out.select("source_path", "computer").iter_rows())
    assert by_path["case/APP-VM01/LogFiles/Firewall/pfirewall.log"] == "APP-VM01"
    assert by_path["elsewhere/pfirewall.log"] is None  # no named neighbour: matches nothing
