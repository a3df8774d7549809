"""The incident model: which machines exist, which VM moves when, what its guest lives through.

The problem: a correlator is only testable against a bundle whose truth is
known exactly. This module decides that truth before any event is written:
machines and their clocks, each live migration's phases on the host clock
(start, brownout, blackout, completion), the guest's network change, its
quarantine window and how it ends, and every inbound connection attempt with
its fate (allowed, lost in the blackout, blocked by the quarantine). The event
builders (:mod:`pipeline.simulate.events`) only render this plan, so the
ground truth and the files cannot disagree.

Times are integer microseconds since the Unix epoch, UTC, on the *host* clock
(hosts agree with each other); a guest's own clock is derived by
:meth:`Machine.guest_us`. Microseconds because both EVTX readers render
TimeCreated with microsecond precision: what the truth says is exactly what a
reader will show.
"""

from __future__ import annotations

import random
import sys
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

from parsers.model import LmtraceError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

US = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
DEFAULT_START = datetime(2025, 3, 4, 9, 0, 0, tzinfo=timezone.utc)

Classification = Literal["never", "normal", "mixed"]
AuditMode = Literal["full", "failure-only", "off"]
AUDIT_MODES: tuple[AuditMode, ...] = ("full", "failure-only", "off")
REALISM = (
    "multicast_drops",
    "loopback_connections",
    "nla_chatter",
    "host_fqdn",
    "upper_case_vmids",
)
"""What real logs always hold: on in every scenario unless scenarios.toml or the ``--no-``
form of the knob of the same name turns it off (docs/simulate.md, "Realism")."""

HISTORY_US = 2 * 3600 * US
"""How much log history precedes the scenario's --start (the guests boot then)."""

SAFETY_TIMEOUT_S = 7.0
"""The guest firewall's hard-coded wait when the classification signal never comes [C: wiki]."""

NORMAL_QUARANTINE_MAX_S = 4.0
"""The longest a normal quarantine lasts: "about 2-3 s" [C: wiki], with a margin."""

LOG_DELAY_US = 1000
"""Upper bound of the delay between a blocked packet and its Security events."""

TCP_RETRY_S = (1.0, 3.0, 7.0)
"""When a blocked or lost SYN is sent again, after the first try [I: default retransmission]."""

_VM_NAMES = ("APP-VM", "SQL-VM", "WEB-VM", "FS-VM", "DC-VM", "RDS-VM")
_GUEST_NAMES = (
    "SQLPROD7",
    "WEBFE02",
    "APPSRV12",
    "FILESRV1",
    "DC03",
    "RDSH04",
    "ERPAPP2",
    "MQBROKER1",
    "IIS-EDGE3",
    "BIZTALK01",
)
_DOMAIN = "corp.contoso.com"
# Listening services per guest role: (protocol number, port).
_SERVICES = (
    ((6, 443), (6, 3389), (17, 53), (6, 1433)),
    ((6, 1433), (17, 1434), (6, 3389), (6, 445)),
    ((6, 443), (6, 80), (17, 161), (6, 5985)),
    ((6, 445), (17, 137), (6, 3389), (17, 53)),
)


class SimulateError(LmtraceError):
    """A simulation cannot be made from these arguments; the message says which one."""


@dataclass(frozen=True)
class Preset:
    """One scenario of scenarios.toml."""

    name: str
    description: str
    expect: str
    hosts: int
    vms: int
    migrations: int
    clustered: bool
    drain: bool
    outcome: Literal["completed", "failed"]
    host_fixed: bool
    guest_quarantine: bool
    classification: Classification
    wfp_auditing: bool
    load: float
    noise: float
    # Realism (REALISM): optional in scenarios.toml, on unless a scenario turns it off.
    multicast_drops: bool = True
    loopback_connections: bool = True
    nla_chatter: bool = True
    host_fqdn: bool = True
    upper_case_vmids: bool = True
    host_update: bool = False  # hosts log KB4338822 installed (and restart), before the incident


