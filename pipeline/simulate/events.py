"""Render a :class:`~pipeline.simulate.plan.Plan` into the events of each exported file.

The problem: the plan says what happened on the host clock; each machine's
files must say it the way that machine logs it, in its own clock, with its own
process ids, mixed into the background noise a real log has, in the order the
log would have them. Incident events are built eagerly (there are few);
background noise is a lazy stream so that a 1 GB bundle never sits in memory.

Each stream yields ``(order_us, seq, EventSpec, tag)`` in the order its log has them;
``tag`` is the ground-truth entry of that event (it learns its record id) or None.
``order_us`` is where the event happened on the machine's clock with its steps back
undone (:meth:`~pipeline.simulate.plan.Machine.order_us`), as Windows writes a log in
the order things happen; the event's own time, what the clock showed, is its
EventSpec's. Both are the same on a clock that never stepped back.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol
from zoneinfo import ZoneInfo

from parsers.evtx_writer import EventSpec
from pipeline.simulate.layouts import (
    FIREWALL_CHANNEL,
    HA_ADMIN,
    NCSI_OPERATIONAL,
    PROFILE_OPERATIONAL,
    VMMS_ADMIN,
    WORKER_ADMIN,
    Layout,
    file_name,
    layout,
)
from pipeline.simulate.plan import (
    MINIPORT,
    US,
    Machine,
    Plan,
    feature_rng,
    from_us,
    iso,
    to_us,
)


class Logged(Protocol):
    """A ground-truth entry that learns the record id of the event it describes."""

    record_id: int | None


Item = tuple[int, int, EventSpec, Logged | None]

HOST_CHANNELS = ("System", VMMS_ADMIN, HA_ADMIN, WORKER_ADMIN)
GUEST_CHANNELS = ("System", "Security", PROFILE_OPERATIONAL, NCSI_OPERATIONAL, FIREWALL_CHANNEL)
GUEST_CORE_CHANNELS = ("System", "Security")
"""What a guest exported when it sent no classification logs (``--no-classification-logs``)."""
INBOUND, LAYER_ACCEPT, LAYER_ACCEPT_RTID = "%%14592", "%%14610", 44
OUTBOUND, LAYER_CONNECT, LAYER_CONNECT_RTID = "%%14593", "%%14611", 48
QUARANTINE_ORIGIN = "Quarantine Default"
QUARANTINE_FILTER_RTID = 67249
"""The run-time id of the filter that drops inbound traffic in quarantine (one per boot in
reality; this one is the pair's in Security_short_selected records 5 and 6)."""
NULL_SID = "S-1-0-0"
SYSTEM_SID, LOCAL_SERVICE_SID, NETWORK_SERVICE_SID = "S-1-5-18", "S-1-5-19", "S-1-5-20"
PFIREWALL_HEADER = (
    "#Version: 1.5",
    "#Software: Microsoft Windows Firewall",
    "#Time Format: Local",
    "#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn "
    "tcpack tcpwin icmptype icmpcode info path",
    "",
)

# Which process listens on a port: (pid, image path as WFP logs it).
_LISTENERS: dict[int, tuple[int, str]] = {
    3389: (1104, r"\device\harddiskvolume2\windows\system32\svchost.exe"),
    1433: (2816, r"\device\harddiskvolume2\program files\microsoft sql server\mssql15"
                 r".mssqlserver\mssql\binn\sqlservr.exe"),
    1434: (2932, r"\device\harddiskvolume2\program files (x86)\microsoft sql server"
                 r"\90\shared\sqlbrowser.exe"),
    53: (1876, r"\device\harddiskvolume2\windows\system32\dns.exe"),
    161: (2040, r"\device\harddiskvolume2\windows\system32\snmp.exe"),
}  # fmt: skip
_ALLOW_RULES = {
    443: "IIS-WebServerRole-HTTPS-In-TCP",
    80: "IIS-WebServerRole-HTTP-In-TCP",
    3389: "RemoteDesktop-UserMode-In-TCP",
    445: "FPS-SMB-In-TCP",
    137: "FPS-NB_Name-In-UDP",
    1433: "SQLServer-In-TCP",
    1434: "SQLBrowser-In-UDP",
    53: "DNSSrv-UDP-In",
    161: "SNMP-In-UDP",
    5985: "WINRM-HTTP-In-TCP",
}


@dataclass
class BlockedTruth:
    """One blocked-inbound Security event, as ground_truth.json lists it."""

    guest: str
    time_us: int  # guest clock
    event_id: int
    protocol: str
    local_port: int
    remote_address: str
    remote_port: int
    migration_id: str | None
    path: str
    packet: int  # the blocked packet this event logs: a 5152 and a 5157 of one packet share it
    record_id: int | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "guest": self.guest,
            "time": iso(self.time_us),
            "event_id": self.event_id,
            "packet": self.packet,
            "protocol": self.protocol,
            "local_port": self.local_port,
            "remote_address": self.remote_address,
            "remote_port": self.remote_port,
            "migration_id": self.migration_id,
            "file": self.path,
            "record_id": self.record_id,
        }


