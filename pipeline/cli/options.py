"""The command-line options that several lmtrace commands share, and what they turn into.

Most commands select events, read bundles or correlate a store. Declaring each option
once here keeps its name, help text and default identical in every command that takes
it, and keeps pipeline/cli/commands.py to the commands themselves. The builders turn the raw
option values into the library's settings (EventFilter, CorrelateSettings, Limits), so
that every command parses them the same way; they load the library when called, so
that a help page loads only typer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from parsers.engines import Engine
from parsers.time_values import Zone, parse_duration, parse_utc, parse_zone
from pipeline.limits import Limits

if TYPE_CHECKING:
    from parsers.model import EventFilter
    from pipeline.correlate import CorrelateSettings


class EventsFormat(str, Enum):
    table = "table"
    csv = "csv"
    jsonl = "jsonl"


class FilesFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class ExportFormatName(str, Enum):
    """pipeline.export.ExportFormat's choices, for help pages that must not load the
    export code (polars, the catalog) to list them."""

    timesketch = "timesketch"
    csv = "csv"


# ----- where a command writes (for error messages)

TARGET = "lmtrace.target"
"""Key in click's shared context ``meta``: the path a command writes to."""
SOURCE = "lmtrace.source"
"""Key in click's shared context ``meta``: the store (or analysis folder) a command reads."""


def remember_target(ctx: typer.Context, value: Path | None) -> Path | None:
    """Option callback: remember the path a command writes to, so that an
    operating-system error the system did not attach a file name to (a full disk hit
    by a polars write, Python's ``write``) is still reported with its path."""
    if value is not None:
        _utf8_name(value, "writes only into paths whose names are valid UTF-8; choose another")
        ctx.meta[TARGET] = value
    return value


def remember_source(ctx: typer.Context, value: Path | None) -> Path | None:
    """Argument callback: remember the store a command reads (named in an OS error when
    the command writes nothing else, or its target is not known)."""
    if value is not None:
        _utf8_name(value, "reads stores only at paths whose names are valid UTF-8; rename it")
        ctx.meta[SOURCE] = value
    return value


def _utf8_name(path: Path, refusal: str) -> None:
    """Refuse a store or output path whose name holds bytes that are not UTF-8: its name
    goes into the tables, pages and polars' file lists, which take UTF-8 only. (Input
    logs may have any name: they are data, kept escaped, pipeline/names.py.)"""
    from parsers.errors import LmtraceError
    from pipeline.names import escaped_name, has_undecodable

    if has_undecodable(str(path)):
        raise LmtraceError(f"{escaped_name(str(path))}: lmtrace {refusal}")


# ----- hostile archives (ingest, analyze)

MaxRatio = Annotated[
    float,
    typer.Option(help="Refuse archive members that inflate more than this (zip bombs)."),
]
MaxExtractGib = Annotated[
    float,
    typer.Option(help="Refuse to extract more than this many GiB from archives in total."),
]
MinFreeGib = Annotated[
    float,
    typer.Option(
        help="Refuse to extract an archive member that would leave less than this many GiB "
        "free on the disk of --out."
    ),
]


def archive_limits(max_ratio: float, max_extract_gib: float, min_free_gib: float) -> Limits:
    """The archive options as the Limits discover enforces."""
    return Limits(
        max_ratio=max_ratio,
        max_total_bytes=int(max_extract_gib * (1 << 30)),
        min_free_bytes=int(min_free_gib * (1 << 30)),
    )


# ----- selecting events (ingest, events, export)

EventIds = Annotated[
    list[int] | None,
    typer.Option(
        "--event-id",
        help="Keep only this event id; repeat for several (--event-id 14 --event-id 5152).",
    ),
]
Channels = Annotated[
    list[str] | None,
    typer.Option(
        "--channel",
        help="Keep only this channel, e.g. System or Security; case-insensitive; repeatable.",
    ),
]
Providers = Annotated[
    list[str] | None,
    typer.Option(
        "--provider",
        help="Keep only this provider, e.g. Microsoft-Windows-Hyper-V-Netvsc; "
        "case-insensitive; repeatable.",
    ),
]


def parsed_as(parse: Callable[..., object], option: str, **how: bool) -> Callable[[str], object]:
    """An option's parser from parsers/time_values.py, its errors naming ``option``
    (``how``: the parser's keywords, e.g. ``signed=True`` for a clock offset)."""
    return lambda text: parse(text, option, **how)


Since = Annotated[
    datetime | None,
    typer.Option(
        parser=parsed_as(parse_utc, "--since"),
        metavar="TIME",
        help="Keep events at or after this ISO 8601 time, e.g. 2024-05-01T10:00:00Z. "
        "A time without an offset is UTC.",
    ),
]
Until = Annotated[
    datetime | None,
    typer.Option(
        parser=parsed_as(parse_utc, "--until"),
        metavar="TIME",
        help="Keep events at or before this ISO 8601 time (inclusive). "
        "A time without an offset is UTC.",
    ),
]

# ----- stores, decoding and time zones

