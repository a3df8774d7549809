"""Correlation against ground truth: every scenario, clock offsets, mismatched names, seeds.

Each case writes a real bundle with the simulator (real .evtx bytes), ingests it
through the real store and correlates it. The expected values come from the
simulator's ground_truth.json, which the analysis never reads.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from pipeline.catalog import load_catalog
from pipeline.correlate import CorrelateSettings, Correlation, correlate
from pipeline.ingest import ingest
from pipeline.matching import MatchSettings
from pipeline.simulate import simulate
from pipeline.simulate.plan import SimulateOptions
from pipeline.store import scan_events

SCENARIOS = (
    "quarantine-bug",
    "healthy",
    "host-fixed",
    "quarantine-disabled",
    "failed-migration",
    "no-audit",
    "cluster-drain",
)
OFFSETS = (0.0, 5.0, -5.0, 90.0, -90.0)


def _bundle(tmp: Path, options: SimulateOptions) -> tuple[Path, dict]:
    bundle = tmp / "bundle"
    simulate(options, bundle)
    truth = json.loads((bundle / "ground_truth.json").read_text(encoding="utf-8"))
    return bundle, truth


def _analyse(tmp: Path, bundle: Path, settings: CorrelateSettings | None = None) -> Correlation:
    store = tmp / "store"
    ingest([bundle], store)
    return correlate(scan_events(store), load_catalog(), settings or CorrelateSettings())


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _short(name: str) -> str:
    return name.lower().split(".")[0]


def check_against_truth(result: Correlation, truth: dict) -> None:
    """The checks the issue asks for: verdict, migrations, matches, durations, counts."""
    assert result.summary.verdict == truth["verdict"], result.summary.reasons
    ours = result.migrations
    assert ours.height == len(truth["migrations"])
    quarantines = {q["migration_id"]: q for q in truth["quarantines"]}
    observable = {
        m["name"]: m["wfp_auditing"] or truth["arguments"]["pfirewall"]
        for m in truth["machines"]
        if m["role"] == "guest"
    }
    for expected in truth["migrations"]:
        end = _when(expected["end"])
        row = ours.filter(
            (pl.col("vm_name") == expected["vm_name"])
            & ((pl.col("end") - end).abs() < pl.duration(seconds=1))
        )
        assert row.height == 1, f"migration {expected['id']} not found once"
        got = row.row(0, named=True)
        assert got["status"] == expected["status"]
        assert got["verdict"] == expected["verdict"], got["reason"]
        q = quarantines.get(expected["id"])
        if q is None:
            continue
        assert got["machine"] == _short(q["guest"]), got["match_note"]
        assert got["q_duration_s"] == pytest.approx(q["duration_s"], abs=0.2)
        # Blocked figures count packets: the truth's blocked attempts (a 5152 and a 5157
        # of one packet are one), where the guest's logs can show them at all.
        seen = observable[q["guest"]]
        assert got["blocked_tcp"] == (q["blocked_attempts"]["tcp"] if seen else 0)
        assert got["blocked_udp"] == (q["blocked_attempts"]["udp"] if seen else 0)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("offset", OFFSETS)
def test_scenarios_across_clock_offsets(tmp_path: Path, scenario: str, offset: float) -> None:
    seed = 1 + SCENARIOS.index(scenario) + int(abs(offset))
    options = SimulateOptions(
        scenario=scenario,
        seed=seed,
        guest_clock_offset=offset,
        name_mismatch=offset < 0,  # half the cases with guest names unlike the VM names
        noise=60.0,
    )
    bundle, truth = _bundle(tmp_path, options)
    result = _analyse(tmp_path, bundle)
    guessed = result.migrations.filter(pl.col("rule") == "graver-on-a-guess")
    if guessed.height:
        # One migration and one Netvsc 14 far from equal clocks, and no other guest to agree
        # with: the offset is a guess, and no verdict may become graver on it alone. The
        # reason names the offset to confirm; given it, the analysis must equal the truth.
        guests = {m["name"] for m in truth["machines"] if m["role"] == "guest"}
        assert len(guests) == 1 and abs(offset) > 13.0, guessed["reason"].to_list()
        assert result.summary.verdict == "inconclusive"
        given = dict(guessed.select("machine", "clock_offset_s").iter_rows())
        assert all(
            f"--clock-offset {m}=" in r
            for m, r in zip(guessed["machine"], guessed["reason"], strict=True)
        )
        settings = CorrelateSettings(match=MatchSettings(clock_offsets=given))
        result = _analyse(tmp_path / "given", bundle, settings)
    check_against_truth(result, truth)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_cluster_drain_with_mismatched_names_and_drift(tmp_path: Path, seed: int) -> None:
    options = SimulateOptions(
        scenario="cluster-drain",
        seed=seed,
        guest_clock_offset=-37.5,
        guest_clock_drift=40.0,
        name_mismatch=True,
        noise=60.0,
    )
    bundle, truth = _bundle(tmp_path, options)
    result = _analyse(tmp_path, bundle)
    check_against_truth(result, truth)
    assert set(result.migrations["match_method"].drop_nulls()) <= {"name", "timing"}


def test_guest_clock_that_steps_at_each_resume(tmp_path: Path) -> None:
    """The guest clock jumps 25 s at every resume: later triggers are far from the offset."""
    options = SimulateOptions(
        scenario="quarantine-bug", seed=41, migrations=3, guest_clock_jump=25.0, noise=60.0
    )
    bundle, truth = _bundle(tmp_path, options)
    assert len(truth["migrations"]) == 3
    result = _analyse(tmp_path, bundle)
    check_against_truth(result, truth)
    # The simulated guest logs each step (Kernel-General 1): followed as logged.
    assert set(result.migrations["trigger_match"].drop_nulls()) == {"clock-step"}
    # Each window sits on the host clock right after its own completion.
    gaps = result.migrations.select(
        ((pl.col("q0_host") - pl.col("end")).dt.total_microseconds() / 1e6).alias("gap")
    )["gap"]
    # (The offset includes the median notification lag, so a window may sit a fraction of
    # a second before the completion it follows.)
    assert gaps.is_between(-1.0, 2.0).all(), gaps.to_list()


def test_estimated_clock_offset_is_reported_and_close(tmp_path: Path) -> None:
    bundle, _ = _bundle(
        tmp_path, SimulateOptions(scenario="quarantine-bug", seed=4, guest_clock_offset=-90.0)
    )
    result = _analyse(tmp_path, bundle)
    row = result.migrations.row(0, named=True)
    assert row["offset_method"] == "estimated"
    # The estimate includes the guest's notification lag (well under 2 s).
    assert -90.0 <= row["clock_offset_s"] <= -88.0


def test_a_given_clock_offset_of_hours_still_finds_the_blocked_traffic(tmp_path: Path) -> None:
    """Firewall traffic is tagged only near migrations; a guest clock 2 h off (a wrong time
    zone), given by the user, must widen 'near' rather than lose the window's drops."""
    bundle, truth = _bundle(
        tmp_path, SimulateOptions(scenario="quarantine-bug", seed=8, guest_clock_offset=7200.0)
    )
    [guest] = {q["guest"] for q in truth["quarantines"]}
    given = CorrelateSettings(match=MatchSettings(clock_offsets={guest: 7200.0}))
    result = _analyse(tmp_path, bundle, given)
    check_against_truth(result, truth)
    governed = result.blocked.filter(pl.col("scope") == "remote")
    assert governed["packet"].n_unique() == sum(
        q["blocked_attempts"]["tcp"] + q["blocked_attempts"]["udp"] for q in truth["quarantines"]
    )


