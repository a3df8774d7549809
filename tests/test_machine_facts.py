"""Machine facts from real System logs: OS and build, zone, boots, renames, updates, clocks.

Every expected value below was read from the named public sample with pyevtx-rs
(evtx.PyEvtxParser(path).records_json()), not from lmtrace's own simulator.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from parsers.time_values import parse_zone
from pipeline.catalog import CatalogError, load_catalog
from pipeline.correlate import Correlation, correlate
from pipeline.ingest import ingest
from pipeline.machine_facts import windows_zones
from pipeline.machines import aliases, machine_of
from pipeline.store import scan_events

SAMPLES = (
    "parsers/velociraptor__RDPAuth_System.evtx",  # Windows Server 2016, one boot
    "parsers/plaso__System.evtx",  # two renames, FQDN forms, Pacific then UTC
    "network/tugix456__System.evtx",  # a rename, a Turkish zone name, updates
    "parsers/ts-evtx__System.evtx",  # renames, Kernel-General 1 version 4
    "parsers/python-evtx__system.evtx",  # Windows 7, Eastern time, version 0 updates
)


@pytest.fixture(scope="module")
def real(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Correlation:
    store = tmp_path_factory.mktemp("facts") / "store"
    ingest([corpus_dir / s for s in SAMPLES], store)
    return correlate(scan_events(store), load_catalog())


def _row(result: Correlation, machine: str) -> dict:
    rows = result.machines.filter(pl.col("machine") == machine)
    assert rows.height == 1, result.machines["machine"].to_list()
    return rows.row(0, named=True)


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


@pytest.mark.corpus
def test_server_2016_product_build_zone_and_boot(real: Correlation) -> None:
    dc = _row(real, "dc")
    assert dc["os_product"] == "Windows Server 2016 Standard Evaluation"
    assert (dc["os_version"], dc["os_build"], dc["os_revision"]) == ("10.0.14393", 14393, 693)
    assert dc["os_build_lab"] == "14393.rs1_release.161220-1747"
    assert (dc["time_zone"], dc["zone_bias_min"], dc["zone_iana"]) == (
        "Coordinated Universal Time",
        0,
        "Etc/UTC",
    )
    assert dc["last_boot"] == _utc(2021, 2, 12, 12, 33, 10, 574463)
    assert dc["boots"] == 1


@pytest.mark.corpus
def test_without_6013_the_boot_events_give_version_and_build(
    corpus_dir: Path, tmp_path: Path
) -> None:
    """The Server 2016 sample's boot: Kernel-General 12 (10, 0, 14393, QFE 693), and EventLog
    6009 ('10.00.', '14393'), for logs whose 6013 was not exported or was cleared."""
    from pipeline.catalog import tag
    from pipeline.machine_facts import BOOT, UPTIME, extract
    from pipeline.machines import short_name

    ingest([corpus_dir / SAMPLES[0]], tmp_path / "store")
    tagged = tag(scan_events(tmp_path / "store"), load_catalog())
    tagged = tagged.with_columns(short_name(pl.col("computer")).alias("machine"))
    columns = ["os_product", "os_version", "os_build", "os_revision"]
    no_6013 = extract(tagged.filter(pl.col("kind") != UPTIME)).facts.select(columns)
    assert no_6013.row(0) == (None, "10.0.14393", 14393, 693)
    only_6009 = extract(tagged.filter(~pl.col("kind").is_in([UPTIME, BOOT]))).facts
    assert only_6009.select(columns).row(0) == (None, "10.0.14393", 14393, None)


@pytest.mark.corpus
def test_renames_and_fqdn_forms_are_one_machine(real: Correlation) -> None:
    # plaso: 37L4247F27-26 -> WIN-NBRJP24VCHB (joins a domain: FQDN form) -> DC1.
    dc1 = _row(real, "dc1")
    assert set(dc1["names"]) == {
        "37L4247F27-26",
        "WIN-NBRJP24VCHB",
        "WIN-NBRJP24VCHB.internal.greendale.edu",
        "DC1",
        "DC1.internal.greendale.edu",
    }
    assert [(r["old"], r["new"]) for r in dc1["renames"]] == [
        ("37L4247F27-26", "WIN-NBRJP24VCHB"),
        ("WIN-NBRJP24VCHB", "DC1"),
    ]
    assert dc1["events"] == 5009  # every event of the file, under one machine
    assert dc1["computer"] == "DC1.internal.greendale.edu"
    tugix = _row(real, "desktop-hb59u74")
    assert set(tugix["names"]) == {"WIN-U86O5IH36UE", "DESKTOP-HB59U74"}
    # ts-evtx: the first 6011 has an empty old name (setup): not a rename.
    ts = _row(real, "nikolaismetbd82")
    assert [(r["old"], r["new"]) for r in ts["renames"]] == [("NIKOLAI-BSDBOH4", "NIKOLAISMETBD82")]
    assert real.machines.height == 5


@pytest.mark.corpus
def test_zones_as_logged_with_their_bias(real: Correlation) -> None:
    dc1 = _row(real, "dc1")
    # The plaso machine ran on Pacific time, then was set to UTC (a 9 h clock step shows it).
    assert dc1["zones_logged"][0] == "480 Pacific Standard Time"
    assert "0 Coordinated Universal Time" in dc1["zones_logged"]
    tugix = _row(real, "desktop-hb59u74")
    assert (tugix["time_zone"], tugix["zone_bias_min"]) == ("Türkiye Standart Saati", -180)
    assert tugix["zone_iana"] is None  # a localized name: placed by its bias alone
    wks = _row(real, "wks-win764bitb")
    assert (wks["time_zone"], wks["zone_bias_min"], wks["zone_iana"]) == (
        "Eastern Standard Time",
        300,
        "America/New_York",
    )
    assert _row(real, "nikolaismetbd82")["zone_iana"] == "Europe/London"


@pytest.mark.corpus
def test_windows_updates_with_their_kb(real: Correlation) -> None:
    ts = {u["kb"]: u for u in _row(real, "nikolaismetbd82")["updates"]}
    assert ts["KB5050575"]["status"] == "installed"
    assert ts["KB5050575"]["title"].startswith("2025-01 Update for Windows 11 Version 24H2")
    assert "KB2267602" not in ts  # a Defender signature update that failed: not the OS
    # 43 and 44 before a 19 leave it installed; a download with nothing after it is only that.
    assert ts["KB5058411"]["status"] == "downloading"
    assert ts["KB5058411"]["timestamp"] == _utc(2025, 6, 8, 7, 12, 50, 499378)  # record 1049
    assert "KB5007651" not in ts  # Windows Security platform (Defender): not the OS
    tugix = {u["kb"] for u in _row(real, "desktop-hb59u74")["updates"]}
    assert tugix == {"KB5020683"}  # the Xbox app that failed has no KB
    wks = {u["kb"] for u in _row(real, "wks-win764bitb")["updates"]}
    assert {"KB2641653", "KB2667402", "KB2647518"} <= wks
    assert "KB890830" not in wks  # the malicious software removal tool


@pytest.mark.corpus
def test_clock_changes_with_delta_reason_and_process(real: Correlation, tmp_path: Path) -> None:
    changes = real.clock_changes
    ts = changes.filter(pl.col("machine") == "nikolaismetbd82").sort("timestamp")
    step = ts.filter(pl.col("delta_ms_logged") == -28799616).row(0, named=True)
    assert step["delta_s"] == pytest.approx(-28799.616892)
    assert step["reason"] == 1
    assert step["process"].endswith("prl_tools.exe")
    assert step["old_time"] == _utc(2025, 6, 3, 0, 46, 20, 323892)
    # Version 0 events (Windows 7) carry only the two times: the delta is measured.
    plaso = changes.filter(pl.col("machine") == "dc1")
    assert plaso["delta_s"].min() == pytest.approx(-32398.475127)
    assert plaso["reason"].is_null().all()
    tugix = changes.filter(pl.col("machine") == "desktop-hb59u74")
    assert tugix.height == 3 and tugix["delta_ms_logged"].is_null().all()
    assert set(tugix["reason"].to_list()) == {1, 3}
    assert changes["role"].to_list() == ["guest"] * changes.height
    # Written as a table of its own, and in findings.json.
    from pipeline.outputs import write_outputs

    write_outputs(real, tmp_path)
    assert pl.read_parquet(tmp_path / "clock_changes.parquet").equals(changes)
    findings = json.loads((tmp_path / "findings.json").read_text(encoding="utf-8"))
    assert len(findings["clock_changes"]) == changes.height


def test_rename_chains_merge_and_clones_do_not() -> None:
    t = [datetime(2025, 1, d, tzinfo=timezone.utc) for d in range(1, 8)]
    renamed = pl.DataFrame(
        {
            "timestamp": t[:6],
            "old_name": ["WIN-A1", "TEMP", "", "B.corp.example", "TEMPLATE", "TEMPLATE"],
            "new_name": ["TEMP", "SQL7", "FRESH", "C", "WEB1", "WEB2"],
        }
    )
    got = aliases(renamed)
    assert got == {"win-a1": "sql7", "temp": "sql7", "b": "c"}
    # Clones of one template stay two machines; the template name merges with neither.
    frame = pl.DataFrame({"computer": ["WIN-A1", "temp.corp", "SQL7", "TEMPLATE", "WEB1"]})
    assert frame.select(machine_of(pl.col("computer"), got))["computer"].to_list() == [
        "sql7",
        "sql7",
        "sql7",
        "template",
        "web1",
    ]
    back = pl.DataFrame({"timestamp": t[:2], "old_name": ["A", "B"], "new_name": ["B", "A"]})
    assert aliases(back) == {"b": "a"}


def test_every_windows_zone_maps_to_a_zone_polars_knows() -> None:
    zones = windows_zones()
    assert zones["Pacific Standard Time"] == "America/Los_Angeles"
    assert zones["Coordinated Universal Time"] == "Etc/UTC"
    probe = pl.Series([datetime(2025, 7, 1)]).cast(pl.Datetime("us"))
    for name in set(zones.values()):
        probe.dt.replace_time_zone(name)  # raises on an unknown zone


@pytest.mark.corpus
def test_pfirewall_local_times_take_the_zone_the_system_log_names(
    corpus_dir: Path, tmp_path: Path
) -> None:
    """A real Windows 7 System log (6013: '300 Eastern Standard Time') beside a firewall log
    read without --guest-tz: its 10:00 local on 2012-03-15 (EDT) is 14:00 UTC."""
    from parsers.pfirewall import PfirewallSettings
    from pipeline import firewall_zone

    log = tmp_path / "pfirewall.log"
    log.write_text(
        "#Version: 1.5\n#Software: Microsoft Windows Firewall\n#Time Format: Local\n"
        "#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags"
        " tcpsyn tcpack tcpwin icmptype icmpcode info path\n"
        "2012-03-15 10:00:00 DROP TCP 10.0.0.9 10.0.0.5 50000 443 52 S 1 0 64240 - - - RECEIVE\n"
    )
    store = tmp_path / "store"
    system = corpus_dir / "parsers/python-evtx__system.evtx"
    firewall = PfirewallSettings(computer="WKS-WIN764BITB.shieldbase.local")
    ingest([system, log], store, firewall=firewall)
    result = correlate(scan_events(store), load_catalog())
    assert result.notes == (
        "pfirewall.log of wks-win764bitb: local times read in America/New_York, the zone its"
        " System log names (EventLog 6013: '300 Eastern Standard Time'); --guest-tz overrides",
    )
    placed, _ = firewall_zone.resolve(scan_events(store), result.machines, {})
    when = placed.filter(pl.col("provider") == "pfirewall.log").collect()["timestamp"]
    assert when.to_list() == [_utc(2012, 3, 15, 14, 0, 0)]
    # Given a zone, the reader places the times itself; one that contradicts 6013 is said.
    given = tmp_path / "given"
    ingest(
        [system, log], given, firewall=PfirewallSettings(parse_zone("+01:00"), firewall.computer)
    )
    assert correlate(scan_events(given), load_catalog()).notes == (
        "pfirewall.log of wks-win764bitb was read in +01:00 (--guest-tz), but America/New_York"
        " is the zone its System log names (EventLog 6013: '300 Eastern Standard Time'): their"
        " offsets differ, so one of the two is wrong",
    )
    agree = tmp_path / "agree"
    ingest(
        [system, log], agree, firewall=PfirewallSettings(parse_zone("-04:00"), firewall.computer)
    )
    assert correlate(scan_events(agree), load_catalog()).notes == ()  # EDT on 2012-03-15


# --- the four cases of issue 14 on simulated bundles (real layouts, see test_simulate) ------


def _simulated(tmp: Path, **knobs: object) -> tuple[Correlation, dict]:
    """Simulate, then analyse without --guest-tz, as a user who does not know the zone."""
    import json

    from parsers.pfirewall import PfirewallSettings
    from pipeline.simulate import simulate
    from pipeline.simulate.plan import SimulateOptions

    options = {"scenario": "quarantine-bug", "seed": 5, "noise": 30.0, "load": 3.0, **knobs}
    simulate(SimulateOptions(**options), tmp / "bundle")  # type: ignore[arg-type]
    truth = json.loads((tmp / "bundle" / "ground_truth.json").read_text(encoding="utf-8"))
    ingest([tmp / "bundle"], tmp / "store", firewall=PfirewallSettings(tz=None))
    truth["bundle"] = str(tmp / "bundle")
    return correlate(scan_events(tmp / "store"), load_catalog()), truth


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Correlation, dict]]:
    """One small bundle per case, simulated, ingested and correlated once for the module."""
    cases = {
        "ws2019": {"guest_os": "2019"},
        "patched": {"scenario": "host-patched"},
        "renamed": {"rename_guest": True, "guest_clock_jump": 4.0},
        "zone": {"scenario": "no-audit", "pfirewall": True, "guest_tz": "America/New_York"},
        # the migration falls in the second pass of New York's repeated hour (01:00 EST)
        "fold": {
            "scenario": "no-audit",
            "pfirewall": True,
            "guest_tz": "America/New_York",
            "start": datetime(2025, 11, 2, 5, 50, tzinfo=timezone.utc),
        },
    }
    return {
        name: _simulated(tmp_path_factory.mktemp(name), **knobs)  # type: ignore[arg-type]
        for name, knobs in cases.items()
    }


def test_a_guest_on_server_2019_is_said_to_be_outside_the_known_versions(scenarios) -> None:
    result, truth = scenarios["ws2019"]
    assert result.summary.verdict == truth["verdict"] == "affected"  # measured all the same
    guest = _row(result, "app-vm01")
    assert (guest["os_product"], guest["os_version"]) == (
        "Windows Server 2019 Datacenter",
        "10.0.17763",
    )
    assert guest["os_build_lab"] == "17763.rs5_release.180914-1434"  # 6013's form
    note = (
        "app-vm01 runs Windows Server 2019 Datacenter (10.0.17763): the quarantine bug is known"
        " on Windows Server 2012 R2 (6.3.9600) and Windows Server 2016 (10.0.14393) guests;"
        " this guest was measured all the same"
    )
    assert result.migrations["notes"].to_list() == [[note]]
    assert note in result.summary.reasons


def test_the_affected_versions_are_catalog_data(scenarios, tmp_path: Path) -> None:
    """A later source naming Server 2019 as affected is a --catalog file, not a code change;
    a [fix] table that no longer types, or a pattern that does not compile, is refused."""
    result, truth = scenarios["ws2019"]
    extra = tmp_path / "extra.toml"
    extra.write_text('[fix]\nbug_versions = { "10.0.17763" = "Windows Server 2019" }\n')
    store = Path(truth["bundle"]).parent / "store"
    again = correlate(scan_events(store), load_catalog([extra]))
    assert again.migrations["notes"].to_list() == [[]]
    assert again.summary.verdict == result.summary.verdict
    for text, message in (
        ("[fix]\nrevision = 'late'\n", "revision: expected int, got str"),
        ("[fix]\nlater_updates = '(unclosed'\n", "[fix] later_updates"),
    ):
        extra.write_text(text)
        with pytest.raises(CatalogError, match=re.escape(message)):
            load_catalog([extra])


def test_a_patched_host_without_the_registry_value(scenarios) -> None:
    result, truth = scenarios["patched"]
    assert result.summary.verdict == truth["verdict"] == "affected"
    (row,) = result.migrations.iter_rows(named=True)
    (note,) = [n for n in row["notes"] if n.startswith(_short_host(row["destination"]))]
    assert "has the host fix (KB4338822 installed" in note
    assert note.endswith(
        "the update is installed but the registry value SendLmNetworkChangeIndication=0 is not"
        " set, or the host was not restarted since"
    )  # the host restarted after the install: no 'no boot' remark
    hosts = {e["host"]: e for e in result.summary.remediation if e["id"].startswith("host-fix:")}
    assert set(hosts) == {"hv-node1", "hv-node2"}
    for entry in hosts.values():
        assert "missing: the registry value, or a restart since" in entry["title"]
        assert entry["steps"] == [
            r"Set HKLM\System\CurrentControlSet\Services\VmsMp\Parameters"
            r"\SendLmNetworkChangeIndication = 0 (DWORD), then restart the host."
        ]
    # The unpatched case names the KB as missing.
    plain, _ = scenarios["ws2019"]
    titles = [e["title"] for e in plain.summary.remediation if e["id"].startswith("host-fix:")]
    assert titles and all("missing KB4338822" in t for t in titles)


@pytest.mark.corpus
def test_a_host_whose_fix_only_downloaded_is_told_to_finish_the_install(
    scenarios, corpus_dir: Path
) -> None:
    """A real WindowsUpdateClient 44 (ts-evtx record 1049) grafted into an unpatched host's
    folder, its updateTitle changed to KB4338822's: a download is not an install."""
    from tests.graft import as_spec, graft, real_event

    _, truth = scenarios["ws2019"]
    bundle = Path(truth["bundle"])
    event = real_event(corpus_dir, "parsers/ts-evtx__System.evtx", 1049)
    title = "2018-07 Cumulative Update for Windows Server 2016 for x64-based Systems (KB4338822)"
    event["EventData"]["updateTitle"] = title  # type: ignore[index]
    when = _utc(2025, 3, 2, 10, 0, 0)
    graft(bundle, "HV-NODE1", "download", [as_spec(event, when, "HV-NODE1.corp.contoso.com")])
    store = bundle.parent / "store-download"
    ingest([bundle], store)
    result = correlate(scan_events(store), load_catalog())
    hosts = {e["host"]: e for e in result.summary.remediation if "host" in e}
    assert "missing KB4338822" in hosts["hv-node1"]["title"]
    assert hosts["hv-node1"]["steps"][0] == (
        "Its System log shows KB4338822 downloading on 2025-03-02 10:00 UTC and no install after"
        " it: finish that install (WindowsUpdateClient 19 says it is done), then restart."
    )
    assert hosts["hv-node2"]["steps"][0].startswith("Install KB4338822")
    assert not any("has the host fix" in n for n in result.migrations["notes"].explode())


