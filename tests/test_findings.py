"""From correlation to the facts of verdicts.toml, and from them to verdict and reason:
findings.py on hand-made migration rows, one branch each."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from pipeline.catalog import load_catalog
from pipeline.findings import BundleFacts, assess, summarize
from pipeline.verdict_table import load_table

CATALOG = load_catalog()
TABLE = load_table()
END = datetime(2025, 3, 4, 9, 11, 18, tzinfo=timezone.utc)
TS = pl.Datetime("us", "UTC")


def at(seconds: float) -> datetime:
    return END + timedelta(seconds=seconds)


def row(**values: object) -> pl.DataFrame:
    """One migration as correlate hands it to findings: a bug's window by default."""
    base: dict[str, object] = {
        "migration_id": "M001",
        "vm_key": "vm1",
        "vm_name": "APP-VM01",
        "end": END,
        "machine": "app-vm01",
        "clock_offset_s": 0.4,
        "offset_basis": "clocks-agree",
        "q0": at(0.6),
        "quarantine_class": "safety-timeout",
        "end_evidence": "timeout-no-classification",
        "q_duration_s": 7.0,
        "blocked_inbound": 12,
        "step_sides": "told",
    }
    base |= values
    return pl.DataFrame(
        [base],
        schema={
            "migration_id": pl.String,
            "vm_key": pl.String,
            "vm_name": pl.String,
            "end": TS,
            "machine": pl.String,
            "clock_offset_s": pl.Float64,
            "offset_basis": pl.String,
            "q0": TS,
            "quarantine_class": pl.String,
            "end_evidence": pl.String,
            "q_duration_s": pl.Float64,
            "blocked_inbound": pl.Int64,
            "step_sides": pl.String,
        },
    )


def facts(
    *,
    system: tuple[float, float] | None = (-3600, 3600),
    wfp: bool = True,
    security: bool = True,
    triggers: tuple[float, ...] = (0.6,),
    candidates: tuple[str, ...] = (),
    host_logs: bool = True,
) -> BundleFacts:
    """What the guest app-vm01 exported: its System log's span, its firewall auditing."""
    machines = pl.Series("machine", ["app-vm01"], pl.String)
    none = pl.Series("machine", [], pl.String)
    return BundleFacts(
        trigger_logged=pl.DataFrame(
            {"machine": ["app-vm01"], "first_ts": [at(system[0])], "last_ts": [at(system[1])]}
            if system
            else {"machine": [], "first_ts": [], "last_ts": []},
            schema={"machine": pl.String, "first_ts": TS, "last_ts": TS},
        ),
        drops_observable=machines if wfp else none,
        security_exported=machines if security else none,
        classification_logs=pl.DataFrame(
            schema={"machine": pl.String, "logged_from": TS, "last_seen": TS}
        ),
        triggers=pl.DataFrame(
            {"machine": ["app-vm01"] * len(triggers), "timestamp": [at(t) for t in triggers]},
            schema={"machine": pl.String, "timestamp": TS},
        ),
        candidates=pl.DataFrame(
            {"vm_key": ["vm1"] * len(candidates), "machine": list(candidates)},
            schema={"vm_key": pl.String, "machine": pl.String},
        ),
        host_logs=host_logs,
    )


def decided(table: pl.DataFrame, bundle: BundleFacts) -> dict[str, object]:
    [out] = assess(table, bundle, CATALOG, TABLE).to_dicts()
    return out


def test_the_bugs_window_with_drops_is_affected_and_says_so_in_words() -> None:
    out = decided(row(), facts())
    assert (out["rule"], out["verdict"]) == ("blocked-beyond-normal", "affected")
    assert "refused for 7.0 s" in out["reason"] and "12 inbound packets" in out["reason"]
    assert "timeout-no-classification" not in out["reason"]  # words, not codes


@pytest.mark.parametrize(
    ("wfp", "security", "words", "hint"),
    [
        (False, True, "the Security log holds no WFP audit events", "wfp-audit"),
        (False, False, "no Security log or pfirewall.log", "guest-security"),
        (True, True, "no inbound connection was blocked in it while auditing was on", None),
    ],
)
def test_the_signature_without_drops_says_why_none_shows(wfp, security, words, hint) -> None:
    out = decided(row(blocked_inbound=0), facts(wfp=wfp, security=security))
    assert out["verdict"] == "likely-affected" and words in out["reason"]
    assert (hint in out["collect"]) if hint else out["collect"] == []


def test_a_normal_quarantine_without_logged_drops_does_not_count_them_as_none() -> None:
    """A guest that logs no drops showed none: '0 inbound packets dropped meanwhile, as
    designed' would claim what nothing could show."""
    normal = row(quarantine_class="normal", end_evidence="classified", blocked_inbound=0)
    out = decided(normal, facts(wfp=False, security=False))
    assert out["verdict"] == "not-affected" and "dropped meanwhile" not in out["reason"]
    assert "blocked traffic cannot be seen: no Security log or pfirewall.log" in out["reason"]
    seen = decided(normal, facts())
    assert "0 inbound packets dropped meanwhile, as designed" in seen["reason"]