def test_traffic_logged_far_from_any_migration_still_shows_drops_are_observable(
    tmp_path: Path,
) -> None:
    """Whether a guest's drops can be seen is a fact of its whole log: with every firewall
    event moved a day away from the migration (so none is tagged), a healthy bundle whose
    guest classified its network at once stays not-affected instead of inconclusive."""
    bundle, truth = _bundle(tmp_path, SimulateOptions(scenario="healthy", seed=6, noise=60.0))
    assert truth["verdict"] == "not-affected"
    store = tmp_path / "store"
    ingest([bundle], store)
    catalog = load_catalog()
    traffic_ids = {e.event_id for e in catalog.entries_of(*catalog.model.allowed_kinds)}
    traffic_ids |= {e.event_id for e in catalog.entries_of(*catalog.model.blocked_kinds)}
    far = scan_events(store).with_columns(
        pl.when(pl.col("event_id").is_in(sorted(traffic_ids)))
        .then(pl.col("timestamp") + pl.duration(days=1))
        .otherwise(pl.col("timestamp"))
        .alias("timestamp")
    )
    result = correlate(far, catalog, CorrelateSettings())
    assert result.blocked.is_empty()
    assert result.summary.verdict == "not-affected", result.summary.reasons


def test_given_clock_offset_and_mapping_file_override(tmp_path: Path) -> None:
    bundle, truth = _bundle(
        tmp_path,
        SimulateOptions(
            scenario="quarantine-bug", seed=5, guest_clock_offset=42.0, name_mismatch=True
        ),
    )
    guest = next(m for m in truth["machines"] if m["role"] == "guest")
    settings = CorrelateSettings(
        match=MatchSettings(
            mapping={guest["vm_name"]: guest["name"]}, clock_offsets={guest["name"]: 42.0}
        )
    )
    result = _analyse(tmp_path, bundle, settings)
    row = result.migrations.row(0, named=True)
    assert (row["match_method"], row["match_confidence"]) == ("mapping", 1.0)
    assert (row["offset_method"], row["clock_offset_s"]) == ("given", 42.0)
    check_against_truth(result, truth)