@dataclass
class Rendered:
    """The incident's events per bundle-relative file, and the truth found while rendering."""

    events: dict[str, list[Item]] = field(default_factory=dict)
    blocked: list[BlockedTruth] = field(default_factory=list)
    # pfirewall.log lines as (order, guest clock, line): see Machine.order_us
    pfirewall: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    end_events: dict[str, str] = field(default_factory=dict)  # migration id -> what ended it
    # pfirewall.log lines of traffic the quarantine does not govern as (order, line, truth)
    routine_pfirewall: dict[str, list[tuple[int, str, Logged]]] = field(default_factory=dict)
    seq: int = 0

    def add(
        self, machine: Machine, spec: EventSpec, order_us: int, tag: Logged | None = None
    ) -> None:
        """File ``spec`` at ``order_us`` of its log's order (Machine.order_us)."""
        path = f"{machine.folder}/{file_name(spec.channel)}"
        self.seq += 1
        self.events.setdefault(path, []).append((order_us, self.seq, spec, tag))

    def sort(self) -> None:
        """Each file's events and each guest's pfirewall lines in the order they happened."""
        for items in self.events.values():
            items.sort(key=lambda i: (i[0], i[1]))
        for lines in self.pfirewall.values():
            lines.sort(key=lambda x: x[0])
        for routine in self.routine_pfirewall.values():
            routine.sort(key=lambda x: x[0])


def _secs(value: float) -> str:
    return f"{value:g}"


def _pid(rng: random.Random) -> int:
    return rng.randrange(400, 9000, 4)


def _tid(rng: random.Random) -> int:
    return rng.randrange(200, 12000, 4)


def _host_events(plan: Plan, out: Rendered, rng: random.Random) -> None:
    hosts = {h.name: h for h in plan.hosts}
    vmms_pid = {h.name: _pid(rng) for h in plan.hosts}
    cluster_pid = {h.name: _pid(rng) for h in plan.hosts}

    def emit(host: str, name: str, t: int, values: tuple[object, ...], pid: int) -> None:
        lay = layout(name)
        spec = lay.event(from_us(t), host, values, pid=pid, tid=_tid(rng), sid=SYSTEM_SID)
        out.add(hosts[host], spec, t)  # hosts' clocks never step

    for m in plan.migrations:
        vm, vmid, src, dst = m.guest.vm_name, m.guest.vmid, m.source, m.destination
        assert vm is not None and vmid is not None
        if plan.preset.upper_case_vmids:  # as the published 20415 writes Parameter1
            vmid = vmid.upper()
        worker_pid = _pid(rng)
        ms = US // 1000
        if m.clustered:
            # Cluster node names are short names, whatever Computer the host logs.
            nodes = (vm, src.split(".")[0], dst.split(".")[0])
            emit(src, "cluster.role_moving", m.start_us - 400 * ms, nodes, cluster_pid[src])
            emit(src, "ha.source_started", m.start_us - 200 * ms, (vmid, vm), cluster_pid[src])
            emit(dst, "ha.target_started", m.start_us + 300 * ms, (vmid, vm), cluster_pid[dst])
        emit(src, "vmms.migration_started", m.start_us, (vm, vmid, dst), vmms_pid[src])
        if m.status == "failed":
            message = (
                f"Virtual machine migration operation for '{vm}' failed at migration source "
                f"'{src}'. (Virtual machine ID {vmid.upper()})"
            )
            values = (vm, vmid, message, 0x8007274C)
            emit(src, "vmms.migration_failed", m.end_us, values, vmms_pid[src])
            if m.clustered:
                emit(src, "ha.migration_failed", m.end_us + 100 * ms, (vmid, vm), cluster_pid[src])
            continue
        assert m.blackout_s is not None and m.brownout_s is not None
        total = _secs(round((m.end_us - m.start_us) / US, 3))
        brown, black = _secs(m.brownout_s), _secs(m.blackout_s)
        dirty = rng.randrange(2000, 90000)
        emit(dst, "worker.brownout", m.blackout_start_us, (vm, vmid, brown), worker_pid)
        emit(dst, "worker.blackout", m.blackout_end_us + 20 * ms, (vm, vmid, black, dirty),
             worker_pid)  # fmt: skip
        completed = (
            "vmms.migration_completed_long_blackout"
            if m.blackout_s > 1.0
            else "vmms.migration_completed"
        )
        emit(src, completed, m.end_us, (vm, vmid, black), vmms_pid[src])
        emit(dst, "worker.migration_summary", m.end_us + 50 * ms, (vm, vmid, brown, black),
             worker_pid)  # fmt: skip
        emit(dst, "vmms.migration_succeeded", m.end_us + 400 * ms, (vm, vmid), vmms_pid[dst])
        if m.clustered:
            done = (vmid, vm, total)
            emit(src, "ha.source_completed", m.end_us + 150 * ms, done, cluster_pid[src])
            emit(dst, "ha.target_completed", m.end_us + 200 * ms, done, cluster_pid[dst])
            emit(dst, "cluster.role_online", m.end_us + 500 * ms, (vm,), cluster_pid[dst])