def _short_host(name: str) -> str:
    return name.lower().split(".")[0]


def test_a_renamed_guest_is_one_machine_and_its_clock_step_is_measured(scenarios) -> None:
    result, truth = scenarios["renamed"]
    assert result.summary.verdict == truth["verdict"]
    former = truth["machines"][-1]["former_name"]
    assert former and former.startswith("WIN-")
    guests = result.machines.filter(pl.col("role") == "guest")
    assert guests["machine"].to_list() == ["app-vm01"]  # not two machines
    guest = guests.row(0, named=True)
    assert set(guest["names"]) == {former, "APP-VM01"}
    assert [(r["old"], r["new"]) for r in guest["renames"]] == [(former, "APP-VM01")]
    assert result.migrations["machine"].to_list() == ["app-vm01"]
    steps = result.clock_changes.filter(pl.col("machine") == "app-vm01")
    assert steps["delta_s"].to_list() == [pytest.approx(4.0)]
    assert steps["role"].to_list() == ["guest"]
    # Used in the clock offset, and the report says so with the event's file and record.
    from pipeline.outputs import findings_document
    from pipeline.report import report_html, report_markdown

    (m,) = result.migrations.iter_rows(named=True)
    assert m["clock_steps_s"] == pytest.approx(4.0)
    step = steps.row(0, named=True)
    ref = m["clock_step_ref"]
    assert (ref["source_path"], ref["record_id"]) == (step["source_path"], step["record_id"])
    doc = json.loads(json.dumps(findings_document(result), default=str))
    where = f"{step['source_path']} record {step['record_id']}"
    assert f"clock step (Kernel-General 1, +4.000 s) in {where}" in report_markdown(doc)
    assert "+4.000 s of it are clock steps the guest logged (Kernel-General 1)" in report_html(doc)


