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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.simulate.events import BlockedTruth
from pipeline.simulate.plan import (
    HISTORY_US,
    NORMAL_QUARANTINE_MAX_S,
    SAFETY_TIMEOUT_S,
    US,
    GuestReaction,
    Machine,
    Plan,
    iso,
    to_us,
)
from pipeline.verdict_table import Row, VerdictTable, decide

if TYPE_CHECKING:
    from pipeline.simulate.routine import RoutineTruth


@dataclass(frozen=True)
class Observed:
    """What a guest's written logs show, beyond the plan."""

    wfp_events: int  # 5152/5156/5157 written to its Security.evtx
    pfirewall: bool  # a pfirewall.log was written
    drop_lines: list[int]  # guest-clock times of its pfirewall.log DROP lines


def _window(plan: Plan, r: GuestReaction, late_drop: bool) -> str:
    """The quarantine window's class, as verdicts.toml names them and as the bundle's logs
    can show it: a window nothing in the logs shows ending is ``undetermined``, unless a
    logged drop past the normal span shows it lasted (``late_drop``)."""
    if r.network_change_us is None:
        return "none"  # no network change: the host is fixed
    if r.quarantine_end_us is None:
        return _without_quarantine(plan, r)
    if r.ended_by == "safety-timeout" and plan.options.classification_logs:
        return "safety-timeout"  # the classification logs' silence shows it
    evidence = end_evidence(plan, r)
    if r.ended_by == "safety-timeout" or evidence is None:
        return "prolonged" if late_drop else "undetermined"
    seconds = float(evidence["seconds_after_change"])  # type: ignore[arg-type]
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
        "step_sides": "told",
    }
    return facts | observed


def migration_facts(
    plan: Plan, r: GuestReaction, blocked: list[BlockedTruth], observed: Observed
) -> dict[str, object]:
    """The facts of verdicts.toml for one completed migration."""
    g = r.migration.guest
    logged: list[int] = []
    late = False
    if r.network_change_us is not None and r.quarantine_end_us is not None:
        q0, q_end = g.guest_us(r.network_change_us), g.guest_us(r.quarantine_end_us)
        logged = [b.time_us for b in blocked if b.guest == g.name and q0 <= b.time_us < q_end]
        logged += [t for t in observed.drop_lines if q0 <= t < q_end]
        late = any(t - q0 > NORMAL_QUARANTINE_MAX_S * US for t in logged)
    return _facts(
        network_change=r.network_change_us is not None,
        window=_window(plan, r, late),
        drops_observable=bool(observed.wfp_events or observed.pfirewall),
        blocked=bool(logged),
        # Stated as the analysis should find it in Windows' logs, which hold every event in
        # the order things happened, as the simulator writes them. A log whose order shows
        # no fall back at a step leaves its sides untold even so (docs/simulate.md): the
        # analysis may answer inconclusive there where this says more.
        step_sides="told",
    )


def migration_verdict(
    plan: Plan,
    r: GuestReaction,
    blocked: list[BlockedTruth],
    observed: Observed,
    table: VerdictTable,
) -> Row:
    """The decision of verdicts.toml for one completed migration."""
    return decide(table.migration, migration_facts(plan, r, blocked, observed))


def failed_migration(table: VerdictTable) -> Row:
    """The decision for a migration whose VM never left its host: no network change."""
    return decide(table.migration, _facts())


def bundle_verdict(verdicts: list[str], table: VerdictTable, host_logs: bool) -> str:
    """The gravest per-migration verdict; without any migration, the table's bundle rows
    (the simulator's guests log no network change that a migration would not explain)."""
    if verdicts:
        return table.gravest(verdicts, default="inconclusive")
    return decide(table.bundle, {"host_logs": host_logs, "unexplained_changes": False}).verdict


