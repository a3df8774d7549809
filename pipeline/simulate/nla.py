"""What the Network List Service, NCSI and the firewall log around a network change.

The problem: a guest's classification logs are not one clean "the network was
classified" event. Around a change of network real machines log events that
say the opposite, or nothing yet: the public tugix456 NetworkProfile, NCSI and
Firewall logs show, at a network loss, NetworkProfile 10001, within a
millisecond Firewall 2010 OldProfile 4 -> NewProfile 2147483649 (0x80000001,
FW_PROFILE_TYPE_NONE in [MS-FASP] 2.2.2: no profile), and 0.3 s later NCSI
4042 Capability 0 (reason 14, previous 2); at the reconnection NetworkProfile
4004 fires seconds before the network's 10000, and a 10000 for the placeholder
network "Identifying..." (the Turkish equivalent there, preceded by 4001
CurrentOrNextState 0, its Guid the Network List Service's own, not the
network's) may come first, with the firewall's 2010 NONE -> 4 a few
milliseconds after it and the real network's 10000 (preceded by 4002
CurrentOrNextState 1) about 3 s later. A correlator that takes any of these for
the end of a quarantine ends the bug's window early; ``--nla-chatter`` writes
them so the tests can see that.

Timing: the loss events follow the first Netvsc 14 of a migration; in the bug
nothing that means "classified" follows within the window (no 10000 for the
real network, no 2010 to a real profile, no 4042 with Capability >= 1). In a
normal quarantine the classification instant C (the plan's) is the first
event that means "classified": either the firewall's 2010 to the domain
profile right after the placeholder network (tugix456 2024-11-15 07:17:41) or
the real network's 10000 with no placeholder (2024-11-14 17:17:17). Whether a
live migration's network change takes exactly this path is [I]: no public log
of a migrated guest has these channels.

Everything here draws from its own random stream, so turning the knob on
leaves the rest of the bundle as it was.
"""

from __future__ import annotations

import random
import uuid

from parsers.evtx_writer import EventSpec
from pipeline.simulate.events import GuestIds, Rendered, network_name
from pipeline.simulate.layouts import layout
from pipeline.simulate.plan import US, GuestReaction, Machine, Plan, feature_rng, from_us

PLACEHOLDER = "Identifying..."
"""The placeholder network NetworkProfile names while it identifies (English Windows)."""
FW_PROFILE_NONE = 0x80000001
"""Firewall 2010's NewProfile when the interface has no network ([MS-FASP] 2.2.2)."""
DOMAIN_PROFILE = 1
"""FW_PROFILE_TYPE_DOMAIN: the simulated guests are domain members."""
LOCAL_SERVICE, NETWORK_SERVICE = "S-1-5-19", "S-1-5-20"

MS = US // 1000
Timed = tuple[int, EventSpec]


def _tid(rng: random.Random) -> int:
    return rng.randrange(200, 12000, 4)


def _at(rng: random.Random, low_s: float, high_s: float) -> int:
    return round(rng.uniform(low_s, high_s) * US)


class _Guest:
    """One guest's event builders: its names, process ids and Guids as NLA logs them."""

    def __init__(self, guest: Machine, ids: GuestIds, placeholder: uuid.UUID, rng: random.Random):
        self.g, self.ids, self.placeholder, self.rng = guest, ids, placeholder, rng

    def _event(
        self, name: str, t: int, values: tuple[object, ...], pid: int, sid: str | None
    ) -> Timed:
        spec = layout(name).event(
            from_us(t), self.g.name, values, pid=pid, tid=_tid(self.rng), sid=sid
        )
        return t, spec

    def network(self, event: str, t: int, state: int) -> Timed:
        """NetworkProfile 10000/10001 for the domain network (Category 2, authenticated)."""
        name = network_name(self.g)
        values = (name, name, self.ids.network_guid, 0, state, 2)
        return self._event(event, t, values, self.ids.nla_pid, LOCAL_SERVICE)

    def placeholder_network(self, t: int) -> list[Timed]:
        """4001 (identifying) and the placeholder's 10000 a tenth of a millisecond later."""
        guid = self.g.interface_guid
        values = (PLACEHOLDER, PLACEHOLDER, self.placeholder, 0, 1, 0)
        return [
            self._event("profile.identifying", t, (guid, 0), self.ids.nla_pid, LOCAL_SERVICE),
            self._event("profile.connected", t + 120, values, self.ids.nla_pid, LOCAL_SERVICE),
        ]

    def identified_network(self, t: int) -> list[Timed]:
        """4002 (identified) half a millisecond before the real network's 10000 at ``t``."""
        guid = self.g.interface_guid
        return [
            self._event("profile.identified", t - 500, (guid, 1), self.ids.nla_pid, LOCAL_SERVICE),
            self.network("profile.connected", t, 1),
        ]

    def firewall(self, t: int, old: int, new: int) -> list[Timed]:
        """Firewall 2010 on every interface, a third of a millisecond apart."""
        return [
            self._event(
                "firewall.profile_changed",
                t + k * 300,
                (nic.interface_guid, nic.interface_name, old, new),
                self.ids.mpssvc_pid,
                LOCAL_SERVICE,
            )
            for k, nic in enumerate(self.g.nics)
        ]

    def capability(self, t: int, capability: int, reason: int, previous: int) -> list[Timed]:
        """NCSI 4042 on every interface (IPv4, Family 0)."""
        return [
            self._event(
                "ncsi.capability_change",
                t + k * MS,
                (nic.interface_guid, self.ids.luid + (k << 24), 0, capability, reason, previous),
                self.ids.ncsi_pid,
                NETWORK_SERVICE,
            )
            for k, nic in enumerate(self.g.nics)
        ]

    def state_change(self, t: int, *, new_profile: bool) -> Timed:
        """NetworkProfile 4004; a new connection profile also changes its cost (tugix456)."""
        flags = (new_profile, new_profile, False, True, False, False, False, False)
        return self._event("profile.state_change", t, flags, self.ids.nla_pid, LOCAL_SERVICE)

    def active_profile(self, t: int) -> Timed:
        spec = layout("security.profile_changed").event(
            from_us(t), self.g.name, ("Domain",), pid=self.ids.mpssvc_pid, tid=_tid(self.rng)
        )
        return t, spec