def test_pfirewall_zone_from_the_guests_6013(scenarios) -> None:
    result, truth = scenarios["zone"]
    # no WFP auditing: only pfirewall.log shows the drops, in New York time.
    assert result.summary.verdict == truth["verdict"] == "affected"
    assert result.notes == (
        "pfirewall.log of app-vm01: local times read in America/New_York, the zone its System"
        " log names (EventLog 6013: '300 Eastern Standard Time'); --guest-tz overrides",
    )
    assert result.migrations["blocked_inbound"].item() > 0
    assert set(result.blocked["kind"]) == {"pflog.drop"}
    # The same as when the user names the zone; read as UTC, the drops miss the window.
    from parsers.pfirewall import PfirewallSettings

    tmp = Path(truth["bundle"]).parent
    for zone, name in (("America/New_York", "given"), ("UTC", "wrong")):
        ingest([Path(truth["bundle"])], tmp / name, firewall=PfirewallSettings(tz=parse_zone(zone)))
        other = correlate(scan_events(tmp / name), load_catalog())
        if zone == "UTC":
            assert other.blocked.is_empty()
            (note,) = other.notes
            assert note.startswith("pfirewall.log of app-vm01 was read in UTC (--guest-tz), but")
        else:
            assert other.notes == ()
            assert other.blocked.drop("source_path").equals(result.blocked.drop("source_path"))


