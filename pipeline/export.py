"""Exports of a store for other tools: Timesketch JSONL and CSV, streamed.

The problem: an engineer wants every event of a case in Timesketch (or a
spreadsheet) next to other evidence, and a store can hold millions of events.
Both formats are written one store part at a time (a part holds at most one
ingest batch), so memory holds one part, not the store, and rows come out in
store order (Timesketch sorts on import). polars' streaming sinks were measured
and rejected here: on a 900,000-event store they peaked at about twice the
memory of part-by-part writing (457 MB against 203 MB), and grew with the store.

Timesketch's JSONL import needs ``message``, ``datetime`` (ISO 8601) and
``timestamp_desc`` on every line; ``timestamp`` (microseconds since the epoch)
lets it skip parsing. Every other column is a searchable field. CSV carries the
same columns; a text cell that a spreadsheet would run as a formula (starting
with ``=``, ``+``, ``@``, a tab or a carriage return) gets a leading ``'``, and
control characters show escaped (pipeline/printable.py); the JSON lines keep
every value exact, with JSON escapes for the controls JSON would leave raw.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import polars as pl

from parsers.model import EVENT_SCHEMA, LmtraceError
from pipeline.printable import printable_frame, printable_json
from pipeline.store import EventFilter, open_store


class ExportFormat(str, Enum):
    timesketch = "timesketch"
    csv = "csv"


class ExportError(LmtraceError):
    """An export target the user can fix."""


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    rows: int
    fmt: ExportFormat
    without_time: int  # events left out: Timesketch cannot place an event without a time


FIELDS = (
    "computer",
    "channel",
    "provider",
    "event_id",
    "record_id",
    "level",
    "user_sid",
    "data",
    "source_path",
    "member",
    "file_sha256",
    "engine",
)
TEXT_FIELDS = ("message", "computer", "channel", "provider", "user_sid", "data", "source_path")
FORMULA_START = r"^[=+@\t\r]"


def timesketch_rows(events: pl.LazyFrame) -> pl.LazyFrame:
    """Events as Timesketch rows: message, datetime, timestamp_desc, timestamp, fields."""
    return events.select(
        pl.format(
            "[{} {}] {} {}: {}",
            pl.col("provider").fill_null("?"),
            pl.col("event_id").cast(pl.String).fill_null("?"),
            pl.col("computer").fill_null("?"),
            pl.col("channel").fill_null("?"),
            pl.col("data").fill_null("{}"),
        ).alias("message"),
        pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").alias("datetime"),
        pl.when(pl.col("engine") == "pfirewall")
        .then(pl.lit("Firewall Log Time"))
        .otherwise(pl.lit("Event Recorded"))
        .alias("timestamp_desc"),
        pl.col("timestamp").dt.epoch("us").alias("timestamp"),
        *FIELDS,
    )


def _formula_safe(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(pl.col(c).str.contains(FORMULA_START))
        .then(pl.lit("'") + pl.col(c))
        .otherwise(pl.col(c))
        .alias(c)
        for c in TEXT_FIELDS
    )


def _event_parts(store: Path) -> list[Path]:
    """The store's event parts, in the layout store.py documents (events/*.parquet)."""
    return sorted((store / "events").glob("*.parquet"))


def export_store(
    store: Path, fmt: ExportFormat, out: Path, filters: EventFilter | None = None
) -> ExportSummary:
    """Write the store's events (those with a time) to ``out`` as Timesketch JSONL or CSV."""
    store = open_store(store)
    out = Path(out)
    if out.resolve().is_relative_to(store.resolve()):
        raise ExportError(f"{out}: write the export outside the store folder {store}")
    if not out.parent.is_dir():
        raise ExportError(f"{out}: the folder {out.parent} does not exist")
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; give a file name")
    rows = without_time = 0
    with out.open("wb") as sink:
        if fmt is ExportFormat.csv:  # the header, even for an empty store
            timesketch_rows(pl.LazyFrame(schema=EVENT_SCHEMA)).collect().write_csv(sink)
        for part in _event_parts(store):
            events = pl.scan_parquet(part, schema=EVENT_SCHEMA)
            if filters is not None:
                events = events.filter(filters.expr())
            frame = timesketch_rows(events).collect()
            timed = frame.filter(pl.col("datetime").is_not_null())
            without_time += frame.height - timed.height
            rows += timed.height
            if fmt is ExportFormat.csv:
                text = printable_frame(_formula_safe(timed)).write_csv(include_header=False)
            else:
                text = printable_json(timed.write_ndjson())
            sink.write(text.encode("utf-8"))
    return ExportSummary(out, rows, fmt, without_time)
