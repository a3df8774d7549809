"""Inbound traffic the quarantine does not govern: multicast, broadcast, loopback.

The problem: a real Security log holds, at any time and inside a quarantine
window too, inbound drops that have nothing to do with a live migration
(LLMNR, mDNS, SSDP and NetBIOS announcements from the neighbours, dropped
because no rule allows them), and allowed inbound connections on loopback,
which the quarantine always lets through ([C] quarantine.md: an exception
filter permits loopback). A correlator that counts the first as quarantine
impact, or takes the second for "inbound traffic flows again", gets the
window wrong; ``--multicast-drops`` and ``--loopback-connections`` write them
so the tests can see that. The ground truth lists every such event apart
from the quarantine's drops (``other_inbound``).

What the events look like comes from the public corpus:

- multicast: velociraptor__RDPAuth_Security.evtx, inbound mDNS 5157 to
  224.0.0.251:5353 from neighbours' port 5353, svchost, FilterRTID 66963,
  layer %%14610/44 -- with the *sender* in Source and the group in Dest,
  unlike other connection events; DE_RDP_Tunnel_5156.evtx record 70, inbound
  SSDP 5156 with the group 239.255.255.250:1900 in Source. So mDNS 5157s are
  written the velociraptor way, LLMNR (224.0.0.252:5355) and SSDP the
  documented way; a 5152 names the sender Source, as always.
- broadcast: DE_RDP_Tunnel_5156.evtx records 18/19, inbound NetBIOS 5156,
  Source 10.255.255.255:137/138 (the broadcast address), Dest the sender
  :137/138, System (pid 4).
- loopback: DE_RDP_Tunnel_5156.evtx records 25/26, an outbound 5156 from the
  client (127.0.0.1:49271 -> 127.0.0.2:3389, layer %%14611/48) and, at the same
  microsecond, the inbound 5156 of System (pid 4): Source 127.0.0.2:3389, Dest
  127.0.0.1:49271, layer %%14610/44, FilterRTID 0.

Rates and the "self" variant (the guest connecting to its own address, which
Windows carries over loopback) are [I]. Everything draws from its own random
stream, so the knobs leave the rest of the bundle as it was.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from pipeline.simulate.events import (
    GuestIds,
    Rendered,
    pfirewall_line,
    wfp_layout,
    wfp_values,
)
from pipeline.simulate.plan import US, Machine, Plan, feature_rng, from_us, iso

Traffic = Literal["multicast", "broadcast", "loopback", "self"]
Outcome = Literal["blocked", "allowed"]

MULTICAST_PER_S = 0.6
"""Neighbours' multicast and broadcast packets per second reaching a guest [I]."""
LOOPBACK_PER_S = 0.05
"""Loopback connections per second outside quarantine windows [I]; 1-2 inside each."""
SPAN_US = 20 * US
"""How far before a migration and after its window the routine traffic is written."""
ROUTINE_FILTER_RTID = 66963
"""The default-block filter velociraptor's mDNS 5157s name."""
DNSCACHE = (1068, r"\device\harddiskvolume2\windows\system32\svchost.exe")
SSDPSRV = (1588, r"\device\harddiskvolume2\windows\system32\svchost.exe")
SYSTEM = (4, "System")
MONITOR = (
    3324,
    r"\device\harddiskvolume2\program files\microsoft monitoring agent\agent\healthservice.exe",
)


@dataclass
class RoutineTruth:
    """One event (or pfirewall.log line) of traffic the quarantine does not govern."""

    guest: str
    time_us: int  # guest clock
    traffic: Traffic
    event_id: int | None  # None: a pfirewall.log line
    outcome: Outcome
    protocol: str
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    migration_id: str | None  # the quarantine window it falls in, if any
    path: str
    packet: int
    record_id: int | None = None
    line: int | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "guest": self.guest,
            "time": iso(self.time_us),
            "traffic": self.traffic,
            "event_id": self.event_id,
            "packet": self.packet,
            "outcome": self.outcome,
            "protocol": self.protocol,
            "local_address": self.local_address,
            "local_port": self.local_port,
            "remote_address": self.remote_address,
            "remote_port": self.remote_port,
            "in_quarantine_of": self.migration_id,
            "file": self.path,
            "record_id": self.record_id,
            "line": self.line,
        }


@dataclass(frozen=True)
class _Packet:
    """One routine inbound packet or connection, guest clock."""

    time_us: int
    traffic: Traffic
    protocol: int
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    process: tuple[int, str]
    sender_source: bool  # a connection event names the sender Source (velociraptor's mDNS)