def quarantines(
    plan: Plan,
    blocked: list[BlockedTruth],
    routine: Sequence[RoutineTruth] = (),
    end_events: Mapping[str, str] | None = None,
) -> list[dict[str, object]]:
    """One entry per real quarantine (there is none when the host is fixed or it is disabled).

    ``blocked_inbound`` counts the Security events in the window, ``blocked_packets`` the
    packets they log (a 5152 and a 5157 of one packet are one), ``blocked_attempts`` every
    packet the quarantine blocked, logged or not. Multicast, broadcast and loopback traffic
    in the window is not the quarantine's doing: ``other_inbound`` counts its packets apart.
    """
    out = []
    for r in plan.reactions:
        if r.network_change_us is None or r.quarantine_end_us is None:
            continue
        g = r.migration.guest
        start, end = g.guest_us(r.network_change_us), g.guest_us(r.quarantine_end_us)
        inside = [b for b in blocked if b.guest == g.name and start <= b.time_us < end]
        packets = {(b.protocol, b.packet) for b in inside}
        others = {(e.traffic, e.packet) for e in routine if e.migration_id == r.migration.id}
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
                "last_network_change": iso(g.guest_us(r.last_network_change_us or start)),
                "end": iso(end),
                "end_host_clock": iso(r.quarantine_end_us),
                "duration_s": round((end - start) / US, 6),
                "ended_by": r.ended_by,
                "end_event": (end_events or {}).get(r.migration.id)
                if r.ended_by == "classification"
                else None,
                "blocked_inbound": {
                    p: sum(1 for b in inside if b.protocol == p) for p in ("tcp", "udp")
                },
                "blocked_packets": {
                    p: sum(1 for proto, _ in packets if proto == p) for p in ("tcp", "udp")
                },
                "other_inbound": {
                    kind: sum(1 for k, _ in others if k == kind)
                    for kind in ("multicast", "broadcast", "loopback", "self")
                },
                "blocked_attempts": {
                    p: sum(1 for a in attempts if a.protocol == n)
                    for p, n in (("tcp", 6), ("udp", 17))
                },
            }
        )
    return out


def network_changes(r: GuestReaction) -> list[dict[str, object]]:
    """Every Netvsc 14 of one migration, per adapter, in time order."""
    g = r.migration.guest
    return [
        {
            "nic": g.nics[nic].miniport,
            "interface_guid": str(g.nics[nic].interface_guid),
            "time": iso(g.guest_us(at)),
            "time_host_clock": iso(at),
        }
        for nic, at in r.network_events
    ]


def observability(plan: Plan, guest: Machine) -> dict[str, object]:
    """How this guest's logs can show drops and classification, as the bundle holds them.

    ``wfp_audit``: "full" (5152, 5156, 5157), "failure-only" (5152 and 5157, no 5156:
    allowed traffic is invisible) or "off"; ``pfirewall_log``: a pfirewall.log with every
    drop; ``classification_logs``: NetworkProfile, NCSI and Firewall logs were exported.
    """
    return {
        "wfp_audit": guest.wfp_audit,
        "pfirewall_log": plan.options.pfirewall,
        "classification_logs": plan.options.classification_logs,
    }


def _allowed_tcp(plan: Plan, g: Machine) -> list[int]:
    """Host times of the inbound TCP connections ``g`` allowed (what ends a window)."""
    return [
        a.time_us
        for a in plan.attempts
        if a.guest == g and a.outcome == "allowed" and a.protocol == 6
    ]


def _without_quarantine(plan: Plan, r: GuestReaction) -> str:
    """The class a guest without quarantine (workaround 1) shows after a network change.

    Its logs show no quarantine only by an inbound TCP connection allowed soon after the
    last change, where allowed connections are logged at all (full WFP auditing, or a
    pfirewall.log, whose times are whole seconds). Without one, they show what the bug
    shows: a network change and no classification (the classification logs' silence,
    when exported). Times on the guest's clock, as its logs hold them; only connections
    after the change count, however far back the clock stepped between (a log's order
    tells which came after: Machine.order_us).
    """
    g = r.migration.guest
    last_us = r.last_network_change_us  # the first change where there is only one
    if last_us is None:
        return "none"
    last = g.guest_us(last_us)
    by_wfp = g.wfp_audit == "full"
    after = (at for at in _allowed_tcp(plan, g) if g.order_us(at) >= g.order_us(last_us))
    allowed = [t if by_wfp else t - t % US for t in (g.guest_us(at) for at in after)]
    first = min((t for t in allowed if t >= last), default=None)
    if (by_wfp or plan.options.pfirewall) and first is not None:
        if first - last <= NORMAL_QUARANTINE_MAX_S * US:
            return "none"
        if first - last < SAFETY_TIMEOUT_S * US:
            return "prolonged"
    return "safety-timeout" if plan.options.classification_logs else "undetermined"