OS_NAMES = {"2012r2": "Windows Server 2012 R2", "2016": "Windows Server 2016",
            "2019": "Windows Server 2019", "2022": "Windows Server 2022"}  # fmt: skip


def load_presets(path: Path | None = None) -> dict[str, Preset]:
    """The scenarios of scenarios.toml (shipped in the package) or of ``path``."""
    if path is None:
        text = resources.files("pipeline.simulate").joinpath("scenarios.toml").read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    data = tomllib.loads(text)
    presets: dict[str, Preset] = {}
    known = set(Preset.__dataclass_fields__) - {"name"}
    required = known - set(REALISM) - {"host_update"}
    for name, table in data.items():
        unknown = set(table) - known
        missing = required - set(table)
        if unknown or missing:
            raise SimulateError(
                f"scenarios.toml [{name}]: unknown keys {sorted(unknown)}, "
                f"missing keys {sorted(missing)}"
            )
        presets[name] = Preset(name=name, **table)
    return presets


@dataclass(frozen=True)
class SimulateOptions:
    """Everything a bundle depends on; the same options always give the same bytes."""

    scenario: str
    seed: int = 0
    hosts: int | None = None
    vms: int | None = None
    migrations: int | None = None
    guest_clock_offset: float = 0.0  # seconds, guest clock minus host clock at --start
    guest_clock_drift: float = 0.0  # ppm
    guest_clock_jump: float = 0.0  # seconds the guest clock steps at each migration's resume
    name_mismatch: bool = False
    load: float | None = None
    noise: float | None = None
    guest_tz: str = "UTC"
    pfirewall: bool = False
    size: int | None = None  # bytes of .evtx in the whole bundle
    start: datetime = DEFAULT_START
    ws2022_guests: int = 0
    # What real logs hold (docs/simulate.md, "Realism"); None: the scenario's default.
    multicast_drops: bool | None = None
    loopback_connections: bool | None = None
    nla_chatter: bool | None = None
    host_fqdn: bool | None = None
    upper_case_vmids: bool | None = None
    wfp_audit: AuditMode | None = None  # None: "full" if the scenario audits, else "off"
    classification_logs: bool = True  # the guests' NetworkProfile/NCSI/Firewall logs exported
    guest_nics: int = 1
    extra_network_changes: int = 0  # Netvsc 14 indications after the first, per migration
    unrelated_machines: int = 0
    guest_os: str = "2016"  # the other guests' Windows Server version: 2012r2, 2016, 2019
    rename_guest: bool = False  # the first guest was renamed (EventLog 6011) after its first boot

    def arguments(self) -> dict[str, object]:
        """The options as JSON values, for ground_truth.json."""
        out: dict[str, object] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = iso(to_us(value)) if isinstance(value, datetime) else value
        return out


MINIPORT = "Microsoft Hyper-V Network Adapter"
"""The synthetic NIC's miniport name as Netvsc logs it; the k-th adapter adds " #k"."""


@dataclass(frozen=True)
class Nic:
    """One guest network adapter: its miniport name, interface GUID, address, WFP name."""

    miniport: str
    interface_guid: uuid.UUID
    address: str
    interface_name: str  # as Firewall 2010 logs it