def _neighbour(guest: Machine, rng: random.Random) -> str:
    a, b, c, _ = guest.address.split(".")
    return f"{a}.{b}.{c}.{rng.randint(2, 250)}"


def _multicast(guest: Machine, t: int, rng: random.Random) -> _Packet:
    """One neighbour's announcement: LLMNR, mDNS, SSDP or a NetBIOS broadcast."""
    sender = _neighbour(guest, rng)
    kind = rng.choice(("llmnr", "mdns", "ssdp", "netbios"))
    if kind == "llmnr":
        port = rng.randint(49152, 65535)
        return _Packet(t, "multicast", 17, "224.0.0.252", 5355, sender, port, DNSCACHE, False)
    if kind == "mdns":
        return _Packet(t, "multicast", 17, "224.0.0.251", 5353, sender, 5353, DNSCACHE, True)
    if kind == "ssdp":
        port = rng.randint(49152, 65535)
        return _Packet(t, "multicast", 17, "239.255.255.250", 1900, sender, port, SSDPSRV, False)
    a, b, c, _ = guest.address.split(".")
    port = rng.choice((137, 138))
    return _Packet(t, "broadcast", 17, f"{a}.{b}.{c}.255", port, sender, port, SYSTEM, False)


def _loopback(guest: Machine, t: int, rng: random.Random) -> _Packet:
    """A local client's connection to a local service: loopback, sometimes the own address."""
    port = rng.randint(49152, 65535)
    if rng.random() < 1 / 3:
        return _Packet(t, "self", 6, guest.address, 445, guest.address, port, SYSTEM, False)
    return _Packet(t, "loopback", 6, "127.0.0.2", 3389, "127.0.0.1", port, SYSTEM, False)


def _times(
    begin: int,
    end: int,
    rate: float,
    windows: list[tuple[int, int]],
    per_window: int,
    rng: random.Random,
) -> list[int]:
    """Poisson times in [begin, end), plus ``per_window`` inside each window (all in the
    guest's logs' order, Machine.order_us)."""
    out = []
    t = float(begin)
    while rate > 0:
        t += rng.expovariate(rate) * US
        if t >= end:
            break
        out.append(int(t))
    for a, b in windows:
        out += [a + round(rng.uniform(0.1, 0.9) * (b - a)) for _ in range(per_window)]
    return sorted(out)


def _spans(plan: Plan, guest: Machine) -> list[tuple[int, int]]:
    """Host-clock spans around each of the guest's migrations."""
    out = []
    for r in plan.reactions:
        if r.migration.guest != guest:
            continue
        m = r.migration
        last = max(v for v in (m.end_us, r.last_network_change_us, r.quarantine_end_us) if v)
        out.append((m.start_us - SPAN_US, last + SPAN_US))
    return out