@dataclass(frozen=True)
class GuestIds:
    """Per-guest constants that real logs repeat: the network, the NIC, service processes."""

    network_guid: object
    luid: int
    nla_pid: int
    ncsi_pid: int
    mpssvc_pid: int
    interface_index: int


def guest_ids(guest: Machine, rng: random.Random) -> GuestIds:
    return GuestIds(
        network_guid=uuid.UUID(int=rng.getrandbits(128), version=4),
        luid=0x0006000000000000 | rng.randrange(1, 0xFFFF) << 24,
        nla_pid=_pid(rng),
        ncsi_pid=_pid(rng),
        mpssvc_pid=_pid(rng),
        interface_index=rng.randint(4, 14),
    )


def network_name(guest: Machine) -> str:
    """The domain network's name as NetworkProfile logs it (the guest's DNS domain)."""
    return guest.name.split(".", 1)[1] if "." in guest.name else "contoso.local"


def classification_events(
    guest: Machine,
    ids: GuestIds,
    t: int,
    rng: random.Random,
    extra_rng: random.Random | None = None,
) -> list[tuple[int, EventSpec]]:
    """The events that end a quarantine normally (and that a boot logs), guest clock ``t``.

    The firewall and NCSI log one event per interface: adapters after the first
    get theirs a millisecond apart, drawn from ``extra_rng`` so that a guest's
    second NIC leaves every other draw as it was.
    """
    name = network_name(guest)
    ms = US // 1000
    flags = (False, False, True, True, False, False, False, False)
    main = [
        (t, layout("profile.connected").event(
            from_us(t), guest.name, (name, name, ids.network_guid, 0, 1, 2),
            pid=ids.nla_pid, tid=_tid(rng), sid=LOCAL_SERVICE_SID)),
        (t + 9 * ms, layout("firewall.profile_changed").event(
            from_us(t + 9 * ms), guest.name, (guest.interface_guid, "ethernet_32769", 0, 1),
            pid=ids.mpssvc_pid, tid=_tid(rng), sid=LOCAL_SERVICE_SID)),
        (t + 11 * ms, layout("security.profile_changed").event(
            from_us(t + 11 * ms), guest.name, ("Domain",), pid=ids.mpssvc_pid, tid=_tid(rng))),
        (t + 23 * ms, layout("profile.state_change").event(
            from_us(t + 23 * ms), guest.name, flags,
            pid=ids.nla_pid, tid=_tid(rng), sid=LOCAL_SERVICE_SID)),
        (t + 140 * ms, layout("ncsi.capability_change").event(
            from_us(t + 140 * ms), guest.name, (guest.interface_guid, ids.luid, 0, 2, 4, 0),
            pid=ids.ncsi_pid, tid=_tid(rng), sid=NETWORK_SERVICE_SID)),
    ]  # fmt: skip
    per_nic: list[tuple[int, EventSpec]] = []
    for k, nic in enumerate(guest.extra_nics, start=1):
        assert extra_rng is not None, "a guest with several NICs needs extra_rng"
        per_nic += [
            (t + (9 + k) * ms, layout("firewall.profile_changed").event(
                from_us(t + (9 + k) * ms), guest.name,
                (nic.interface_guid, nic.interface_name, 0, 1),
                pid=ids.mpssvc_pid, tid=_tid(extra_rng), sid=LOCAL_SERVICE_SID)),
            (t + (140 + k) * ms, layout("ncsi.capability_change").event(
                from_us(t + (140 + k) * ms), guest.name,
                (nic.interface_guid, ids.luid + (k << 24), 0, 2, 4, 0),
                pid=ids.ncsi_pid, tid=_tid(extra_rng), sid=NETWORK_SERVICE_SID)),
        ]  # fmt: skip
    return [*main, *per_nic]