def _loss(b: _Guest, q0: int) -> list[Timed]:
    """The network-loss events after the first Netvsc 14 (guest clock ``q0``)."""
    rng = b.rng
    lost = q0 + _at(rng, 0.003, 0.025)
    return [
        b.network("profile.disconnected", lost, 2),
        *b.firewall(lost + _at(rng, 0.0005, 0.001), DOMAIN_PROFILE, FW_PROFILE_NONE),
        *b.capability(lost + _at(rng, 0.29, 0.31), 0, 14, 2),
        b.state_change(q0 + _at(rng, 0.35, 0.8), new_profile=True),
    ]


def _classified(b: _Guest, c: int) -> tuple[list[Timed], str]:
    """The classification at guest clock ``c`` in one of its two real forms, and its name."""
    rng = b.rng
    if rng.random() < 0.5:
        # Placeholder first; the firewall applies the profile on it (tugix456 07:17:41).
        identified = c + _at(rng, 2.6, 3.2)
        events = [
            *b.placeholder_network(c - _at(rng, 0.002, 0.45)),
            *b.firewall(c, FW_PROFILE_NONE, DOMAIN_PROFILE),
            b.active_profile(c + 2 * MS),
            *b.capability(c + _at(rng, 0.3, 0.6), 2, 8, 0),
            b.state_change(c + _at(rng, 1.2, 1.9), new_profile=True),
            *b.identified_network(identified),
            b.state_change(identified + _at(rng, 0.9, 1.1), new_profile=False),
        ]
        return events, "Firewall 2010 NewProfile 1 (domain) after the placeholder network"
    # The network is identified at once (tugix456 2024-11-14 17:17:17).
    events = [
        *b.identified_network(c),
        *b.firewall(c + _at(rng, 0.001, 0.003), FW_PROFILE_NONE, DOMAIN_PROFILE),
        b.active_profile(c + 4 * MS),
        b.state_change(c + _at(rng, 1.8, 2.2), new_profile=True),
        *b.capability(c + _at(rng, 0.4, 2.8), 2, 4, 0),
        b.state_change(c + _at(rng, 3.5, 4.0), new_profile=False),
    ]
    return events, "NetworkProfile 10000 for the domain network"


def change_events(b: _Guest, r: GuestReaction) -> tuple[list[Timed], str | None]:
    """Everything NLA, NCSI and the firewall log for one migration's network change."""
    assert r.network_change_us is not None
    g = b.g
    q0 = g.guest_us(r.network_change_us)
    events = _loss(b, q0)
    if r.classified_us is None:
        # The bug (or no quarantine): the placeholder appears, nothing classifies.
        events += b.placeholder_network(q0 + _at(b.rng, 0.9, 1.6))
        return events, None
    classified, end = _classified(b, g.guest_us(r.classified_us))
    return events + classified, end


def add_nla_chatter(plan: Plan, out: Rendered, ids: dict[str, GuestIds]) -> None:
    """Write the NLA/NCSI/firewall events of every network change into ``out``.

    Replaces the plain classification events the renderer writes without the
    knob; records in ``out.end_events`` which event ended each normal quarantine.
    """
    rng = feature_rng(plan.options.seed, "nla")
    # One placeholder Guid per guest: tugix456 logs the same one for every placeholder of
    # one Network List Service process (3D17E1FE... twice under pid 2396), a new one after
    # the service restarts; the simulated guests do not restart it.
    builders = {
        g.name: _Guest(g, ids[g.name], uuid.UUID(int=rng.getrandbits(128), version=4), rng)
        for g in plan.guests
    }
    for r in plan.reactions:
        if r.network_change_us is None:
            continue
        g = r.migration.guest
        events, end = change_events(builders[g.name], r)
        back = g.stepped_back_us(r.network_change_us)  # all of them follow the resume
        for t, spec in events:
            out.add(g, spec, t + back)
        if end is not None:
            out.end_events[r.migration.id] = end
