"""Background events: what every real log holds besides the incident.

The problem: an incident alone in a log is too easy to find; real bundles bury
the migration under service starts, registry flushes, logons and allowed
connections, and a benchmark needs a gigabyte of it. Noise is a Poisson
stream per file at ``--noise`` events per machine per hour, built from a small
pool of prepared payloads per machine (real logs repeat themselves, and
reusing a payload keeps a gigabyte affordable). WFP drops in the noise stay
clear of the quarantine windows, so that every inbound drop inside a window
is one the ground truth lists.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from parsers.evtx_writer import EventSpec, PayloadValue
from pipeline.simulate.events import GuestIds, Item, pfirewall_line, wfp_layout, wfp_values
from pipeline.simulate.layouts import Layout, layout
from pipeline.simulate.plan import EPOCH, US, Machine, from_us

Payload = tuple[tuple[str, PayloadValue], ...]

HOST_SHARE = {"System": 1.0}
GUEST_SHARE = {"Security": 0.6, "System": 0.4}
PADDING_WEIGHT = {("host", "System"): 0.5, ("guest", "System"): 0.5, ("guest", "Security"): 3.0}
"""How ``--size`` shares the bundle among files: Security logs are the big ones in real
bundles (servers keep them at hundreds of MB), System logs stay smaller."""
WINDOW_MARGIN_US = 2 * US
POOL = 48

_SERVICES = (
    ("Windows Modules Installer", "TrustedInstaller"),
    ("Windows Update", "wuauserv"),
    ("Background Intelligent Transfer Service", "BITS"),
    ("WinHTTP Web Proxy Auto-Discovery Service", "WinHttpAutoProxySvc"),
    ("Software Protection", "sppsvc"),
    ("Windows Error Reporting Service", "WerSvc"),
    ("Device Setup Manager", "DsmSvc"),
    ("Network Setup Service", "NetSetupSvc"),
)
_HIVES = (
    r"\SystemRoot\System32\Config\SOFTWARE",
    r"\SystemRoot\System32\Config\SYSTEM",
    r"\SystemRoot\System32\Config\DEFAULT",
    r"\??\C:\Windows\ServiceProfiles\NetworkService\NTUSER.DAT",
    r"\??\C:\Windows\ServiceProfiles\LocalService\NTUSER.DAT",
    r"\??\C:\Windows\AppCompat\Programs\Amcache.hve",
)
_PRIVILEGES = "\r\n\t\t\t".join(
    (
        "SeSecurityPrivilege",
        "SeBackupPrivilege",
        "SeRestorePrivilege",
        "SeTakeOwnershipPrivilege",
        "SeDebugPrivilege",
        "SeSystemEnvironmentPrivilege",
        "SeLoadDriverPrivilege",
        "SeImpersonatePrivilege",
        "SeDelegateSessionUserImpersonatePrivilege",
    )
)
_ACCOUNTS = ("svc_backup", "svc_monitor", "adm.jsmith", "svc_sql", "adm.mkumar", "scom_action")
_MULTICAST = (("224.0.0.252", 5355), ("239.255.255.250", 1900), ("224.0.0.251", 5353))


@dataclass(frozen=True)
class Variant:
    """One prepared background event: its layout, payload and the process that logs it."""

    layout: Layout
    payload: Payload
    pid: int
    sid: str | None
    avoid_windows: bool = False

    def template(self, computer: str) -> EventSpec:
        """The event as this machine logs it, at an arbitrary time (see :func:`restamp`)."""
        return self.layout.build(EPOCH, computer, self.payload, pid=self.pid, sid=self.sid)


def restamp(template: EventSpec, when: datetime, tid: int) -> EventSpec:
    """A copy of ``template`` at another time and thread.

    Skips the frozen dataclass's ``__init__`` (17 checked assignments), which
    was the largest cost of a padding event outside the writer; the result is
    equal to ``dataclasses.replace(template, timestamp=when, thread_id=tid)``.
    """
    spec = object.__new__(EventSpec)
    spec.__dict__.update(template.__dict__, timestamp=when, thread_id=tid)
    return spec


def _system_variants(rng: random.Random) -> list[Variant]:
    scm, kernel = layout("scm.service_state"), layout("kernel.hive_flushed")
    scm_pid = rng.randrange(600, 800, 4)
    out = []
    for _ in range(POOL):
        display, key = rng.choice(_SERVICES)
        state = rng.choice(("running", "stopped"))
        binary = (key + "/" + ("4" if state == "running" else "1")).encode("utf-16-le") + b"\0\0"
        out.append(Variant(scm, scm.payload((display, state, binary)), scm_pid, None))
        hive = rng.choice(_HIVES)
        values = (len(hive), hive, rng.randint(1, 40), rng.randint(1, 60))
        out.append(Variant(kernel, kernel.payload(values), 4, "S-1-5-18"))
    return out


def _security_variants(guest: Machine, ids: GuestIds, rng: random.Random) -> list[Variant]:
    domain = "CORP"
    lsass = rng.randrange(600, 700, 4)
    out: list[Variant] = []
    logon, priv, logoff = (
        layout("security.logon"),
        layout("security.special_privileges"),
        layout("security.logoff"),
    )
    for _ in range(POOL):
        account = rng.choice(_ACCOUNTS)
        user_sid = f"S-1-5-21-3623811015-3361044348-30300820-{rng.randint(1100, 1900)}"
        logon_id = rng.getrandbits(32)
        client = f"10.30.{rng.randint(0, 20)}.{rng.randint(2, 250)}"
        values = (
            "S-1-0-0", "-", "-", 0, user_sid, account, domain, logon_id, 3, "Kerberos",
            "Kerberos", "-", uuid.UUID(int=rng.getrandbits(128)), "-", "-", 0, 0, "-", client,
            str(rng.randint(49152, 65535)), "%%1833", "-", "-", "-", "%%1843", 0, "%%1842",
        )  # fmt: skip
        out.append(Variant(logon, logon.payload(values), lsass, None))
        subject = (user_sid, account, domain, logon_id)
        out.append(Variant(priv, priv.payload((*subject, _PRIVILEGES)), lsass, None))
        out.append(Variant(logoff, logoff.payload((*subject, 3)), lsass, None))
        if not guest.wfp_auditing:
            continue
        allowed = wfp_layout(guest, 5156)
        remote_port = rng.choice((53, 443, 88, 389, 135))
        values = wfp_values(
            guest, ids, packet=False, inbound=False, remote=f"10.20.0.{rng.randint(2, 9)}",
            remote_port=remote_port, local_port=rng.randint(49152, 65535),
            protocol=17 if remote_port == 53 else 6, filter_rtid=71950, origin="Default Outbound",
        )  # fmt: skip
        if guest.wfp_audit == "full":  # 5156 is a success audit: not logged failure-only
            out.append(Variant(allowed, allowed.payload(values), 4, None))
            out.append(Variant(allowed, allowed.payload(values), 4, None))
        group, port = rng.choice(_MULTICAST)
        dropped = wfp_layout(guest, 5152)
        values = wfp_values(
            guest, ids, packet=True, inbound=True,
            remote=f"10.20.{rng.randint(1, 3)}.{rng.randint(2, 250)}",
            remote_port=port, local_port=port, protocol=17, filter_rtid=66990,
            origin="WSH Default", local_address=group,
        )  # fmt: skip
        out.append(Variant(dropped, dropped.payload(values), 4, None, avoid_windows=True))
    return out


def variants(
    machine: Machine, channel: str, ids: GuestIds | None, rng: random.Random
) -> list[Variant]:
    """The prepared background events of one of the machine's files (empty: no noise)."""
    if channel == "System":
        return _system_variants(rng)
    if channel == "Security" and ids is not None:
        return _security_variants(machine, ids, rng)
    return []