class _Writer:
    """Renders the routine packets of one guest into ``out`` and keeps their truth.

    Packets are drawn along the guest's logs' order (Machine.order_us), which a step
    back of its clock leaves in the order they happened; each carries what the clock
    showed (``_Packet.time_us``).
    """

    def __init__(self, plan: Plan, out: Rendered, guest: Machine, ids: GuestIds) -> None:
        self.plan, self.out, self.g, self.ids = plan, out, guest, ids
        self.rng = feature_rng(plan.options.seed, f"routine:{guest.name}")
        self.truth: list[RoutineTruth] = []
        self.windows = [
            (r.migration.id, guest.order_us(start), guest.order_us(end))
            for r in plan.reactions
            if r.migration.guest == guest
            and (start := r.network_change_us) is not None
            and (end := r.quarantine_end_us) is not None
        ]
        self.security = f"{guest.folder}/Security.evtx"
        # While the VM is frozen (blackout until it sees the network change) nothing arrives.
        self.frozen = [
            (
                guest.order_us(r.migration.blackout_start_us),
                guest.order_us(r.network_change_us or r.migration.blackout_end_us),
            )
            for r in plan.reactions
            if r.migration.guest == guest
        ]

    def awake(self, t: int) -> bool:
        return not any(a <= t < b for a, b in self.frozen)

    def _note(
        self,
        p: _Packet,
        packet: int,
        event_id: int | None,
        outcome: Outcome,
        path: str,
        order: int,
    ) -> RoutineTruth:
        window = next((mid for mid, a, b in self.windows if a <= order < b), None)
        entry = RoutineTruth(
            guest=self.g.name,
            time_us=p.time_us,
            traffic=p.traffic,
            event_id=event_id,
            outcome=outcome,
            protocol="tcp" if p.protocol == 6 else "udp",
            local_address=p.local_address,
            local_port=p.local_port,
            remote_address=p.remote_address,
            remote_port=p.remote_port,
            migration_id=window,
            path=path,
            packet=packet,
        )
        self.truth.append(entry)
        return entry

    def _event(
        self,
        event_id: int,
        values: tuple[object, ...],
        p: _Packet,
        order: int,
        tag: RoutineTruth | None,
    ) -> None:
        spec = wfp_layout(self.g, event_id).event(
            from_us(p.time_us), self.g.name, values, tid=self.rng.randrange(200, 12000, 4)
        )
        self.out.add(self.g, spec, order, tag)

    def dropped(self, p: _Packet, packet: int, order: int) -> None:
        """A dropped announcement: 5152 always, 5157 half the time, one TimeCreated;
        ``order`` is where it falls in the guest's logs."""
        if self.g.wfp_audit != "off":  # both are failure audits
            kinds = [5152] + ([5157] if self.rng.random() < 0.5 else [])
            for event_id in kinds:
                values = wfp_values(
                    self.g,
                    self.ids,
                    packet=event_id == 5152,
                    inbound=True,
                    remote=p.remote_address,
                    remote_port=p.remote_port,
                    local_port=p.local_port,
                    protocol=p.protocol,
                    filter_rtid=ROUTINE_FILTER_RTID,
                    origin="WSH Default",
                    local_address=p.local_address,
                    sender_source=p.sender_source,
                    process=p.process,
                )
                tag = self._note(p, packet, event_id, "blocked", self.security, order)
                self._event(event_id, values, p, order, tag)
        if self.plan.options.pfirewall:
            line = pfirewall_line(
                self.g,
                p.time_us,
                action="DROP",
                protocol=p.protocol,
                remote=p.remote_address,
                remote_port=p.remote_port,
                local_port=p.local_port,
                inbound=True,
                local_address=p.local_address,
            )
            path = f"{self.g.folder}/pfirewall.log"
            tag = self._note(p, packet, None, "blocked", path, order)
            self.out.routine_pfirewall.setdefault(self.g.name, []).append((order, line, tag))

    def connected(self, p: _Packet, packet: int, order: int) -> None:
        """A loopback connection: the client's outbound 5156 and System's inbound 5156;
        ``order`` is where it falls in the guest's logs."""
        if self.g.wfp_audit != "full":  # 5156 is a success audit
            return
        for inbound in (False, True):
            values = wfp_values(
                self.g,
                self.ids,
                packet=False,
                inbound=inbound,
                remote=p.remote_address if inbound else p.local_address,
                remote_port=p.remote_port if inbound else p.local_port,
                local_port=p.local_port if inbound else p.remote_port,
                local_address=p.local_address if inbound else p.remote_address,
                protocol=p.protocol,
                filter_rtid=0,
                origin="Loopback",
                process=p.process if inbound else MONITOR,
            )
            tag = self._note(p, packet, 5156, "allowed", self.security, order) if inbound else None
            self._event(5156, values, p, order, tag)


def add_routine_traffic(plan: Plan, out: Rendered, ids: dict[str, GuestIds]) -> list[RoutineTruth]:
    """Write the knobs' routine inbound traffic around every migration; return its truth."""
    truth: list[RoutineTruth] = []
    multicast, loopback = plan.preset.multicast_drops, plan.preset.loopback_connections
    if not (multicast or loopback):
        return truth
    packet = 0
    for guest in plan.guests:
        writer = _Writer(plan, out, guest, ids[guest.name])
        windows = [(a, b) for _, a, b in writer.windows]
        for begin, end in _spans(plan, guest):
            begin, end = guest.order_us(begin), guest.order_us(end)
            inside = [(a, b) for a, b in windows if begin <= a < end]
            if multicast:
                for t in _times(begin, end, MULTICAST_PER_S, inside, 2, writer.rng):
                    if writer.awake(t):
                        shown = guest.reading_at(t)
                        writer.dropped(_multicast(guest, shown, writer.rng), packet, t)
                        packet += 1
            if loopback:
                for t in _times(begin, end, LOOPBACK_PER_S, inside, 2, writer.rng):
                    if writer.awake(t):
                        shown = guest.reading_at(t)
                        writer.connected(_loopback(guest, shown, writer.rng), packet, t)
                        packet += 1
        truth += writer.truth
    return truth
