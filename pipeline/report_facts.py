"""Machine facts in words, for report.html and report.md (escaping is the caller's).

One function per fact, shared by both formats, so that the HTML table and the
ticket text say the same thing. Values come from the machines table of the
findings document (machine_facts.py); nothing is recomputed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from parsers.time_values import utc_offset_text

UPDATES_SHOWN = 5  # the latest updates listed per machine; machines.csv has them all


def _day(value: object) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d") if isinstance(value, datetime) else "?"


def os_text(m: Mapping[str, Any]) -> str:
    """``Windows Server 2016 Standard, 10.0.14393.2395`` or what is known of it."""
    version = m.get("os_version")
    if version and m.get("os_revision") is not None:
        version = f"{version}.{m['os_revision']}"
    parts = [p for p in (m.get("os_product"), version) if p]
    return ", ".join(parts) if parts else "not logged"


def zone_text(m: Mapping[str, Any]) -> str:
    """The zone as 6013 names it, its standard offset, and the IANA zone it maps to."""
    if m.get("time_zone") is None:
        return "not logged"
    # Windows' bias is minutes to add to local time for UTC: the offset's opposite.
    offset = "UTC" + utc_offset_text(timedelta(minutes=-(m.get("zone_bias_min") or 0)))
    text = f"{m['time_zone']} (standard {offset}"
    text += f", {m['zone_iana']})" if m.get("zone_iana") else ", no known IANA zone)"
    zones = m.get("zones_logged") or []
    if len(zones) > 1:
        text += f"; {len(zones)} zones logged: " + ", ".join(zones)
    return text


def names_text(m: Mapping[str, Any]) -> str:
    """Every name the machine logged, then its renames in order."""
    text = ", ".join(m.get("names") or [m.get("computer") or "?"])
    renames = m.get("renames") or []
    if renames:
        text += "; renamed " + ", ".join(
            f"{r['old']} → {r['new']} ({_day(r['timestamp'])})" for r in renames
        )
    return text


def boot_text(m: Mapping[str, Any]) -> str:
    if m.get("last_boot") is None:
        return "not logged"
    return f"{_day(m['last_boot'])} ({m.get('boots') or 0} boot(s) logged)"


def updates_text(m: Mapping[str, Any]) -> str:
    """The latest Windows updates installed or failed, with their date."""
    updates = m.get("updates") or []
    if not updates:
        return "none logged"
    shown = [f"{u['kb']} {u['status']} {_day(u['timestamp'])}" for u in updates[-UPDATES_SHOWN:]]
    more = len(updates) - len(shown)
    return ", ".join(shown) + (f" (and {more} earlier)" if more else "")