def test_drops_in_the_hour_repeated_in_autumn_are_placed_in_their_pass(scenarios) -> None:
    """New York shows 01:00-01:59 twice on 2025-11-02; the migration comes in the second
    pass, the log's first lines in the first. Read at the first pass's offset, every
    drop landed an hour before the migration: likely-affected instead of affected.
    With the zone from the guest's 6013 and with --guest-tz alike, they are in it."""
    from parsers.pfirewall import PfirewallSettings

    result, truth = scenarios["fold"]
    assert result.summary.verdict == truth["verdict"] == "affected"
    assert result.migrations["blocked_inbound"].item() > 0
    assert not any("repeated" in note for note in result.notes)
    tmp = Path(truth["bundle"]).parent
    ingest(
        [Path(truth["bundle"])],
        tmp / "given",
        firewall=PfirewallSettings(tz=parse_zone("America/New_York")),
    )
    given = correlate(scan_events(tmp / "given"), load_catalog())
    assert given.blocked.drop("source_path").equals(result.blocked.drop("source_path"))


# --- a name from before a rename means the machine it is now, everywhere ------------------


@pytest.fixture(scope="module")
def renamed_later(tmp_path_factory: pytest.TempPathFactory) -> Correlation:
    """The quarantine-bug bundle whose destination host and guest were renamed after the
    migration (EventLog 6011 in the layout of the real samples, logged under the new name):
    the migration names HV-NODE2 and the VM is still called APP-VM01."""
    from pipeline.simulate import simulate
    from pipeline.simulate.layouts import layout
    from pipeline.simulate.plan import SimulateOptions
    from tests.graft import graft

    tmp = tmp_path_factory.mktemp("renamed-later")
    options = SimulateOptions(scenario="quarantine-bug", seed=5, noise=30.0, load=3.0)
    simulate(options, tmp / "bundle")
    truth = json.loads((tmp / "bundle" / "ground_truth.json").read_text(encoding="utf-8"))
    (migration,) = truth["migrations"]
    when = datetime.fromisoformat(migration["end"].replace("Z", "+00:00")) + timedelta(hours=1)
    for folder, old, new in (
        ("HV-NODE2", "HV-NODE2", "HV-NEW2"),
        ("APP-VM01", "APP-VM01", "SQL-NEW"),
    ):
        rename = layout("eventlog.renamed").event(when, new, (old, new, None), pid=0, tid=0)
        graft(tmp / "bundle", folder, "rename", [rename])
    ingest([tmp / "bundle"], tmp / "store")
    return correlate(scan_events(tmp / "store"), load_catalog())