def _without(bundle: Path, pattern: str) -> int:
    removed = 0
    for path in list(bundle.rglob(pattern)):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed += 1
    return removed


@pytest.mark.parametrize(
    ("scenario", "remove", "hint"),
    [
        # Neither drops nor the end of the window can be seen.
        ("healthy", ("APP-VM01/Security.evtx", "APP-VM01/Microsoft-Windows-*"), "guest-security"),
        ("host-fixed", ("APP-VM01/System.evtx",), "guest-system"),
        ("healthy", ("APP-VM01",), "guest-logs"),
        ("quarantine-disabled", ("HV-NODE*",), "host-vmms"),
    ],
)
def test_missing_logs_are_inconclusive_with_what_to_collect(
    tmp_path: Path, scenario: str, remove: tuple[str, ...], hint: str
) -> None:
    bundle, truth = _bundle(tmp_path, SimulateOptions(scenario=scenario, seed=7))
    assert truth["verdict"] == "not-affected"
    assert all(_without(bundle, pattern) >= 1 for pattern in remove)
    result = _analyse(tmp_path, bundle)
    assert result.summary.verdict == "inconclusive", result.summary.reasons
    assert hint in {c["id"] for c in result.summary.collect}
    if hint == "host-vmms":  # the guest's own evidence is still shown
        one = re.compile(
            r"app-vm01 logged 1 network-change event \(Netvsc 14\) at [\d-]{10} [\d:]{8} UTC"
        )
        assert any(one.match(r) for r in result.summary.reasons), result.summary.reasons


def test_a_normal_window_needs_no_security_log(tmp_path: Path) -> None:
    """The classification logs show the quarantine ended in the normal 2-3 s: that is
    the design working, whatever it dropped meanwhile (verdicts.toml, normal-quarantine)."""
    bundle, truth = _bundle(tmp_path, SimulateOptions(scenario="healthy", seed=7))
    _without(bundle, "APP-VM01/Security.evtx")
    result = _analyse(tmp_path, bundle)
    assert result.summary.verdict == truth["verdict"] == "not-affected"
    assert result.migrations["rule"].to_list() == ["normal-quarantine"]