def wfp_values(
    guest: Machine,
    ids: GuestIds,
    *,
    packet: bool,
    inbound: bool,
    remote: str,
    remote_port: int,
    local_port: int,
    protocol: int,
    filter_rtid: int,
    origin: str,
    local_address: str | None = None,
    sender_source: bool = False,
    process: tuple[int, str] | None = None,
) -> tuple[object, ...]:
    """Payload values of a 5152/5156/5157 in the guest's layout (2016 or 2022 style).

    The sides are named as Windows names them, which differs by event: the
    connection events (5156/5157, ``packet=False``) put the local side in
    Source* in both directions; the packet drop (5152) puts the sender in
    Source*, so an inbound one names the remote side Source (catalog.toml cites
    the samples). A 5152 at the ALE receive/accept layer names the listening
    process, as its 5157 twin does (Security_short_selected records 5 and 6).

    ``local_address`` is the guest's address the traffic is for (a multicast group, a
    broadcast or loopback address; default: its first NIC's); ``sender_source``
    names an inbound connection event's sender Source anyway, as velociraptor's
    mDNS 5157 does; ``process`` is the (pid, image) the event names.
    """
    pid, app = _LISTENERS.get(local_port, (4, "System")) if inbound else _LISTENERS[3389]
    if process is not None:
        pid, app = process
    here = guest.address if local_address is None else local_address
    sender_first = inbound and (packet or sender_source)
    src, sport, dst, dport = (
        (remote, remote_port, here, local_port)
        if sender_first
        else (here, local_port, remote, remote_port)
    )
    layer, layer_rtid = (
        (LAYER_ACCEPT, LAYER_ACCEPT_RTID) if inbound else (LAYER_CONNECT, LAYER_CONNECT_RTID)
    )
    head = (pid, app, INBOUND if inbound else OUTBOUND, src, str(sport), dst, str(dport), protocol)
    extra = (origin, ids.interface_index) if guest.ws2022 else ()
    tail = (filter_rtid, layer, layer_rtid)
    remote_ids = () if packet else (NULL_SID, NULL_SID)
    return head + extra + tail + remote_ids


def wfp_layout(guest: Machine, event_id: int) -> Layout:
    """The 5152/5156/5157 layout of this guest's Windows version."""
    prefix = "wfp2022" if guest.ws2022 else "wfp"
    suffix = {5152: "packet_dropped", 5156: "connection_allowed", 5157: "connection_blocked"}
    return layout(f"{prefix}.{suffix[event_id]}")


def pfirewall_line(
    guest: Machine,
    when_us: int,
    *,
    action: str,
    protocol: int,
    remote: str,
    remote_port: int,
    local_port: int,
    inbound: bool,
    local_address: str | None = None,
) -> str:
    """One pfirewall.log line in the guest's local time (second precision, no offset)."""
    local = from_us(when_us).astimezone(ZoneInfo(guest.time_zone))
    proto = "TCP" if protocol == 6 else "UDP"
    if action == "ALLOW":
        size, flags = "0", "- - - -"
    elif protocol == 6:
        size, flags = "52", f"S {(remote_port * 7919) % 4294967295} 0 64240"
    else:
        size, flags = "78", "- - - -"
    here = guest.address if local_address is None else local_address
    src, sport, dst, dport = (
        (remote, remote_port, here, local_port)
        if inbound
        else (here, local_port, remote, remote_port)
    )
    path = "RECEIVE" if inbound else "SEND"
    fields = (f"{local:%Y-%m-%d %H:%M:%S}", action, proto, src, dst, sport, dport, size, flags)
    return " ".join(map(str, fields)) + f" - - - {path}"