def stream(
    machine: Machine,
    pool: list[Variant],
    rate_per_hour: float,
    begin_us: int,
    end_us: int,
    windows: list[tuple[int, int]],
    rng: random.Random,
    seq_base: int,
) -> Iterator[Item]:
    """Poisson background events between ``begin_us`` and ``end_us`` of the machine's
    logs' order (:meth:`~pipeline.simulate.plan.Machine.order_us`), each stamped with
    what the machine's clock showed then.

    ``windows`` (machine clock) are the quarantine windows: variants marked
    ``avoid_windows`` are not emitted near them, on either side of a step back that
    makes the clock show the window's times twice.
    """
    if not pool or rate_per_hour <= 0:
        return
    mean_gap = 3600.0 * US / rate_per_hour
    guard = [(a - WINDOW_MARGIN_US, b + WINDOW_MARGIN_US) for a, b in windows]
    n = len(pool)
    t = float(begin_us)
    seq = seq_base
    templates = [v.template(machine.name) for v in pool]
    random_ = rng.random
    expo = rng.expovariate
    reading = machine.reading_at if machine.steps_back else None
    while True:
        t += expo(1.0) * mean_gap
        if t >= end_us:
            return
        pick = int(random_() * n)
        ti = int(t)
        shown = ti if reading is None else reading(ti)
        if pool[pick].avoid_windows and any(a <= shown < b for a, b in guard):
            continue
        seq += 1
        tid = 200 + 4 * int(random_() * 2000)
        yield (ti, seq, restamp(templates[pick], from_us(shown), tid), None)


def pfirewall_noise(
    guest: Machine, rate_per_hour: float, begin_us: int, end_us: int, rng: random.Random
) -> Iterator[tuple[int, str]]:
    """Background pfirewall.log lines (outbound connections allowed) as (order, line):
    between ``begin_us`` and ``end_us`` of the guest's logs' order, each line in what
    its clock showed."""
    if rate_per_hour <= 0:
        return
    mean_gap = 3600.0 * US / rate_per_hour
    t = float(begin_us)
    while True:
        t += rng.expovariate(1.0) * mean_gap
        if t >= end_us:
            return
        remote_port = rng.choice((53, 443, 88, 389))
        order = int(t)
        yield order, pfirewall_line(
            guest, guest.reading_at(order), action="ALLOW",
            protocol=17 if remote_port == 53 else 6,
            remote=f"10.20.0.{rng.randint(2, 9)}", remote_port=remote_port,
            local_port=rng.randint(49152, 65535), inbound=False,
        )  # fmt: skip