StorePath = Annotated[
    Path,
    typer.Argument(
        help="A store folder (lmtrace ingest --out) or an analysis folder (lmtrace analyze "
        "--out), whose store is read.",
        callback=remember_source,
        readable=False,  # said as an operating-system error naming the file
    ),
]
EngineOption = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="EVTX decoder: rust (pyevtx-rs, fast) or python (python-evtx, slow; for "
        "cross-checks).",
    ),
]
Jobs = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Reading processes, one file each (default: one per CPU for inputs of 128 MiB "
        "or more; smaller inputs are read in this process, sooner than processes start).",
        show_default=False,
    ),
]
DisplayTz = Annotated[
    Zone,
    typer.Option(
        "--tz",
        parser=parsed_as(parse_zone, "--tz"),
        metavar="ZONE",
        help="Zone of the times the timeline shows: UTC, an IANA name (Europe/Berlin) or "
        "an offset (+05:30); the axis names it. Data and reports stay in UTC.",
    ),
]
GuestTz = Annotated[
    Zone | None,
    typer.Option(
        "--guest-tz",
        "--firewall-tz",
        parser=parsed_as(parse_zone, "--guest-tz"),
        metavar="ZONE",
        help="Time zone of pfirewall.log times, which are local and carry no offset: "
        "an IANA name (Europe/Berlin) or an offset (+02:00). Default: the zone the guest's "
        "own System log names (EventLog 6013), said on stderr; UTC when it names none.",
        show_default=False,
    ),
]
FirewallComputer = Annotated[
    str | None,
    typer.Option(
        "--firewall-computer",
        help="Computer name for pfirewall.log rows (the log does not name it). Default: the "
        "computer its file or folder name names, else the one whose logs lie beside it; "
        "where several fit, its rows are no machine's and a note says so.",
        show_default=False,
    ),
]
Window = Annotated[
    float,
    typer.Option(
        parser=parsed_as(parse_duration, "--window"),
        metavar="DURATION",
        help="How much to show either side of --around: 30s, 2m, 500ms, 1m30s.",
    ),
]

# ----- correlation: what the user knows that the logs do not say

Hosts = Annotated[
    list[str] | None,
    typer.Option(
        "--host", help="Treat this computer as a Hyper-V host whatever it logged; repeatable."
    ),
]
Guests = Annotated[
    list[str] | None,
    typer.Option("--guest", help="Treat this computer as a guest whatever it logged; repeatable."),
]
MapFile = Annotated[
    Path | None,
    typer.Option(
        "--map",
        help="CSV file of 'VM name or VMID,guest host name' lines, for guests whose host name "
        "differs from the VM name (otherwise matched by name, then by timing).",
    ),
]
ClockOffsets = Annotated[
    list[str] | None,
    typer.Option(
        "--clock-offset",
        help="GUEST=+3.2s: the guest clock minus the host clock, when known; replaces the "
        "estimate from Netvsc 14 timing. Clock steps the guest logged itself (Kernel-General "
        "1) are added from each step on. GUEST may be any name it had (FQDN, or before a "
        "rename). Repeatable.",
    ),
]
Tolerance = Annotated[
    float | None,
    typer.Option(
        parser=parsed_as(parse_duration, "--tolerance", zero=True),
        metavar="DURATION",
        help="Slack when lining up guest and host events after the clock offset: 3s, 500ms "
        "(default: the catalog's, 3 s).",
        show_default=False,
    ),
]
Catalogs = Annotated[
    list[Path] | None,
    typer.Option(
        "--catalog",
        help="A TOML file that adds or replaces event catalog entries (same form as the "
        "shipped pipeline/catalog.toml), e.g. another field name on your build; repeatable.",
    ),
]
OutFolder = Annotated[
    Path,
    typer.Option(
        "--out", "-o", help="Folder for the findings; created if needed.", callback=remember_target
    ),
]

Password = Annotated[
    str | None,
    typer.Option(
        "--password",
        envvar="LMTRACE_ARCHIVE_PASSWORD",
        help="Password of encrypted .zip and .7z archives in the inputs (the environment "
        "variable keeps it out of the shell history). Never written to any output or log.",
        show_default=False,
    ),
]
Excel = Annotated[
    bool,
    typer.Option(
        "--excel",
        help="Write the CSV files as Excel and Timeline Explorer read them: UTF-8 with a "
        "byte-order mark, times as yyyy-mm-dd hh:mm:ss.ffffff (UTC).",
    ),
]

# ----- what a long run prints at the end (ingest, batch)

JsonSummary = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")]


def event_filter(
    event_id: list[int] | None,
    channel: list[str] | None,
    provider: list[str] | None,
    since: datetime | None,
    until: datetime | None,
) -> EventFilter:
    """The selection options as a store filter; an unset option selects everything."""
    from parsers.model import EventFilter

    return EventFilter(
        frozenset(event_id) if event_id else None,
        frozenset(channel) if channel else None,
        frozenset(provider) if provider else None,
        since,
        until,
    )


def correlate_settings(
    host: list[str] | None,
    guest: list[str] | None,
    map_file: Path | None,
    clock_offset: list[str] | None,
    tolerance: float | None,
) -> CorrelateSettings:
    """The correlation options as settings; reads --map and parses --clock-offset now,
    so that a bad file or offset fails before any work starts."""
    from pipeline.correlate import CorrelateSettings
    from pipeline.matching import MatchSettings, parse_clock_offset, read_mapping

    return CorrelateSettings(
        hosts=tuple(host or ()),
        guests=tuple(guest or ()),
        match=MatchSettings(
            mapping=read_mapping(map_file) if map_file else {},
            clock_offsets=dict(parse_clock_offset(o) for o in clock_offset or ()),
            tolerance_s=tolerance,
        ),
    )