def _guest_events(plan: Plan, out: Rendered, ids: dict[str, GuestIds], rng: random.Random) -> None:
    guests = {g.name: g for g in plan.guests}
    sec_path = {g.name: f"{g.folder}/Security.evtx" for g in plan.guests}
    extra_rng = feature_rng(plan.options.seed, "nic-events")
    for r in plan.reactions:
        g = r.migration.guest
        for n, (nic, at) in enumerate(r.network_events):
            t = g.guest_us(at)
            miniport = g.nics[nic].miniport
            spec = layout("netvsc.network_changed").event(
                from_us(t),
                g.name,
                (len(miniport), miniport),
                tid=_tid(rng if n == 0 else extra_rng),
            )
            out.add(g, spec, g.order_us(at))
        if r.classified_us is not None and not plan.preset.nla_chatter:
            when = g.guest_us(r.classified_us)
            back = g.stepped_back_us(r.classified_us)
            for t, spec in classification_events(g, ids[g.name], when, rng, extra_rng):
                out.add(g, spec, t + back)
            out.end_events[r.migration.id] = "NetworkProfile 10000 for the domain network"
    for packet, a in enumerate(plan.attempts):
        g = guests[a.guest.name]
        t, back = g.guest_us(a.time_us), g.stepped_back_us(a.time_us)
        gid = ids[g.name]
        if a.outcome == "lost":
            continue
        if plan.options.pfirewall:
            action = "DROP" if a.outcome == "blocked" else "ALLOW"
            line = pfirewall_line(
                g, t, action=action, protocol=a.protocol, remote=a.remote_address,
                remote_port=a.remote_port, local_port=a.local_port, inbound=True,
            )  # fmt: skip
            out.pfirewall.setdefault(g.name, []).append((t + back, t, line))
        if not g.wfp_auditing:
            continue
        common = dict(
            inbound=True,
            remote=a.remote_address,
            remote_port=a.remote_port,
            local_port=a.local_port,
            protocol=a.protocol,
        )
        if a.outcome == "allowed":
            if g.wfp_audit != "full":  # 5156 is a success audit: not logged failure-only
                continue
            values = wfp_values(
                g, gid, packet=False, filter_rtid=72000 + a.local_port % 997,
                origin=_ALLOW_RULES.get(a.local_port, "Allow-In"), **common,
            )  # fmt: skip
            spec = wfp_layout(g, 5156).event(from_us(t), g.name, values, tid=_tid(rng))
            out.add(g, spec, t + back)
            continue
        # A blocked SYN or datagram: the connection event, and often the packet drop too.
        # Windows logs both of one packet with the same TimeCreated and FilterRTID
        # (Security_short_selected records 5 and 6: 15:24:57.090800, FilterRTID 67249).
        main, other = (5157, 5152) if a.protocol == 6 else (5152, 5157)
        kinds = [main] + ([other] if rng.random() < 0.5 else [])
        when = t + 15
        for event_id in kinds:
            values = wfp_values(
                g, gid, packet=event_id == 5152, filter_rtid=QUARANTINE_FILTER_RTID,
                origin=QUARANTINE_ORIGIN, **common,
            )  # fmt: skip
            spec = wfp_layout(g, event_id).event(from_us(when), g.name, values, tid=_tid(rng))
            truth = BlockedTruth(
                g.name, when, event_id, "tcp" if a.protocol == 6 else "udp", a.local_port,
                a.remote_address, a.remote_port, a.migration_id, sec_path[g.name], packet,
            )  # fmt: skip
            out.blocked.append(truth)
            out.add(g, spec, when + back, truth)