def test_missing_security_never_hides_the_bug(tmp_path: Path) -> None:
    bundle, _ = _bundle(tmp_path, SimulateOptions(scenario="quarantine-bug", seed=8))
    _without(bundle, "APP-VM01/Security.evtx")
    result = _analyse(tmp_path, bundle)
    assert result.summary.verdict == "likely-affected"
    assert "guest-security" in {c["id"] for c in result.summary.collect}


def test_evidence_points_at_files_and_records(tmp_path: Path) -> None:
    bundle, _ = _bundle(tmp_path, SimulateOptions(scenario="quarantine-bug", seed=9))
    result = _analyse(tmp_path, bundle)
    row = result.migrations.row(0, named=True)
    assert {e["kind"] for e in row["host_evidence"]} >= {
        "migration.started",
        "migration.completed",
    }
    for ref in [row["trigger_ref"], *row["host_evidence"]]:
        assert Path(ref["source_path"]).is_file()
        assert ref["record_id"] > 0
    governed = result.blocked.filter(pl.col("scope") == "remote")
    assert governed["packet"].n_unique() == row["blocked_inbound"]
    assert result.blocked["source_path"].str.ends_with("Security.evtx").all()


def _analyse_with_tz(tmp: Path, bundle: Path, tz: str) -> Correlation:
    from parsers.pfirewall import PfirewallSettings
    from parsers.time_values import parse_zone

    store = tmp / "store"
    ingest([bundle], store, firewall=PfirewallSettings(tz=parse_zone(tz)))
    return correlate(scan_events(store), load_catalog(), CorrelateSettings())


def test_pfirewall_log_is_attributed_and_never_counted_twice(tmp_path: Path) -> None:
    options = SimulateOptions(
        scenario="quarantine-bug", seed=31, pfirewall=True, guest_tz="Europe/Berlin"
    )
    bundle, truth = _bundle(tmp_path, options)
    both = _analyse_with_tz(tmp_path / "both", bundle, "Europe/Berlin")
    check_against_truth(both, truth)  # Security and pfirewall.log hold the same drops
    assert "pfirewall.log" in both.machines.filter(pl.col("role") == "guest")["channels"][0]
    assert set(both.blocked["kind"]) <= {"wfp.blocked_packet", "wfp.blocked_connection"}


def test_pfirewall_log_shows_the_drops_when_auditing_is_missing(tmp_path: Path) -> None:
    options = SimulateOptions(
        scenario="quarantine-bug", seed=32, pfirewall=True, guest_tz="Europe/Berlin"
    )
    bundle, _ = _bundle(tmp_path, options)
    _without(bundle, "*/Security.evtx")
    result = _analyse_with_tz(tmp_path, bundle, "Europe/Berlin")
    assert result.summary.verdict == "affected", result.summary.reasons
    row = result.migrations.row(0, named=True)
    assert set(result.blocked["kind"]) == {"pflog.drop"}
    governed = result.blocked.filter(pl.col("scope") == "remote")
    assert row["blocked_inbound"] == governed["packet"].n_unique() > 0
    # Read in the wrong zone, the log's drops fall an hour away from the window.
    wrong = _analyse_with_tz(tmp_path / "wrong", bundle, "UTC")
    assert wrong.blocked.is_empty()