def test_no_trigger_with_the_system_log_over_the_moment_is_not_affected() -> None:
    out = decided(row(q0=None, quarantine_class=None, end_evidence=None), facts(triggers=()))
    assert (out["trigger_log"], out["trigger_search"], out["verdict"]) == (
        "covers",
        "complete",
        "not-affected",
    )


def test_a_system_log_that_ends_before_the_migration_is_missing() -> None:
    out = decided(
        row(q0=None, quarantine_class=None, end_evidence=None), facts(system=(-3600, -60))
    )
    assert (out["trigger_log"], out["verdict"]) == ("missing", "inconclusive")
    assert "guest-system" in out["collect"]


def test_an_unknown_offset_with_network_changes_elsewhere_names_them() -> None:
    out = decided(
        row(q0=None, clock_offset_s=None, offset_basis=None, quarantine_class=None),
        facts(triggers=(1200.6, -5000.0)),
    )
    assert (out["trigger_search"], out["rule"]) == ("incomplete", "trigger-elsewhere")
    assert "--clock-offset app-vm01=+1200.6s" in out["reason"]
    assert out["reason"].index("+1200.6") < out["reason"].index("-5000")  # nearest first


@pytest.mark.parametrize(
    ("basis", "triggers", "rule"),
    [
        # the --clock-offset given points where the guest logged nothing, and a network
        # change no migration explains lies elsewhere: a sign or unit slip, not proof
        ("given", (0.3,), "trigger-elsewhere"),
        # every network change the guest logged is another migration's: the absence holds
        ("given", (), "no-trigger"),
        # a measured offset rests on the logs themselves
        ("pairs", (0.3,), "no-trigger"),
    ],
)
def test_a_given_offset_that_finds_no_trigger_proves_nothing_while_changes_are_unexplained(
    basis: str, triggers: tuple[float, ...], rule: str
) -> None:
    table = row(
        q0=None, clock_offset_s=300.0, offset_basis=basis, quarantine_class=None
    ).vstack(  # another migration of the guest, whose trigger is at 3600.6 s
        row(migration_id="M2", end=at(3600), q0=at(3600.6), clock_offset_s=300.0)
    )
    bundle = facts(system=(-3600, 7200), triggers=(*triggers, 3600.6))
    out = assess(table, bundle, CATALOG, TABLE).row(0, named=True)
    assert out["rule"] == rule
    if rule == "trigger-elsewhere":
        assert out["verdict"] == "inconclusive"
        assert "the --clock-offset given (+300.0s) puts none there" in out["reason"]
        assert "--clock-offset app-vm01=+0.3s" in out["reason"]
        assert "10:11:18" not in out["reason"]  # M2's trigger is explained


def test_a_window_on_a_far_lone_pair_is_not_made_graver() -> None:
    out = decided(row(clock_offset_s=480.0, offset_basis="one-pair"), facts(triggers=(480.6,)))
    assert (out["clock"], out["verdict"]) == ("guess", "inconclusive")
    assert "guest clock 480.0 s ahead of the host" in out["reason"]


def test_an_unmatched_vm_names_its_candidates() -> None:
    out = decided(row(machine=None, q0=None), facts(candidates=("sqlprod7", "webfe02")))
    assert (out["guest"], out["rule"]) == ("candidates", "unmatched-guest")
    assert "sqlprod7, webfe02" in out["reason"]


def test_a_bundle_without_migrations_is_decided_by_the_hosts_logs() -> None:
    empty = assess(row().clear(), facts(), CATALOG, TABLE)
    quiet = summarize(empty, facts(triggers=()), CATALOG, TABLE)
    assert (quiet.verdict, quiet.rule) == ("not-affected", "no-migration-host-logs-silent")
    unexplained = summarize(empty, facts(triggers=(10.0,)), CATALOG, TABLE)
    assert unexplained.verdict == "inconclusive"
    at_once = (
        f"app-vm01 logged 1 network-change event (Netvsc 14) at {at(10.0):%Y-%m-%d %H:%M:%S} UTC"
    )
    assert any(r.startswith(at_once) for r in unexplained.reasons), unexplained.reasons
    two = summarize(empty, facts(triggers=(10.0, 70.0)), CATALOG, TABLE)
    apart = (
        f"app-vm01 logged 2 network-change events (Netvsc 14) between"
        f" {at(10.0):%Y-%m-%d %H:%M:%S} and {at(70.0):%Y-%m-%d %H:%M:%S} UTC"
    )
    assert any(r.startswith(apart) for r in two.reasons), two.reasons