@dataclass(frozen=True)
class Machine:
    """A host or a guest; guests know their VM and their clock."""

    name: str  # Computer as logged
    folder: str  # the bundle folder it is exported to
    role: Literal["host", "guest", "unrelated"]
    start_us: int = 0  # the instant the clock offset is measured at
    vm_name: str | None = None
    vmid: str | None = None  # lower case, no braces
    clock_offset_s: float = 0.0
    clock_drift_ppm: float = 0.0
    clock_jump_s: float = 0.0  # the clock steps by this much at each instant of clock_jumps_us
    clock_jumps_us: tuple[int, ...] = ()  # host times of the steps (migration resumes)
    time_zone: str = "UTC"
    os: str = "Windows Server 2016"
    os_key: str = "2016"  # key of facts.OS_STRINGS
    former_name: str | None = None  # the name it had before a rename
    ws2022: bool = False
    wfp_audit: AuditMode = "full"
    address: str = ""
    services: tuple[tuple[int, int], ...] = ()
    memory_gb: int = 8
    interface_guid: uuid.UUID = field(default_factory=lambda: uuid.UUID(int=0))
    extra_nics: tuple[Nic, ...] = ()  # the guest's second and later network adapters
    # An unrelated machine: why it is not a migrated guest, and how far its logs lie from the
    # incident (another case's logs, days earlier; not a clock error: its clock is right).
    unrelated_because: str | None = None
    period_shift_s: float = 0.0

    @property
    def wfp_auditing(self) -> bool:
        """Some WFP audit events are logged (full or failure-only auditing)."""
        return self.wfp_audit != "off"

    @property
    def nics(self) -> tuple[Nic, ...]:
        """Every network adapter, the first one (``interface_guid``, ``address``) first."""
        first = Nic(MINIPORT, self.interface_guid, self.address, "ethernet_32769")
        return (first, *self.extra_nics)

    def guest_us(self, host_us: int) -> int:
        """What this machine's own clock shows at host time ``host_us``."""
        steps = sum(1 for at in self.clock_jumps_us if at <= host_us)
        return self._reading(host_us, steps)

    def _reading(self, host_us: int, steps: int) -> int:
        """The clock at host time ``host_us`` once it has stepped ``steps`` times."""
        drift = self.clock_drift_ppm * (host_us - self.start_us) / US
        offset = self.clock_offset_s + steps * self.clock_jump_s + self.period_shift_s
        return host_us + round(offset * US + drift)

    @property
    def steps_back(self) -> bool:
        """The clock steps back at some instant (its logs' order is not its readings')."""
        return self.clock_jump_s < 0 and bool(self.clock_jumps_us)

    @cached_property
    def _steps_back(self) -> tuple[tuple[int, int], ...]:
        """Each step back as (where it falls in the logs' order, how far back the clock is
        from then on): what :meth:`reading_at` needs for each of a gigabyte of events."""
        if not self.steps_back:
            return ()
        return tuple((self.order_us(at), self.stepped_back_us(at)) for at in self.clock_jumps_us)

    def steps_back_at(self) -> tuple[int, ...]:
        """Where each step back falls in the logs' order (:meth:`order_us`)."""
        return tuple(place for place, _ in self._steps_back)

    def order_us(self, host_us: int) -> int:
        """Where an event at host time ``host_us`` falls in this machine's logs.

        Windows writes each log in the order things happen, while each event carries
        what the clock showed. A clock that steps back shows times it already showed,
        so its readings cannot order a log; the same clock with its steps back undone
        can: it grows with the host time. A clock that never steps back is its own
        order (its bundles keep their bytes); a step forward leaves only a gap.
        """
        return self._reading(host_us, 0) if self.steps_back else self.guest_us(host_us)

    def stepped_back_us(self, host_us: int) -> int:
        """How far the clock has stepped back by host time ``host_us`` (0 if it never did):
        an event's place in its log is its reading plus this."""
        return self.order_us(host_us) - self.guest_us(host_us)

    def reading_at(self, order_us: int) -> int:
        """What the clock showed at ``order_us`` in its logs' order (:meth:`order_us`).

        For what is drawn along a log rather than at host times (background noise,
        routine traffic): both sides of a step back get their events, each stamped
        with the time its side of the step showed.
        """
        back = 0
        for place, since in self._steps_back:
            if place > order_us:
                break
            back = since
        return order_us - back


@dataclass(frozen=True)
class Migration:
    """One live migration, on the host clock."""

    id: str
    guest: Machine
    source: str
    destination: str
    clustered: bool
    status: Literal["completed", "failed"]
    start_us: int  # VMMS 20413 on the source
    brownout_start_us: int
    blackout_start_us: int  # == end of brownout
    blackout_end_us: int
    end_us: int  # 20415/20417 on the source, or the failure event
    blackout_s: float | None
    brownout_s: float | None


