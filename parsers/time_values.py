"""Times, durations and time zones as people write them: one grammar for each.

Every option that takes a zone (``--guest-tz``, ``--tz``, the simulator's), a
duration (``--window``, ``--clock-offset``) or a time (``--since``, ``--around``,
``--start``) parses it here, so that what one command accepts every command
accepts, and the error names the option and shows a form that works. It lives in
``parsers/`` because that is the layer both the investigation and the simulator
import, and the pfirewall.log reader needs the zone itself. The grammar is
documented once, in docs/time.md.

No polars here at import time: option errors must come back in a tenth of a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from datetime import tzinfo as TzInfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from parsers.errors import LmtraceError

if TYPE_CHECKING:
    import polars as pl

MAX_OFFSET = timedelta(hours=14)
"""The farthest any real zone is from UTC (Pacific/Kiritimati, UTC+14)."""


class TimeValueError(LmtraceError):
    """An option's time, duration or time zone is not in the grammar (docs/time.md)."""


# ----- time zones


@dataclass(frozen=True)
class Zone:
    """A time zone: ``UTC``, an IANA name (``Europe/Berlin``) or a fixed offset (``+05:30``).

    ``name`` is canonical (offsets as ``+hh:mm``) and is what polars accepts as a
    time zone, so it is also what stores and case files record.
    """

    name: str
    tzinfo: TzInfo

    @property
    def is_utc(self) -> bool:
        return self.name == "UTC"

    def local(self, expr: pl.Expr) -> pl.Expr:
        """A UTC time column as naive wall-clock time in this zone."""
        import polars as pl

        if isinstance(self.tzinfo, ZoneInfo):
            return expr.dt.convert_time_zone(self.name).dt.replace_time_zone(None)
        offset = self.tzinfo.utcoffset(None) or timedelta(0)
        return (expr + pl.duration(seconds=offset.total_seconds())).dt.replace_time_zone(None)

    def to_local(self, value: datetime) -> datetime:
        """An aware time as naive wall-clock time in this zone."""
        return value.astimezone(self.tzinfo).replace(tzinfo=None)

    def label(self, at: datetime) -> str:
        """'UTC', 'UTC+05:30' or 'Europe/Berlin, UTC+01:00' (the offset in force at ``at``)."""
        if self.is_utc:
            return "UTC"
        text = "UTC" + utc_offset_text(at.astimezone(self.tzinfo).utcoffset() or timedelta(0))
        return text if self.name == text[3:] else f"{self.name}, {text}"


UTC = Zone("UTC", timezone.utc)

_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


def utc_offset_text(offset: timedelta) -> str:
    """A UTC offset as ``+hh:mm`` / ``-hh:mm``."""
    minutes = round(offset.total_seconds() / 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def parse_zone(text: str, option: str = "time zone") -> Zone:
    """``UTC``/``Z``, an IANA name, or an offset (``+2``, ``+02:00``, ``-0330``, ``UTC+5:30``)."""
    value = text.strip()
    if value.upper() in ("UTC", "Z", "GMT"):
        return UTC
    if match := _OFFSET.match(value):
        sign, hours, minutes = match[1], int(match[2]), int(match[3] or 0)
        delta = timedelta(hours=hours, minutes=minutes)
        if minutes >= 60 or delta > MAX_OFFSET:
            raise TimeValueError(
                f"{option}: {text!r} is not a UTC offset (at most 14 hours, minutes below 60)"
            )
        delta = delta if sign == "+" else -delta
        return Zone(utc_offset_text(delta), timezone(delta))
    try:
        return Zone(value, ZoneInfo(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise TimeValueError(
            f"{option}: {text!r} is not a time zone; give UTC, an IANA name such as"
            " Europe/Berlin, or an offset such as +02:00"
        ) from None


# ----- durations

_UNIT_S = {"h": 3600.0, "min": 60.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = r"(\d+(?:\.\d+)?)\s*(ms|min|h|m|s)"
_DURATION = re.compile(rf"^([+-])?\s*((?:{_PART}\s*)+|\d+(?:\.\d+)?)$")
_PARTS = re.compile(_PART)


def parse_duration(
    text: str, option: str = "duration", *, signed: bool = False, zero: bool = False
) -> float:
    """Seconds from ``30s``, ``500ms``, ``2m``, ``1.5h``, ``1m30s`` or a bare number of seconds,
    with an optional leading ``+``/``-``.

    ``signed`` admits any sign (a clock offset); otherwise the duration must be positive
    (a window), or, with ``zero``, may also be nought (a tolerance). A negative or zero
    value where it is not allowed is a duration all the same, and the error says what
    the option needs rather than that it is no duration.
    """
    match = _DURATION.match(text.strip().lower())
    example = "+3.2s, -1500ms or -1m30s" if signed else "30s, 500ms, 2m or 1m30s"
    if not match:
        raise TimeValueError(f"{option}: {text!r} is not a duration such as {example}")
    body = match[2]
    parts = _PARTS.findall(body)
    seconds = sum(float(n) * _UNIT_S[unit] for n, unit in parts) if parts else float(body)
    if signed:
        return -seconds if match[1] == "-" else seconds
    if (match[1] == "-" and seconds > 0) or (seconds == 0 and not zero):
        least = "0 or more" if zero else "positive"
        raise TimeValueError(f"{option}: {text!r} must be {least}, such as {example}")
    return seconds


# ----- points in time


def parse_utc(text: str, option: str = "time") -> datetime:
    """An ISO 8601 time as an aware UTC datetime; a time without an offset is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TimeValueError(
            f"{option}: {text!r} is not an ISO 8601 time "
            "(e.g. 2024-05-01T10:00:00Z or 2024-05-01 10:00; times without an offset are UTC)"
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