def test_pfirewall_allow_lines_end_the_window_when_only_failures_are_audited(
    tmp_path: Path,
) -> None:
    """A guest that audits WFP failures only logs 5152/5157 but no 5156 (a success audit);
    its pfirewall.log logs both. Its ALLOW lines are then the only allowed connections the
    logs hold, and they count: with the workaround in the guest (no quarantine), the first
    inbound connection allowed after Netvsc 14 shows the guest reachable. They were dropped
    with every pfirewall.log line of a guest with WFP events, and the verdict was
    likely-affected (the bug's 7 s by the classification logs' silence)."""
    options = SimulateOptions(
        scenario="quarantine-disabled", seed=709, pfirewall=True, wfp_audit="failure-only"
    )
    bundle, truth = _bundle(tmp_path, options)
    assert truth["verdict"] == "not-affected"
    result = _analyse_with_tz(tmp_path, bundle, "UTC")
    row = result.migrations.row(0, named=True)
    assert (row["verdict"], row["quarantine_class"]) == ("not-affected", "none"), row
    assert row["end_ref"]["source_path"].endswith("pfirewall.log")
    assert row["end_ref"]["kind"] == "pflog.allow"
    # Its DROP lines still count only where no 5152/5157 shows the same packets.
    assert "pflog.drop" not in set(result.blocked["kind"])


def test_a_chain_of_network_changes_is_paired_by_its_first(tmp_path: Path) -> None:
    """A repeated network-change indication: two Netvsc 14 3.4 s apart after one resume.
    With the guest's clock 90 s off and one migration, the offset comes from pairing the
    completion with a Netvsc 14. Paired with the second, it was 3.8 s off, the window
    started at the second change, and a 5.7 s quarantine read as a normal 2.3 s one:
    not-affected. The first of the chain follows the completion; on that one pair far
    from zero, the offset is a guess, and a prolonged window on a guess is inconclusive."""
    options = SimulateOptions(
        scenario="healthy",
        seed=51,
        guest_clock_offset=-90.0,
        load=3.0,
        wfp_audit="off",
        extra_network_changes=1,
    )
    bundle, truth = _bundle(tmp_path, options)
    [first, _] = truth["migrations"][0]["network_changes"]
    row = _analyse(tmp_path, bundle).migrations.row(0, named=True)
    assert row["q0"] == datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert abs(row["clock_offset_s"] + 90.0) < 1.0, row["clock_offset_s"]
    assert (row["quarantine_class"], row["verdict"]) == ("prolonged", "inconclusive"), row


@pytest.mark.parametrize(
    ("knobs", "verdict"),
    [
        ({}, "not-affected"),  # connections allowed right after Netvsc 14 show it
        ({"load": 0.05}, "likely-affected"),  # nobody knocked: the bug's signature only
        ({"wfp_audit": "off"}, "likely-affected"),  # allowed connections are not logged
        ({"wfp_audit": "failure-only", "pfirewall": True}, "not-affected"),  # its ALLOW lines
    ],
)
def test_a_guest_without_quarantine_is_judged_by_what_its_logs_show(
    knobs: dict, verdict: str, tmp_path: Path
) -> None:
    """Workaround 1 in the guest: Netvsc 14, no classification, and no quarantine. The
    logs show the quarantine absent only by an inbound connection allowed soon after the
    change; without one they show the bug's signature. The ground truth said
    not-affected whatever the logs showed (15 of the random sweep's bundles disagreed
    with the analysis for that alone); it now says what they show, and both agree."""
    options = SimulateOptions(scenario="quarantine-disabled", seed=735, **knobs)
    bundle, truth = _bundle(tmp_path, options)
    assert truth["verdict"] == verdict
    assert _analyse(tmp_path, bundle).summary.verdict == verdict


REALISM = dict(
    multicast_drops=True,
    loopback_connections=True,
    nla_chatter=True,
    host_fqdn=True,
    upper_case_vmids=True,
)


