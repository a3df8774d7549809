"""The ground truth: what the simulator made happen, and the verdict that follows from it.

The problem: a ground truth that restates the scenario's intent would agree with
a wrong simulator, and verdict rules written twice drift apart. So the facts here
are derived from the plan *and* from what landed in the files (which drops were
logged, whether WFP auditing is visible, whether a pfirewall.log exists), named as
the decision table ``verdicts.toml`` names them, and the verdict is that table's
(the correlator applies the same table to the facts it finds in the logs). A fact
the simulator knows perfectly (which guest is which VM, the guest's clock) is
stated as the analysis should find it; tests that make it unknowable say so.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.simulate_events import BlockedTruth
from pipeline.simulate_plan import (
    NORMAL_QUARANTINE_MAX_S,
    US,
    GuestReaction,
    Plan,
    iso,
)
from pipeline.verdict_table import Row, VerdictTable, decide


@dataclass(frozen=True)
class Observed:
    """What a guest's written logs show, beyond the plan."""

    wfp_events: int  # 5152/5156/5157 written to its Security.evtx
    pfirewall: bool  # a pfirewall.log was written
    drop_lines: list[int]  # guest-clock times of its pfirewall.log DROP lines


def _window(r: GuestReaction) -> str:
    """The quarantine window's class, as verdicts.toml names them."""
    if r.network_change_us is None or r.quarantine_end_us is None:
        return "none"  # no quarantine: host fixed, or quarantine disabled in the guest
    if r.ended_by == "safety-timeout":
        return "safety-timeout"
    seconds = (r.quarantine_end_us - r.network_change_us) / US
    return "normal" if seconds <= NORMAL_QUARANTINE_MAX_S else "prolonged"


def _facts(**observed: object) -> dict[str, object]:
    """Facts of verdicts.toml for a simulated migration: what the simulator knows for sure
    (its host logged the completion, its guest is in the bundle with a System log over the
    moment and a clock the analysis can find), and what ``observed`` says happened."""
    facts: dict[str, object] = {
        "completion": True,
        "guest": "matched",
        "trigger_log": "covers",
        "trigger_search": "complete",
        "clock": "known",
        "network_change": False,
        "window": "none",
        "drops_observable": True,
        "blocked": False,
    }
    return facts | observed


def migration_facts(
    r: GuestReaction, blocked: list[BlockedTruth], observed: Observed
) -> dict[str, object]:
    """The facts of verdicts.toml for one completed migration."""
    g = r.migration.guest
    dropped = False
    if r.network_change_us is not None and r.quarantine_end_us is not None:
        q0, q_end = g.guest_us(r.network_change_us), g.guest_us(r.quarantine_end_us)
        events = sum(1 for b in blocked if b.guest == g.name and q0 <= b.time_us < q_end)
        lines = sum(1 for t in observed.drop_lines if q0 <= t < q_end)
        dropped = bool(events or lines)
    return _facts(
        network_change=r.network_change_us is not None,
        window=_window(r),
        drops_observable=bool(observed.wfp_events or observed.pfirewall),
        blocked=dropped,
    )


def migration_verdict(
    r: GuestReaction, blocked: list[BlockedTruth], observed: Observed, table: VerdictTable
) -> Row:
    """The decision of verdicts.toml for one completed migration."""
    return decide(table.migration, migration_facts(r, blocked, observed))


def failed_migration(table: VerdictTable) -> Row:
    """The decision for a migration whose VM never left its host: no network change."""
    return decide(table.migration, _facts())


def bundle_verdict(verdicts: list[str], table: VerdictTable, host_logs: bool) -> str:
    """The gravest per-migration verdict; without any migration, the table's bundle rows
    (the simulator's guests log no network change that a migration would not explain)."""
    if verdicts:
        return table.gravest(verdicts, default="inconclusive")
    return decide(table.bundle, {"host_logs": host_logs, "unexplained_changes": False}).verdict


def quarantines(plan: Plan, blocked: list[BlockedTruth]) -> list[dict[str, object]]:
    """One entry per real quarantine (there is none when the host is fixed or it is disabled)."""
    out = []
    for r in plan.reactions:
        if r.network_change_us is None or r.quarantine_end_us is None:
            continue
        g = r.migration.guest
        start, end = g.guest_us(r.network_change_us), g.guest_us(r.quarantine_end_us)
        inside = [b for b in blocked if b.guest == g.name and start <= b.time_us < end]
        attempts = [
            a
            for a in plan.attempts
            if a.guest == g and a.outcome == "blocked"
            and r.network_change_us <= a.time_us < r.quarantine_end_us
        ]  # fmt: skip
        out.append(
            {
                "migration_id": r.migration.id,
                "guest": g.name,
                "start": iso(start),
                "start_host_clock": iso(r.network_change_us),
                "end": iso(end),
                "end_host_clock": iso(r.quarantine_end_us),
                "duration_s": round((end - start) / US, 6),
                "ended_by": r.ended_by,
                "blocked_inbound": {
                    p: sum(1 for b in inside if b.protocol == p) for p in ("tcp", "udp")
                },
                "blocked_attempts": {
                    p: sum(1 for a in attempts if a.protocol == n)
                    for p, n in (("tcp", 6), ("udp", 17))
                },
            }
        )
    return out


def machines(plan: Plan) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for m in (*plan.hosts, *plan.guests):
        entry: dict[str, object] = {"name": m.name, "folder": m.folder, "role": m.role}
        if m.role == "guest":
            entry |= {
                "vm_name": m.vm_name,
                "vmid": m.vmid,
                "os": m.os,
                "address": m.address,
                "wfp_auditing": m.wfp_auditing,
            }
        entry |= {
            "clock_offset_s": m.clock_offset_s,
            "clock_drift_ppm": m.clock_drift_ppm,
            "clock_jump_s": m.clock_jump_s,
            "time_zone": m.time_zone,
        }
        out.append(entry)
    return out


def migrations(plan: Plan, decided: dict[str, Row], failed: Row) -> list[dict[str, object]]:
    """Every migration with its verdict; ``failed`` is the table's decision for a migration
    whose VM never left its host (no network change)."""
    by_id = {r.migration.id: r for r in plan.reactions}
    out = []
    for m in plan.migrations:
        r = by_id.get(m.id)
        change = r.network_change_us if r is not None else None
        row = decided.get(m.id, failed)
        out.append(
            {
                "id": m.id,
                "vm_name": m.guest.vm_name,
                "vmid": m.guest.vmid,
                "guest": m.guest.name,
                "source": m.source,
                "destination": m.destination,
                "start": iso(m.start_us),
                "end": iso(m.end_us),
                "brownout_s": m.brownout_s,
                "blackout_s": m.blackout_s,
                "blackout_start": iso(m.blackout_start_us) if m.status == "completed" else None,
                "blackout_end": iso(m.blackout_end_us) if m.status == "completed" else None,
                "status": m.status,
                "clustered": m.clustered,
                "network_change": iso(m.guest.guest_us(change)) if change is not None else None,
                "network_change_host_clock": iso(change) if change is not None else None,
                "verdict": row.verdict,
                "reason": row.why,
                "rule": row.id,
            }
        )
    return out