def test_a_vm_named_as_its_guest_was_before_a_rename_matches_by_name(renamed_later) -> None:
    assert sorted(renamed_later.machines["machine"]) == ["hv-new2", "hv-node1", "sql-new"]
    (m,) = renamed_later.migrations.iter_rows(named=True)
    assert (m["vm_name"], m["machine"], m["match_method"]) == ("APP-VM01", "sql-new", "name")
    assert m["verdict"] == "affected"


def test_a_renamed_host_keeps_its_migrations_on_its_one_lane(renamed_later) -> None:
    from pipeline.timeline.lanes import lane_layout
    from pipeline.timeline.spans import span_frame

    lanes = lane_layout(renamed_later, None)
    assert lanes.keys == ("hv-new2", "hv-node1", "sql-new")
    spans = span_frame(renamed_later.migrations, lambda e: e, lanes.index(), renamed_later.aliases)
    assert sorted(spans["_host"]) == ["hv-new2", "hv-node1"]  # the destination's span too
    hosts = [e["host"] for e in renamed_later.summary.remediation if "host" in e]
    assert hosts == ["hv-new2", "hv-node1"]


def test_map_and_clock_offset_given_with_a_former_name_apply_to_the_machine(scenarios) -> None:
    from pipeline.correlate import CorrelateSettings
    from pipeline.matching import MatchSettings

    _, truth = scenarios["renamed"]
    former = truth["machines"][-1]["former_name"]
    store = Path(truth["bundle"]).parent / "store"
    given = MatchSettings(
        mapping={"APP-VM01": former}, clock_offsets={former: 12.5, "NOSUCH.corp": 1.0}
    )
    result = correlate(scan_events(store), load_catalog(), CorrelateSettings(match=given))
    (m,) = result.migrations.iter_rows(named=True)
    assert (m["machine"], m["match_method"]) == ("app-vm01", "mapping")
    # The offset given, plus the clock step the guest logged on resume (Kernel-General 1).
    assert m["offset_method"] == "given" and m["clock_steps_s"] == pytest.approx(4.0)
    assert m["clock_offset_s"] == pytest.approx(12.5 + 4.0)
    renamed = "that computer was renamed (EventLog 6011) and is app-vm01 now; applied to app-vm01"
    assert result.notes == (
        f"--map {former}: {renamed}",
        f"--clock-offset {former}: {renamed}",
        "--clock-offset NOSUCH.corp: no computer of that name logged anything in this bundle"
        " (the machines table lists every name logged): not applied",
    )
