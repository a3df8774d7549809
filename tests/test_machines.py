"""Which computer is which machine, what role it plays, and which rows belong to whom:
machines.py on small hand-made frames."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from pipeline.machines import attribute_unnamed, classify, short_name, unnamed_logs, unrelated

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


def _logs(*rows: tuple[str | None, str, str | None]) -> pl.LazyFrame:
    """(computer, source_path, member) rows, one per log, as the store holds them."""
    return pl.LazyFrame(
        rows, schema={"computer": pl.String, "source_path": pl.String, "member": pl.String},
        orient="row",
    )  # fmt: skip


def _told(events: pl.LazyFrame, renamed: dict[str, str]) -> tuple[dict, list[str]]:
    """Each unnamed log's place -> the computer it was given, and the notes."""
    logs, notes = unnamed_logs(events, renamed)
    out = attribute_unnamed(events, logs).collect()
    place = pl.coalesce(pl.concat_str("source_path", pl.lit("!"), "member"), "source_path")
    return dict(out.select(place, "computer").iter_rows()), notes


def test_an_unnamed_log_takes_the_computer_of_its_folder() -> None:
    """pfirewall.log names no computer: it belongs to the machine whose logs share its
    folder, or a folder or two above (LogFiles/Firewall)."""
    told, notes = _told(
        _logs(
            ("APP-VM01", "case/APP-VM01/System.evtx", None),
            (None, "case/APP-VM01/LogFiles/Firewall/pfirewall.log", None),
            ("DC03", "case/DC03/Security.evtx", None),
            (None, "elsewhere/pfirewall.log", None),
            ("APP-VM01", "case/guest/System.evtx", None),
            ("WEB02.corp.contoso.com", "case/guest/Security.evtx", None),
            (None, "case/guest/pfirewall.log", None),
        ),
        {},
    )
    assert told["case/APP-VM01/LogFiles/Firewall/pfirewall.log"] == "APP-VM01"
    assert told["elsewhere/pfirewall.log"] is None  # no named neighbour: matches nothing
    # Two computers' logs beside it, and no name in its path: not the majority's, said.
    assert told["case/guest/pfirewall.log"] is None
    (note,) = notes
    assert note.startswith("case/guest/pfirewall.log names no computer")
    assert "(app-vm01, web02)" in note and "--firewall-computer" in note


@pytest.mark.parametrize(
    ("source_path", "member"),
    [
        ("flat/APP-VM01-pfirewall.log", None),
        ("flat/app-vm01_pfirewall.log", None),
        ("flat/APP-VM01.corp.contoso.com pfirewall.log", None),
        ("flat/APP-VM01/pfirewall.log", None),
        ("flat/logs.zip", "APP-VM01/Firewall/pfirewall.log"),
        ("flat/logs.zip", "app-vm01-pfirewall.log"),
    ],
)
def test_a_computer_named_in_the_file_or_folder_name_is_the_logs(
    source_path: str, member: str | None
) -> None:
    """A flat folder of several machines' logs (QA: the guest's pfirewall.log went to the
    host that logged most there): the one computer named in its name or path takes it."""
    hosts = [("HV-NODE1", f"flat/HV-NODE1-{n}.evtx", None) for n in ("System", "VMMS", "HA")]
    told, notes = _told(
        _logs(
            *hosts,
            ("APP-VM01", "flat/APP-VM01-System.evtx", None),
            ("VM01", "flat/VM01-System.evtx", None),  # a word of app-vm01, not its name
            (None, source_path, member),
        ),
        {},
    )
    place = f"{source_path}!{member}" if member else source_path
    assert told[place] == "APP-VM01" and notes == []


def test_only_whole_words_below_the_bundles_folder_name_a_computer() -> None:
    """``app-vm010`` is not ``app-vm01``; the folder that holds the whole bundle is named
    by the user (here after the case's host) and names nothing."""
    told, notes = _told(
        _logs(
            ("HV-NODE1", "cases/HV-NODE1/HV-NODE1-System.evtx", None),
            ("APP-VM01", "cases/HV-NODE1/APP-VM01-System.evtx", None),
            (None, "cases/HV-NODE1/app-vm010-pfirewall.log", None),
        ),
        {},
    )
    assert told["cases/HV-NODE1/app-vm010-pfirewall.log"] is None
    assert "(app-vm01, hv-node1)" in notes[0]


def test_a_renamed_computer_is_one_candidate() -> None:
    """A guest renamed after setup logs under both names in its own folder: one machine."""
    events = _logs(
        ("WIN-8QK2", "case/guest/System.evtx", None),
        ("APP-VM01", "case/guest/System.evtx", None),
        ("APP-VM01", "case/guest/Security.evtx", None),
        (None, "case/guest/pfirewall.log", None),
    )
    told, notes = _told(events, {"win-8qk2": "app-vm01"})
    assert told["case/guest/pfirewall.log"] == "APP-VM01" and notes == []
    assert _told(events, {})[0]["case/guest/pfirewall.log"] is None  # without the rename: two
