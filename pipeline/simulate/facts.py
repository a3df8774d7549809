"""What each simulated machine's System log says about it: boots, OS, zone, updates,
renames and clock steps, in the layouts of the real samples (layouts.py).

The problem: lmtrace reads a machine's OS, zone, updates and names from its own
System log (pipeline/machine_facts.py); a simulated bundle must carry those events
the way Windows logs them for the scenarios that depend on them to be tested end to
end: a guest on Windows Server 2019, a patched host without the registry value, a
renamed guest, a pfirewall.log whose zone only EventLog 6013 names.

This module knows Windows zone names for the zones the simulator accepts (its own
small table, from CLDR's windowsZones.xml, so that the simulator shares no code with
the analysis it tests) and the OS strings a 6013 carries.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from parsers.evtx_writer import EventSpec
from pipeline.simulate.layouts import layout
from pipeline.simulate.plan import US, Machine, SimulateError, from_us

# IANA zone -> the Windows zone's standard name, as an English 6013 logs it (CLDR 001).
WINDOWS_ZONES = {
    "UTC": "Coordinated Universal Time",
    "Etc/UTC": "Coordinated Universal Time",
    "Europe/Berlin": "W. Europe Standard Time",
    "Europe/Paris": "Romance Standard Time",
    "Europe/London": "GMT Standard Time",
    "America/New_York": "Eastern Standard Time",
    "America/Chicago": "Central Standard Time",
    "America/Denver": "Mountain Standard Time",
    "America/Los_Angeles": "Pacific Standard Time",
    "Asia/Tokyo": "Tokyo Standard Time",
    "Asia/Kolkata": "India Standard Time",
    "Australia/Sydney": "AUS Eastern Standard Time",
}

# Product, "version Build build", build lab: what 6013's Binary strings say per OS. The build
# lab is in 6013's form, build.branch.yymmdd-hhmm (velociraptor RDPAuth_System:
# '14393.rs1_release.161220-1747'; tugix456: '19041.vb_release.191206-1406').
OS_STRINGS = {
    "2012r2": (
        "Windows Server 2012 R2 Datacenter",
        "6.3.9600 Build 9600",
        "9600.winblue_r4.141028-1500",
    ),
    "2016": (
        "Windows Server 2016 Datacenter",
        "10.0.14393 Build 14393",
        "14393.rs1_release.160715-1616",
    ),
    "2019": (
        "Windows Server 2019 Datacenter",
        "10.0.17763 Build 17763",
        "17763.rs5_release.180914-1434",
    ),
    "2022": (
        "Windows Server 2022 Datacenter",
        "10.0.20348 Build 20348",
        "20348.fe_release.210507-1500",
    ),
}
FIX_TITLE = "2018-07 Cumulative Update for Windows Server 2016 for x64-based Systems (KB4338822)"
TIME_SYNC = r"\Device\HarddiskVolume2\Windows\System32\svchost.exe"  # hosts vmictimesync


def check_zone(zone: str) -> None:
    """SimulateError unless 6013 can name ``zone`` (a Windows zone the table knows)."""
    if zone not in WINDOWS_ZONES:
        raise SimulateError(
            f"--guest-tz {zone!r}: the simulator writes the zone into EventLog 6013 and knows"
            f" the Windows names of {', '.join(sorted(WINDOWS_ZONES))}"
        )


def standard_bias(zone: str) -> int:
    """Windows' standard bias of an IANA zone in minutes (UTC = local + bias)."""
    info = ZoneInfo(zone)
    for month in (1, 7):  # the month without daylight-saving time
        at = datetime(2025, month, 1, tzinfo=info)
        if not at.dst():
            offset = at.utcoffset() or timedelta(0)
            return -round(offset.total_seconds() / 60)
    raise ValueError(zone)  # pragma: no cover - every zone has a standard half-year


def _binary(os_key: str, computer: str) -> bytes:
    """6013's Binary: NUL-separated UTF-16LE strings in the order the samples show."""
    product, version, lab = OS_STRINGS[os_key]
    strings = ["1.1", "0", product, f"{version}  ", "Multiprocessor Free", lab, "5fb8f766"]
    strings += ["Not Available", "Not Available", "9", "2", "3072", "409", computer, ""]
    return "\x00".join(strings).encode("utf-16-le") + b"\x00\x00"


def _boot(machine: Machine, name: str, t: int, uptime_s: int) -> list[tuple[int, EventSpec]]:
    """6009 and 6013 as a boot logs them, at machine clock ``t``."""
    version = OS_STRINGS[machine.os_key][1]
    major_minor = version.split(".")[0] + "." + version.split(".")[1].zfill(2) + "."
    build = version.split()[0].split(".")[2]
    zone = f"{standard_bias(machine.time_zone)} {WINDOWS_ZONES[machine.time_zone]}"
    return [
        (t, layout("eventlog.os_version").event(
            from_us(t), name, (major_minor, build, "", "Multiprocessor Free", "0", None),
            pid=0, tid=0)),
        (t, layout("eventlog.uptime").event(
            from_us(t), name,
            ("", "", "", "", str(uptime_s), "60", zone, _binary(machine.os_key, name)),
            pid=0, tid=0)),
    ]  # fmt: skip


def system_facts(
    machine: Machine, first_boot: int, host_update: bool, rng: random.Random
) -> list[tuple[int, EventSpec]]:
    """The machine's boots (renamed guests boot twice), host updates and clock steps, as
    (place in the log's order, event): see :meth:`Machine.order_us`.

    ``first_boot`` is on the machine's own clock, before any step. A host of a patched
    scenario installs KB4338822 and restarts before the first boot here. A renamed guest
    boots under its former name, is renamed, and boots again 10 minutes later logging
    6011. A guest whose clock steps on resume logs Kernel-General 1 at each step (the
    time-sync service), stamped with the new time and written where the step happened:
    after everything logged before it, however far back the clock went.
    """
    out: list[tuple[int, EventSpec]] = []
    if machine.role == "host" and host_update:
        at = first_boot - 20 * 60 * US
        values = (FIX_TITLE, uuid.UUID(int=rng.getrandbits(128)), 200, uuid.UUID(int=1))
        out.append((at, layout("wuc.installed").event(from_us(at), machine.name, values)))
    if machine.former_name:
        out += _boot(machine, machine.former_name, first_boot, 11)
        again = first_boot + 10 * 60 * US
        out.append(
            (again, layout("eventlog.renamed").event(
                from_us(again), machine.name, (machine.former_name, machine.name, None),
                pid=0, tid=0))
        )  # fmt: skip
        out += _boot(machine, machine.name, again, 12)
    else:
        out += _boot(machine, machine.name, first_boot, 11)
    for at in machine.clock_jumps_us:
        new = machine.guest_us(at)
        old = new - round(machine.clock_jump_s * US)
        values = (from_us(new), from_us(old), 1, TIME_SYNC, rng.randrange(800, 2000, 4))
        spec = layout("kernel.time_changed").event(from_us(new), machine.name, values, pid=4)
        out.append((machine.order_us(at), spec))
    return sorted(out, key=lambda item: item[0])


def as_former(
    items: list[tuple[int, EventSpec]], machine: Machine, until: int
) -> list[tuple[int, EventSpec]]:
    """``items`` with the machine's former name on those logged before ``until`` (its rename)."""
    if not machine.former_name:
        return items
    return [
        (t, replace(spec, computer=machine.former_name) if t < until else spec) for t, spec in items
    ]