@pytest.mark.parametrize(
    ("scenario", "knobs"),
    [
        ("quarantine-bug", {}),
        ("healthy", {}),
        ("host-fixed", {}),
        ("quarantine-disabled", {}),
        ("no-audit", {}),
        ("cluster-drain", {"name_mismatch": True, "guest_clock_offset": -90.0}),
        ("quarantine-bug", {"wfp_audit": "failure-only", "load": 0.3}),
        ("healthy", {"wfp_audit": "failure-only", "load": 0.3}),
        ("quarantine-bug", {"classification_logs": False}),
        ("healthy", {"classification_logs": False}),
        ("quarantine-bug", {"wfp_audit": "failure-only", "classification_logs": False}),
        ("quarantine-bug", {"guest_nics": 2, "extra_network_changes": 1}),
        ("healthy", {"guest_nics": 2, "extra_network_changes": 1}),
        # (With names that differ too, two Hyper-V guests cover the migration and nothing
        # tells which is the VM's: test_matching shows that case is inconclusive.)
        ("host-fixed", {"unrelated_machines": 2}),
        ("quarantine-bug", {"unrelated_machines": 2, "name_mismatch": True}),
        ("quarantine-bug", {"migrations": 3, "guest_clock_jump": 25.0}),
    ],
    ids=lambda v: v if isinstance(v, str) else ",".join(v) or "defaults",
)
def test_what_real_logs_hold_changes_no_verdict(tmp_path: Path, scenario: str, knobs: dict) -> None:
    """Issue 9: with everything real logs hold beside the incident (multicast drops,
    loopback connections, NLA chatter, FQDN hosts, upper-case VMIDs), and with the ways
    real guests differ (failure-only auditing, no classification logs, several NICs and
    repeated indications, another case's machines), the analysis equals the truth."""
    options = SimulateOptions(scenario=scenario, seed=10, noise=60.0, **REALISM, **knobs)
    bundle, truth = _bundle(tmp_path, options)
    check_against_truth(_analyse(tmp_path, bundle), truth)


def test_a_clock_that_steps_minutes_at_every_resume_is_followed_by_its_own_log(
    tmp_path: Path,
) -> None:
    """Issue 9, item 6: the guest clock steps 300 s at each resume (beyond any jump the
    correlator would search), and logs each step (Kernel-General 1, old and new time).
    On the guest's continuous clock every migration lines up; without the steps it
    logged, the second migration's trigger would be missed and reported 'not-affected'."""
    options = SimulateOptions(
        scenario="quarantine-bug", seed=12, migrations=3, guest_clock_jump=300.0, noise=60.0
    )
    bundle, truth = _bundle(tmp_path, options)
    result = _analyse(tmp_path, bundle)
    check_against_truth(result, truth)
    assert result.migrations["trigger_match"].to_list() == ["clock-step"] * 3
    assert result.migrations["clock_offset_s"].to_list() == pytest.approx(
        [300.0, 600.0, 900.0], abs=2.0
    )


@pytest.mark.parametrize(
    ("scenario", "knobs"),
    [
        ("quarantine-bug", {"seed": 1, "migrations": 2, "load": 3.0, "pfirewall": True}),
        ("healthy", {"seed": 577, "guest_clock_offset": 45.0, "guest_nics": 2, "migrations": 4}),
        ("host-patched", {"seed": 803, "name_mismatch": True}),
        # Connections allowed just before the step read as if just after the change: no
        # evidence that the guest took them at once, as the truth once counted them.
        ("quarantine-disabled", {"seed": 7, "load": 0.1}),
    ],
    ids=lambda v: v if isinstance(v, str) else ",".join(v),
)
def test_a_clock_that_steps_back_at_every_resume_is_placed_by_its_logs_order(
    tmp_path: Path, scenario: str, knobs: dict
) -> None:
    """The guest clock steps back 3 s at each resume, so the span it steps back over holds
    events from both sides of the step. The simulator writes each log in the order things
    happened, as Windows does: each log's order tells the sides (guest_clock.misplaced),
    and the analysis gives the truth's verdict, not 'inconclusive' (clock-step-untold)
    nor, where a guest took connections just before the step, the opposite one."""
    options = SimulateOptions(scenario=scenario, noise=600.0, guest_clock_jump=-3.0, **knobs)
    bundle, truth = _bundle(tmp_path, options)
    result = _analyse(tmp_path, bundle)
    check_against_truth(result, truth)
    assert set(result.migrations["step_sides"]) == {"told"}