def history_events(
    guest: Machine, ids: GuestIds, t: int, rng: random.Random
) -> list[tuple[int, EventSpec]]:
    """What a guest logged before the incident, from its boot at guest clock ``t``.

    The boot (Netvsc 12 and a classification), a pause and restart of the NIC
    (Netvsc 10/11, as a checkpoint causes) 20 minutes later, and a disconnect
    and reconnect (Netvsc 13/12, NetworkProfile 10001 then a classification)
    50 minutes later: real guest logs have these, and a correlator must not
    take them for a migration's network change. Each adapter logs its own
    Netvsc events; those of a second adapter draw from a stream of their own.
    """
    minute = 60 * US
    # Called once per exported file of the guest: a stream seeded by what the call is about
    # gives every call the same second-adapter events.
    extra_rng = feature_rng(t, f"history:{guest.name}")

    def netvsc(kind: str, when: int) -> list[tuple[int, EventSpec]]:
        out = []
        for k, nic in enumerate(guest.nics):
            at = when + k * 1000
            spec = layout(f"netvsc.{kind}").event(
                from_us(at), guest.name, (len(nic.miniport), nic.miniport),
                tid=_tid(rng if k == 0 else extra_rng),
            )  # fmt: skip
            out.append((at, spec))
        return out

    name = network_name(guest)
    flap = t + 50 * minute
    disconnected = layout("profile.disconnected").event(
        from_us(flap + 200_000), guest.name, (name, name, ids.network_guid, 0, 2, 2),
        pid=ids.nla_pid, tid=_tid(rng), sid=LOCAL_SERVICE_SID,
    )  # fmt: skip
    return [
        *netvsc("connected", t),
        *classification_events(guest, ids, t + 35 * US, rng, extra_rng),
        *netvsc("paused", t + 20 * minute),
        *netvsc("restarted", t + 20 * minute + 1_400_000),
        *netvsc("disconnected", flap),
        (flap + 200_000, disconnected),
        *netvsc("connected", flap + 3 * US),
        *classification_events(guest, ids, flap + 5 * US, rng, extra_rng),
    ]


def _unrelated_events(plan: Plan, out: Rendered, ids: dict[str, GuestIds]) -> None:
    """Another case's guest had a network change of its own, 30 minutes before its "start"."""
    for u in plan.unrelated:
        if not u.period_shift_s:
            continue
        rng = feature_rng(plan.options.seed, f"unrelated-events:{u.name}")
        at = to_us(plan.options.start) - 30 * 60 * US
        t, back = u.guest_us(at), u.stepped_back_us(at)
        spec = layout("netvsc.network_changed").event(
            from_us(t), u.name, (len(MINIPORT), MINIPORT), tid=_tid(rng)
        )
        out.add(u, spec, t + back)
        for when, event in classification_events(u, ids[u.name], t + 2_400_000, rng):
            out.add(u, event, when + back)


def render(plan: Plan, rng: random.Random) -> tuple[Rendered, dict[str, GuestIds]]:
    """The incident events of every file (sorted), the blocked truth, pfirewall lines."""
    out = Rendered()
    ids = {g.name: guest_ids(g, rng) for g in plan.guests}
    # Unrelated machines draw from streams of their own: adding one moves nothing else.
    ids |= {
        u.name: guest_ids(u, feature_rng(plan.options.seed, f"unrelated-ids:{u.name}"))
        for u in plan.unrelated
    }
    _host_events(plan, out, rng)
    _guest_events(plan, out, ids, rng)
    _unrelated_events(plan, out, ids)
    out.sort()
    return out, ids


def merge(*streams: Iterator[Item]) -> Iterator[Item]:
    """Time-ordered union of time-ordered streams."""
    return heapq.merge(*streams, key=lambda i: (i[0], i[1]))


def nearby_swaps(
    stream: Iterator[Item],
    rng: random.Random,
    within_us: int = 2000,
    steps: tuple[int, ...] = (),
) -> Iterator[Item]:
    """Swap some neighbours less than ``within_us`` apart, as real logs do.

    Windows assigns record ids in the order events reach the log, which for
    events from different threads a millisecond apart is not always the order
    of their timestamps. Never across a step back of the clock (``steps``, in
    the stream's order): neighbours on either side of it carry times seconds
    apart, and the order of a log is what tells the two sides apart.
    """
    held: Item | None = None
    for item in stream:
        if held is None:
            held = item
            continue
        close = item[0] - held[0] < within_us
        if close and rng.random() < 0.2 and not _straddles(held[0], item[0], steps):
            yield item
            continue
        yield held
        held = item
    if held is not None:
        yield held


def _straddles(earlier: int, later: int, steps: tuple[int, ...]) -> bool:
    """One of ``steps`` falls between two neighbours (the later one on its after side)."""
    return any(earlier < step <= later for step in steps)