def end_evidence(plan: Plan, r: GuestReaction) -> dict[str, object] | None:
    """The first thing the bundle's logs hold that shows the quarantine over, or None.

    A classification event (when the guest exported its classification logs), else the
    first inbound TCP connection allowed after the window: a 5156 (full auditing only,
    5156 being a success audit) or a pfirewall.log ALLOW line. Loopback connections never
    show it (the quarantine lets them through). A fact about what was written, so that
    the window class the verdict table reads can be stated as the logs can show it.
    """
    g = r.migration.guest
    start, end = r.network_change_us, r.quarantine_end_us
    if start is None or end is None:
        return None
    found: tuple[int, str] | None = None
    if r.ended_by == "classification" and plan.options.classification_logs:
        found = (end, "classification")
    elif g.wfp_audit == "full" or plan.options.pfirewall:
        allowed = [at for at in _allowed_tcp(plan, g) if at >= end]
        if allowed:
            found = (min(allowed), "5156" if g.wfp_audit == "full" else "pfirewall.log ALLOW")
    if found is None:
        return None
    at, kind = found
    return {
        "by": kind,
        "time": iso(g.guest_us(at)),
        "seconds_after_change": round((at - start) / US, 6),
    }


def facts(
    plan: Plan,
    r: GuestReaction,
    blocked: list[BlockedTruth],
    routine: Sequence[RoutineTruth],
) -> dict[str, object]:
    """What happened after one completed migration, in the terms a verdict table reads.

    Packets, not events: a 5152 and a 5157 of one packet count once. ``blocked_packets``
    counts what the quarantine blocked, logged or not; ``blocked_packets_logged`` those a
    Security event or a pfirewall.log line shows. Multicast, broadcast and loopback
    traffic in the window is not quarantine impact: ``other_inbound_packets`` counts it.
    ``end_evidence``: what in the logs shows the window over (:func:`end_evidence`).
    """
    g, mid = r.migration.guest, r.migration.id
    start, end, last = r.network_change_us, r.quarantine_end_us, r.last_network_change_us
    quarantined = start is not None and end is not None
    attempts = [
        a
        for a in plan.attempts
        if start is not None
        and end is not None
        and a.guest == g
        and a.outcome == "blocked"
        and start <= a.time_us < end
    ]
    # Blocked packets happen only inside the window: each logged one is the window's.
    logged = {b.packet for b in blocked if b.migration_id == mid}
    return {
        "network_change": r.network_change_us is not None,
        "network_events": len(r.network_events),
        "nics": len(g.nics),
        "quarantine": quarantined,
        "ended_by": r.ended_by,
        "classified_within_safety_timeout": r.classified_us is not None
        and last is not None
        and r.classified_us - last < SAFETY_TIMEOUT_S * US,
        **observability(plan, g),
        "blocked_packets": len(attempts),
        "blocked_packets_logged": len(attempts) if plan.options.pfirewall else len(logged),
        "other_inbound_packets": len(
            {(e.traffic, e.packet) for e in routine if e.migration_id == mid}
        ),
        "end_evidence": end_evidence(plan, r),
    }


def machines(plan: Plan) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for m in (*plan.hosts, *plan.guests, *plan.unrelated):
        entry: dict[str, object] = {"name": m.name, "folder": m.folder, "role": m.role}
        if m.role == "unrelated":
            begin = to_us(plan.options.start) - HISTORY_US
            entry |= {
                "unrelated_because": m.unrelated_because,
                "logs_from": iso(m.guest_us(begin)),
                "logs_to": iso(m.guest_us(plan.end_us)),
            }
        if m.role == "guest":
            entry |= {
                "vm_name": m.vm_name,
                "vmid": m.vmid,
                "os": m.os,
                "former_name": m.former_name,
                "address": m.address,
                "nics": [
                    {
                        "miniport": n.miniport,
                        "interface_guid": str(n.interface_guid),
                        "address": n.address,
                    }
                    for n in m.nics
                ],
                "wfp_auditing": m.wfp_auditing,
                "observability": observability(plan, m),
            }
        entry |= {
            "clock_offset_s": m.clock_offset_s,
            "clock_drift_ppm": m.clock_drift_ppm,
            "clock_jump_s": m.clock_jump_s,
            "time_zone": m.time_zone,
        }
        out.append(entry)
    return out


def migrations(
    plan: Plan,
    decided: dict[str, Row],
    failed: Row,
    blocked: list[BlockedTruth],
    routine: Sequence[RoutineTruth] = (),
    table_facts: Mapping[str, dict[str, object]] | None = None,
) -> list[dict[str, object]]:
    """Every migration with its verdict; ``failed`` is the table's decision for a migration
    whose VM never left its host (no network change). ``facts`` holds what happened: the
    verdict table's facts as the simulator states them (``table_facts``), and the details
    behind them (:func:`facts`)."""
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
                "network_changes": network_changes(r) if r is not None else [],
                "facts": (
                    {**(table_facts or {}).get(m.id, {}), **facts(plan, r, blocked, routine)}
                    if r is not None
                    else None
                ),
                "verdict": row.verdict,
                "reason": row.why,
                "rule": row.id,
            }
        )
    return out