@dataclass(frozen=True)
class GuestReaction:
    """What the guest logs after a completed migration (host clock)."""

    migration: Migration
    network_change_us: int | None  # the first Netvsc 14 (Q0); None when the host is fixed
    quarantine_end_us: int | None  # None: no quarantine (host fixed or quarantine disabled)
    ended_by: Literal["classification", "safety-timeout"] | None
    classified_us: int | None  # NetworkProfile/NCSI/FW events, when they come
    # Every Netvsc 14 of this migration as (NIC index into Machine.nics, host time), in time
    # order; the first is network_change_us. Empty when the host is fixed.
    network_events: tuple[tuple[int, int], ...] = ()

    @property
    def last_network_change_us(self) -> int | None:
        """The last network event: the safety timeout counts from it (docs/domain.md, the seed)."""
        return self.network_events[-1][1] if self.network_events else self.network_change_us


@dataclass(frozen=True)
class Attempt:
    """One inbound packet that opens a connection (a SYN or a UDP datagram), host clock."""

    guest: Machine
    time_us: int
    protocol: int  # 6 or 17
    local_port: int
    remote_address: str
    remote_port: int
    outcome: Literal["allowed", "blocked", "lost"]
    migration_id: str | None


@dataclass(frozen=True)
class Plan:
    """The whole incident, before it is rendered into events."""

    preset: Preset
    options: SimulateOptions
    hosts: tuple[Machine, ...]
    guests: tuple[Machine, ...]
    migrations: tuple[Migration, ...]
    reactions: tuple[GuestReaction, ...]
    attempts: tuple[Attempt, ...]
    begin_us: int  # first incident-related time (history starts earlier)
    end_us: int  # last event time of the incident window
    unrelated: tuple[Machine, ...] = ()  # machines in the bundle that are no migrated guest

    def quarantine_windows(self, guest: Machine) -> list[tuple[int, int]]:
        """Host-clock intervals in which this guest's inbound traffic was quarantined."""
        return [
            (r.network_change_us, r.quarantine_end_us)
            for r in self.reactions
            if r.migration.guest == guest
            and r.network_change_us is not None
            and r.quarantine_end_us is not None
        ]


