"""pfirewall.log (the Windows Firewall text log) -> normalized event rows.

The log is W3C-style text: ``#Version``, ``#Software``, ``#Time Format`` and
``#Fields`` header lines, then one space-separated line per packet. Two things
make it easy to get wrong, so this module owns them:

* Times are **local** with no offset. When the caller knows the guest's zone
  (``tz``: a :class:`~parsers.time_values.Zone`, an IANA name such as
  ``Europe/Berlin`` or a fixed offset such as ``+02:00``) rows are converted to
  UTC here. A local time that does not exist
  (the spring DST gap) cannot be placed and is counted as skipped; the hour the
  autumn change repeats is told apart by the log's order (parsers/wall_clock.py),
  and an issue names the lines nothing tells apart. When it does not (``tz`` None), the
  local times are stored as if they were UTC and every row says so in its payload
  (``"local_zone": "unknown"``), so that whoever learns the zone later (the
  guest's own System log names it) can place them; with a zone, ``local_zone``
  names it.
* Columns vary by build (newer ones append ``pid``), so every line is read by
  the names of the latest ``#Fields`` line, never by position. ``-`` means empty.

The log names no computer: the caller passes one (``--firewall-computer``), or rows
keep none and correlation tells it from where the log lies (pipeline/machines.py,
``unnamed_logs``). Rows get provider ``pfirewall.log`` and event id 1 for DROP,
2 for ALLOW, 0 for anything else, so the event catalog can map them like any
other event; values stay as logged (``TCP``, ``RECEIVE``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from parsers.model import EVENT_SCHEMA, ReadIssue, ReadReport
from parsers.time_values import Zone
from parsers.wall_clock import to_utc, undecided

PROVIDER = "pfirewall.log"
ACTION_IDS = {"DROP": 1, "ALLOW": 2}
LOCAL_ZONE = "local_zone"  # payload key: the zone the row's time was read in
UNKNOWN_ZONE = "unknown"  # ... none given: the time is local, stored as if UTC
_MAX_LINE = 8192


def is_pfirewall(head: bytes) -> bool:
    """Whether the first bytes look like a Windows Firewall log (its header, not its name)."""
    text = head[:512].decode("utf-8", "replace").lstrip("\ufeff")
    return text.startswith("#Version:") and "#Fields:" in text and "Firewall" in text


@dataclass(frozen=True)
class PfirewallSettings:
    """The two facts the log itself does not carry."""

    tz: Zone | None = None  # None: not known yet (rows marked local_zone "unknown")
    computer: str | None = None


def _lines(path: Path, report: ReadReport) -> tuple[list[str], list[dict[str, str]]]:
    """The rows as dicts keyed by the ``#Fields`` names in force, with their line numbers."""
    fields: list[str] = []
    numbers: list[str] = []
    rows: list[dict[str, str]] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if len(raw) > _MAX_LINE:
                report.records_skipped += 1
                report.issues.append(ReadIssue(f"line {number}: longer than {_MAX_LINE} bytes"))
                continue
            line = raw.decode("utf-8", "replace").strip().lstrip("\ufeff")
            if not line:
                continue
            if line.startswith("#"):
                if line.startswith("#Fields:"):
                    fields = line.split(":", 1)[1].split()
                continue
            values = line.split()
            if not fields or len(values) != len(fields):
                report.records_skipped += 1
                report.issues.append(
                    ReadIssue(f"line {number}: {len(values)} values for {len(fields)} fields")
                )
                continue
            rows.append({k: v for k, v in zip(fields, values, strict=True) if v != "-"})
            numbers.append(str(number))
    return numbers, rows


def _repeated_hour_issues(frame: pl.DataFrame, zone: str | None) -> list[ReadIssue]:
    """One issue for the lines (``_line``) marked ``_undecided``: in an hour repeated
    when daylight saving time ended, with nothing in the log to tell which pass
    (parsers/wall_clock.py). Their records are read; only their hour is uncertain."""
    lines = frame.filter(pl.col("_undecided"))["_line"]
    if lines.is_empty():
        return []
    return [
        ReadIssue(
            f"lines {lines.min()}..{lines.max()}: {lines.len()} line(s) fall in the hour "
            f"repeated when daylight saving time ended in {zone}, and nothing in the log "
            "tells which of the two passes: read at the offset before the change (an hour "
            "early if they were written after it)"
        )
    ]


def read_pfirewall(
    path: Path,
    settings: PfirewallSettings,
    source_path: str,
    member: str | None,
    file_sha256: str,
) -> tuple[pl.DataFrame, ReadReport]:
    """All lines of one pfirewall.log as rows of ``EVENT_SCHEMA``, and what could not be read."""
    zone = settings.tz.name if settings.tz is not None else None
    report = ReadReport(engine="pfirewall")
    numbers, rows = _lines(path, report)
    for row in rows:
        row[LOCAL_ZONE] = zone or UNKNOWN_ZONE
    frame = pl.DataFrame(
        {
            "_line": [int(n) for n in numbers],
            "_date": [r.get("date") for r in rows],
            "_time": [r.get("time") for r in rows],
            "_action": [r.get("action", "") for r in rows],
            "data": [json.dumps(r, ensure_ascii=False) for r in rows],
        },
        schema={
            "_line": pl.Int64,
            "_date": pl.String,
            "_time": pl.String,
            "_action": pl.String,
            "data": pl.String,
        },
    )
    local = pl.concat_str("_date", pl.lit(" "), "_time").str.to_datetime(
        "%Y-%m-%d %H:%M:%S", strict=False, time_unit="us"
    )
    frame = frame.with_columns(
        to_utc(local, zone or "UTC").alias("timestamp"),
        undecided(local, zone or "UTC").alias("_undecided"),
    )
    report.issues.extend(_repeated_hour_issues(frame, zone))
    bad = frame.filter(pl.col("timestamp").is_null())
    report.records_skipped += bad.height
    report.issues.extend(
        ReadIssue(f"line {n}: time missing, malformed or not a valid local time in {zone or 'UTC'}")
        for n in bad["_line"].head(100)
    )
    frame = frame.filter(pl.col("timestamp").is_not_null())
    rows_out = frame.select(
        pl.col("timestamp"),
        pl.lit(settings.computer).alias("computer"),
        pl.lit(PROVIDER).alias("channel"),
        pl.lit(PROVIDER).alias("provider"),
        pl.col("_action").replace_strict(ACTION_IDS, default=0).alias("event_id"),
        pl.col("_line").alias("record_id"),
        pl.col("_line").alias("header_record_id"),
        pl.col("data"),
        pl.lit(source_path).alias("source_path"),
        pl.lit(member).alias("member"),
        pl.lit(file_sha256).alias("file_sha256"),
        pl.lit("pfirewall").alias("engine"),
    )
    out = pl.DataFrame(schema=EVENT_SCHEMA).vstack(
        rows_out.with_columns(
            pl.lit(None).alias(c) for c in EVENT_SCHEMA if c not in rows_out.columns
        )
        .select(list(EVENT_SCHEMA))
        .cast(EVENT_SCHEMA)
    )
    report.records = len(rows) + report.records_skipped - bad.height
    report.records_kept = out.height
    if out.height:
        report.first_ts = out["timestamp"].min()
        report.last_ts = out["timestamp"].max()
    return out, report
