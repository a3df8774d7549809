"""The verdict rules and the ground truth, computed from what the simulator actually wrote.

The problem: a ground truth that restates the scenario's intent would agree
with a wrong simulator. So the verdict here is derived from the plan *and*
from what landed in the files (which drops were logged, whether WFP auditing
is visible, whether a pfirewall.log exists), by the same rules the correlator
implements (docs/simulate.md, "Verdict rules"):

- affected: some guest has a safety-timeout quarantine after a completed
  migration (Netvsc 14, no classification within 7 s) with at least one
  observed inbound drop in the window;
- likely-affected: that timeout signature, but drops are not observable (no
  WFP events in Security and no pfirewall.log);
- not-affected: every migrated guest had no Netvsc 14, a quarantine ended by
  classification, or no drops while drop logging was visibly on; failed
  migrations leave the guest where it was;
- inconclusive: the logs needed to decide are absent (a migrated guest
  without its System log). The simulator always writes them, so it never
  produces this verdict; the rule is here so the order of verdicts is complete.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.simulate_events import BlockedTruth
from pipeline.simulate_plan import SAFETY_TIMEOUT_S, US, GuestReaction, Plan, iso

SEVERITY = ("not-affected", "inconclusive", "likely-affected", "affected")


@dataclass(frozen=True)
class Observed:
    """What a guest's written logs show, beyond the plan."""

    wfp_events: int  # 5152/5156/5157 written to its Security.evtx
    pfirewall: bool  # a pfirewall.log was written
    drop_lines: list[int]  # guest-clock times of its pfirewall.log DROP lines


def migration_verdict(
    r: GuestReaction, blocked: list[BlockedTruth], observed: Observed
) -> tuple[str, str]:
    """The verdict for one completed migration, and why."""
    g = r.migration.guest
    if r.network_change_us is None:
        return "not-affected", "no Netvsc 14: the guest saw no network change"
    q0 = g.guest_us(r.network_change_us)
    if (
        r.classified_us is not None
        and r.classified_us - r.network_change_us < SAFETY_TIMEOUT_S * US
    ):
        return "not-affected", "the network was classified again before the safety timeout"
    q_end = q0 + round(SAFETY_TIMEOUT_S * US)
    events = sum(1 for b in blocked if b.guest == g.name and q0 <= b.time_us < q_end)
    lines = sum(1 for t in observed.drop_lines if q0 <= t < q_end)
    if observed.wfp_events or observed.pfirewall:
        if events or lines:
            seen = [f"{events} inbound drops in Security"] if observed.wfp_events else []
            seen += [f"{lines} DROP lines in pfirewall.log"] if observed.pfirewall else []
            return "affected", "safety-timeout quarantine: " + ", ".join(seen)
        return "not-affected", "no classification for 7 s, but no drops while logging was on"
    return "likely-affected", "safety-timeout signature; drops not observable (no WFP auditing)"


def bundle_verdict(verdicts: list[str]) -> str:
    """The most severe per-migration verdict; not-affected when nothing migrated."""
    return max(verdicts, key=SEVERITY.index, default="not-affected")


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


def migrations(plan: Plan, verdicts: dict[str, tuple[str, str]]) -> list[dict[str, object]]:
    by_id = {r.migration.id: r for r in plan.reactions}
    out = []
    for m in plan.migrations:
        r = by_id.get(m.id)
        change = r.network_change_us if r is not None else None
        verdict, reason = verdicts.get(m.id, ("not-affected", "the migration failed"))
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
                "verdict": verdict,
                "reason": reason,
            }
        )
    return out