def to_us(when: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    delta = when - EPOCH
    return (delta.days * 86400 + delta.seconds) * US + delta.microseconds


def from_us(us: int) -> datetime:
    """The aware UTC datetime of epoch microseconds."""
    return EPOCH + timedelta(microseconds=us)


def iso(us: int) -> str:
    """ISO 8601 UTC with microseconds, as ground_truth.json writes times."""
    return from_us(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def resolve_preset(options: SimulateOptions, presets: dict[str, Preset]) -> Preset:
    """The scenario with the knobs applied; SimulateError for bad values."""
    preset = presets.get(options.scenario)
    if preset is None:
        raise SimulateError(
            f"unknown scenario {options.scenario!r}; valid: {', '.join(sorted(presets))}"
        )
    merged = Preset(
        **{
            **preset.__dict__,
            **{
                k: getattr(options, k)
                for k in ("hosts", "vms", "migrations", "load", "noise", *REALISM)
                if getattr(options, k) is not None
            },
        }
    )
    if options.wfp_audit is not None and options.wfp_audit not in AUDIT_MODES:
        raise SimulateError(
            f"--wfp-audit {options.wfp_audit!r}: use one of {', '.join(AUDIT_MODES)}"
        )
    if not 1 <= options.guest_nics <= 8:
        raise SimulateError("--guest-nics must be between 1 and 8")
    if not 0 <= options.extra_network_changes <= 5:
        raise SimulateError("--extra-network-changes must be between 0 and 5")
    if not 0 <= options.unrelated_machines <= 4:
        raise SimulateError("--unrelated-machines must be between 0 and 4")
    if merged.hosts < 2:
        raise SimulateError("--hosts must be at least 2 (a live migration needs two hosts)")
    if merged.vms < 1:
        raise SimulateError("--vms must be at least 1")
    if merged.migrations < 0 or merged.load < 0 or merged.noise < 0:
        raise SimulateError("--migrations, --load and --noise cannot be negative")
    if options.guest_os not in OS_NAMES or options.guest_os == "2022":
        raise SimulateError(
            f"--guest-os {options.guest_os!r}: one of 2012r2, 2016, 2019 (2022: --ws2022-guests)"
        )
    if not 0 <= options.ws2022_guests <= merged.vms:
        raise SimulateError(f"--ws2022-guests must be between 0 and --vms ({merged.vms})")
    if options.start.tzinfo is None:
        raise SimulateError("--start needs a time zone (e.g. 2025-03-04T09:00:00Z)")
    return merged


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def feature_rng(seed: int, feature: str) -> random.Random:
    """A random stream of its own for one optional feature.

    Turning a realism knob on must not move anything else: with its own stream,
    the same seed gives the same migrations, windows and drops with the knob on
    or off, so a test can compare the two bundles event by event.
    """
    return random.Random(f"lmtrace:{feature}:{seed}")


def audit_mode(preset: Preset, options: SimulateOptions) -> AuditMode:
    """The guests' WFP auditing: the knob, else the scenario's (full or off)."""
    if options.wfp_audit is not None:
        return options.wfp_audit
    return "full" if preset.wfp_auditing else "off"


def _extra_nics(count: int, index: int, rng: random.Random) -> tuple[Nic, ...]:
    """Adapters 2..count of guest ``index``: a backup or storage network each."""
    return tuple(
        Nic(
            f"{MINIPORT} #{k}",
            _uuid(rng),
            f"10.{20 + k}.{1 + index // 200}.{11 + index % 200}",
            f"ethernet_{32768 + k}",
        )
        for k in range(2, count + 1)
    )


def _machines(
    preset: Preset, options: SimulateOptions, rng: random.Random
) -> tuple[tuple[Machine, ...], tuple[Machine, ...]]:
    start_us = to_us(options.start)
    # Real hosts log their Computer as the FQDN (the published 20415: 773330-hyp1.MPC1495823.local).
    suffix = f".{_DOMAIN}" if preset.host_fqdn else ""
    hosts = tuple(
        Machine(f"HV-NODE{i + 1}{suffix}", f"HV-NODE{i + 1}", "host", start_us)
        for i in range(preset.hosts)
    )
    nic_rng = feature_rng(options.seed, "nics")
    guests = []
    first_2022 = preset.vms - options.ws2022_guests
    for i in range(preset.vms):
        vm_name = f"{_VM_NAMES[i % len(_VM_NAMES)]}{i // len(_VM_NAMES) + 1:02d}"
        if options.name_mismatch:
            # Every other guest has an unrelated host name; the rest log the VM name as
            # a lower-case FQDN. Both are what customers' bundles show.
            if i % 2 == 0:
                short = _GUEST_NAMES[(i // 2) % len(_GUEST_NAMES)]
                short += "" if i < 2 * len(_GUEST_NAMES) else str(i)
            else:
                short = vm_name.lower()
            name = f"{short}.{_DOMAIN}"
            folder = short.upper()
        else:
            name = folder = vm_name
        ws2022 = i >= first_2022
        os_key = "2022" if ws2022 else options.guest_os
        vmid = str(_uuid(rng))
        # A renamed guest had the random name setup gives, derived here from its VMID so
        # that the main random stream (and every other bundle value) stays as it was.
        former = (
            "WIN-" + vmid.replace("-", "")[:11].upper() if options.rename_guest and i == 0 else None
        )
        guests.append(
            Machine(
                name=name,
                folder=folder,
                role="guest",
                start_us=start_us,
                vm_name=vm_name,
                vmid=vmid,
                clock_offset_s=options.guest_clock_offset,
                clock_drift_ppm=options.guest_clock_drift,
                time_zone=options.guest_tz,
                os=OS_NAMES[os_key],
                os_key=os_key,
                former_name=former,
                ws2022=ws2022,
                wfp_audit=audit_mode(preset, options),
                address=f"10.20.{1 + i // 200}.{11 + i % 200}",
                services=_SERVICES[i % len(_SERVICES)],
                memory_gb=rng.choice((4, 8, 8, 16, 16, 32, 64)),
                interface_guid=_uuid(rng),
                extra_nics=_extra_nics(options.guest_nics, i, nic_rng),
            )
        )
    return hosts, tuple(guests)


def _migration(
    index: int,
    guest: Machine,
    source: str,
    destination: str,
    start_us: int,
    preset: Preset,
    rng: random.Random,
) -> Migration:
    """The phases of one migration; brownout grows with the VM's memory."""
    mid = f"lm-{index + 1:03d}"
    setup = round(rng.uniform(0.8, 2.5) * US)
    if preset.outcome == "failed":
        end = start_us + round(rng.uniform(8.0, 40.0) * US)
        return Migration(
            mid, guest, source, destination, preset.clustered, "failed", start_us,
            start_us + setup, end, end, end, None, None,
        )  # fmt: skip
    brownout_s = round(min(max(guest.memory_gb * rng.uniform(0.35, 0.7), 2.0), 45.0), 3)
    blackout_s = round(rng.triangular(0.1, 1.5, 0.35), 3)
    brown = start_us + setup
    black = brown + round(brownout_s * US)
    black_end = black + round(blackout_s * US)
    end = black_end + round(rng.uniform(0.05, 0.3) * US)
    return Migration(
        mid, guest, source, destination, preset.clustered, "completed", start_us,
        brown, black, black_end, end, blackout_s, brownout_s,
    )  # fmt: skip


def _migrations(
    preset: Preset,
    hosts: tuple[Machine, ...],
    guests: tuple[Machine, ...],
    begin_us: int,
    rng: random.Random,
) -> tuple[Migration, ...]:
    placement = {g.name: (0 if preset.drain else i % len(hosts)) for i, g in enumerate(guests)}
    out: list[Migration] = []
    if preset.drain:
        # Every VM of HV-NODE1 leaves, at most two migrations at a time (the Hyper-V
        # default), so brownouts overlap.
        count = min(preset.migrations, len(guests))
        for i in range(count):
            if i < 2:
                start = begin_us + round(i * rng.uniform(1.0, 3.0) * US)
            else:
                start = out[i - 2].end_us + round(rng.uniform(0.5, 2.0) * US)
            dest = hosts[1 + i % (len(hosts) - 1)].name
            out.append(_migration(i, guests[i], hosts[0].name, dest, start, preset, rng))
        return tuple(out)
    start = begin_us
    for i in range(preset.migrations):
        guest = guests[i % len(guests)]
        src = placement[guest.name]
        dst = (src + 1) % len(hosts)
        m = _migration(i, guest, hosts[src].name, hosts[dst].name, start, preset, rng)
        if m.status == "completed":
            placement[guest.name] = dst
        out.append(m)
        start = m.end_us + round(rng.uniform(240.0, 720.0) * US)
    return tuple(out)


_UNRELATED = (
    ("FS-LEGACY01", "fabrikam.local", -3),
    ("PRINTSRV02", _DOMAIN, 0),
    ("SQLOLD03", "fabrikam.local", -9),
    ("JUMPHOST01", _DOMAIN, 0),
)
"""Unrelated machines in turn: another case's guest whose logs are days away (days < 0), or
a server of this site, not migrated, whose logs cover the incident and show nothing of it."""


def _unrelated_machines(options: SimulateOptions, start_us: int) -> tuple[Machine, ...]:
    rng = feature_rng(options.seed, "unrelated")
    out = []
    for i in range(options.unrelated_machines):
        short, domain, days = _UNRELATED[i]
        if days:
            shift = days * 86400.0 - round(rng.uniform(1.0, 20.0) * 3600.0)
            why = f"another case's guest: its logs lie {-days} days and more before the migrations"
        else:
            shift = 0.0
            why = "not a migrated VM: its logs cover the migrations and show none of them"
        out.append(
            Machine(
                name=f"{short}.{domain}",
                folder=short,
                role="unrelated",
                start_us=start_us,
                time_zone=options.guest_tz,
                address=f"10.20.9.{20 + i}",
                services=_SERVICES[i % len(_SERVICES)],
                interface_guid=_uuid(rng),
                unrelated_because=why,
                period_shift_s=shift,
            )
        )
    return tuple(out)


def _network_events(
    q0: int, nics: int, extra: int, rng: random.Random
) -> tuple[tuple[int, int], ...]:
    """Every Netvsc 14 of one migration: one per NIC, then ``extra`` more rounds.

    Each synthetic NIC gets its own indication (one event per miniport) a few
    milliseconds to a tenth of a second after the first; a repeated indication
    (a second network change while the first is being handled) comes 1.5-4 s
    after the previous round. The times are [I]: no public guest log shows a
    multi-NIC live migration.
    """
    out: list[tuple[int, int]] = []
    round_at = q0
    for n in range(1 + extra):
        if n:
            round_at += round(rng.uniform(1.5, 4.0) * US)
        out.append((0, round_at))
        for k in range(1, nics):
            out.append((k, round_at + round(rng.uniform(0.001, 0.12) * US)))
    return tuple(sorted(out, key=lambda e: (e[1], e[0])))


def _reactions(
    preset: Preset,
    options: SimulateOptions,
    migrations: tuple[Migration, ...],
    rng: random.Random,
) -> tuple[GuestReaction, ...]:
    nic_rng = feature_rng(options.seed, "network-events")
    buggy: dict[str, bool] = {}
    guests = sorted({m.guest.name for m in migrations if m.status == "completed"})
    if preset.classification == "mixed":
        # At least one guest of each kind when there are two or more.
        flags = [rng.random() < 0.5 for _ in guests]
        if len(guests) >= 2:
            flags[0], flags[1] = True, False
            rng.shuffle(flags)
        buggy = dict(zip(guests, flags, strict=True))
    out = []
    for m in migrations:
        if m.status != "completed":
            continue
        if preset.host_fixed:
            out.append(GuestReaction(m, None, None, None, None))
            continue
        q0 = m.blackout_end_us + round(rng.uniform(0.1, 1.0) * US)
        events = _network_events(q0, len(m.guest.nics), options.extra_network_changes, nic_rng)
        last = events[-1][1]
        bug = buggy.get(m.guest.name, preset.classification == "never")
        classified = None if bug else last + round(rng.uniform(2.0, 3.0) * US)
        if not preset.guest_quarantine:
            out.append(GuestReaction(m, q0, None, None, classified, events))
        elif bug:
            # Every interface leaves quarantine 7 s after the *last* network event (seed).
            end = last + round(SAFETY_TIMEOUT_S * US)
            out.append(GuestReaction(m, q0, end, "safety-timeout", None, events))
        else:
            out.append(GuestReaction(m, q0, classified, "classification", classified, events))
    return tuple(out)


def _fate(
    t: int, frozen: list[tuple[int, int]], quarantined: list[tuple[int, int]]
) -> Literal["allowed", "blocked", "lost"]:
    if any(a <= t < b for a, b in frozen):
        return "lost"
    # The blocked events are logged up to a fraction of a millisecond after the packet;
    # a packet in the window's last millisecond counts as allowed, so that every logged
    # drop lies inside the window the truth states.
    if any(a <= t < b - LOG_DELAY_US for a, b in quarantined):
        return "blocked"
    return "allowed"


def _attempts(
    preset: Preset,
    migrations: tuple[Migration, ...],
    reactions: tuple[GuestReaction, ...],
    rng: random.Random,
) -> tuple[Attempt, ...]:
    """Inbound clients around each completed migration, at ``load`` per second.

    A SYN that is lost (VM frozen) or blocked (quarantine) is sent again after
    1, 3 and 7 s; a UDP datagram is not. Windows on the VM's network path
    (blackout until the guest sees the change) are "lost", quarantine windows
    "blocked".
    """
    if preset.load <= 0:
        return ()
    frozen: dict[str, list[tuple[int, int]]] = {}
    quarantined: dict[str, list[tuple[int, int]]] = {}
    for r in reactions:
        m = r.migration
        back = r.network_change_us if r.network_change_us is not None else m.blackout_end_us
        frozen.setdefault(m.guest.name, []).append((m.blackout_start_us, back))
        if r.network_change_us is not None and r.quarantine_end_us is not None:
            quarantined.setdefault(m.guest.name, []).append(
                (r.network_change_us, r.quarantine_end_us)
            )
    out: list[Attempt] = []
    for r in reactions:
        m, guest = r.migration, r.migration.guest
        clients = [f"10.{rng.randint(1, 9)}.{rng.randint(0, 254)}.{rng.randint(2, 250)}"]
        clients += [f"10.30.{rng.randint(0, 20)}.{rng.randint(2, 250)}" for _ in range(11)]
        last = max(v for v in (m.end_us, r.network_change_us, r.quarantine_end_us) if v is not None)
        t = m.start_us - 20 * US
        stop = last + round(SAFETY_TIMEOUT_S * US) + 10 * US
        while True:
            t += max(1, round(rng.expovariate(preset.load) * US))
            if t >= stop:
                break
            protocol, port = rng.choice(guest.services)
            remote = rng.choice(clients)
            remote_port = rng.randint(49152, 65535)
            tries = [t] + ([t + round(s * US) for s in TCP_RETRY_S] if protocol == 6 else [])
            for when in tries:
                fate = _fate(when, frozen[guest.name], quarantined.get(guest.name, []))
                out.append(Attempt(guest, when, protocol, port, remote, remote_port, fate, m.id))
                if fate == "allowed":
                    break
    out.sort(key=lambda a: (a.guest.name, a.time_us))
    return tuple(out)


def _clock_jumps(
    guests: tuple[Machine, ...], migrations: tuple[Migration, ...], jump_s: float
) -> tuple[tuple[Machine, ...], tuple[Migration, ...]]:
    """Guests whose clock steps by ``jump_s`` when they resume after each completed migration.

    A time-sync correction on the new host moves the guest clock at once; events
    logged after the resume (the network change first) carry the new time.
    """
    if not jump_s:
        return guests, migrations
    moved = {
        g.name: replace(
            g,
            clock_jump_s=jump_s,
            clock_jumps_us=tuple(
                sorted(
                    m.blackout_end_us
                    for m in migrations
                    if m.guest.name == g.name and m.status == "completed"
                )
            ),
        )
        for g in guests
    }
    return (
        tuple(moved[g.name] for g in guests),
        tuple(replace(m, guest=moved[m.guest.name]) for m in migrations),
    )


def plan_incident(preset: Preset, options: SimulateOptions, rng: random.Random) -> Plan:
    """Decide the whole incident from the resolved preset and the options."""
    hosts, guests = _machines(preset, options, rng)
    begin = to_us(options.start) + round(rng.uniform(600.0, 660.0) * US)
    migrations = _migrations(preset, hosts, guests, begin, rng)
    guests, migrations = _clock_jumps(guests, migrations, options.guest_clock_jump)
    reactions = _reactions(preset, options, migrations, rng)
    attempts = _attempts(preset, migrations, reactions, rng)
    last = max([m.end_us for m in migrations] + [a.time_us for a in attempts] + [begin])
    unrelated = _unrelated_machines(options, to_us(options.start))
    return Plan(
        preset, options, hosts, guests, migrations, reactions, attempts, begin, last + 600 * US,
        unrelated,
    )  # fmt: skip
