"""Exports of a case for other tools: Timesketch JSONL and CSV, streamed.

The problem: an engineer wants every event of a case in Timesketch (or a
spreadsheet, or Timeline Explorer) next to other evidence, with lmtrace's analysis
on the same time axis, and a store can hold millions of events. Both formats are
written one store part at a time (a part holds at most one ingest batch), so memory
holds one part, not the store; Timesketch sorts on import. polars' streaming sinks
were measured and rejected here: on a 900,000-event store they peaked at about twice
the memory of part-by-part writing (457 MB against 203 MB), and grew with the store.

What a row holds is pipeline/export_rows.py's business. Timesketch's JSONL import
needs ``message``, ``datetime`` (ISO 8601) and ``timestamp_desc`` on every line
(timesketch/lib/utils.py, read_and_validate_jsonl); ``timestamp`` (microseconds)
spares it the parsing; ``tag`` is a list of strings. A JSONL line carries only the
fields its event has. The CSV has fixed columns (the payload stays one JSON cell)
and goes through pipeline/csv_tables.py: formula-safe, control characters shown
escaped, one time format, ``--excel``; the JSON lines keep every value exact, with JSON
escapes for the controls JSON would leave raw (pipeline/printable.py).
When the store is an analysis folder's (``OUT`` or ``OUT/store``), the analysis is
exported too: its migrations and quarantine windows as events, its evidence tagged,
and pfirewall.log local times that ingest could not place (no ``--guest-tz``) placed in
the zone the analysis took from the guest's own System log (pipeline/firewall_zone.py),
so that they sit where the report and the blocked table put them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import BinaryIO

import polars as pl

from parsers.model import EVENT_SCHEMA, EventFilter, LmtraceError
from pipeline import firewall_zone
from pipeline.analyze import OPTIONS_FILE, STORE_FOLDER, load_correlation_options
from pipeline.catalog import load_catalog
from pipeline.csv_tables import BOM, ISO_UTC, csv_frame
from pipeline.export_rows import (
    EVENT_KEY,
    HEAD,
    OWN_FIELDS,
    PLASO,
    analysis_rows,
    computers_of_unnamed,
    event_rows,
    tags,
)
from pipeline.machines import LOG, aliases, unnamed_logs
from pipeline.printable import printable_json
from pipeline.store import open_store, scan_events, table_parts


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
    notes: tuple[str, ...] = ()  # which zone pfirewall.log local times were placed in


ANALYSIS_FIELDS = (
    "migration_id",
    "vm_name",
    "verdict",
    "blackout_s",
    "window_class",
    "window_s",
    "window_start_host_clock",
    "window_end_host_clock",
    "blocked_inbound",
)
UNPLACED = (
    "pfirewall.log local times shown as if UTC: the log names no zone, none was given"
    " (--guest-tz) and this store has no analysis to take it from; read the analysis"
    " folder (lmtrace analyze --out OUT) instead"
)
CSV_COLUMNS = (*HEAD, *PLASO, *OWN_FIELDS, "data", "lmtrace_version", *ANALYSIS_FIELDS)
"""The CSV's columns, fixed so that the header can be written before the first part."""


@dataclass(frozen=True)
class _Case:
    """The store and, when it belongs to an analysis folder, that analysis."""

    store: Path
    migrations: pl.DataFrame | None
    blocked: pl.DataFrame | None
    catalogs: tuple[Path, ...]
    machines: pl.DataFrame | None = None  # machines.parquet: each machine's zone and renames


def _case(path: Path) -> _Case:
    """``path`` is a store, or an analysis folder (``OUT``), or ``OUT/store``."""
    path = Path(path)
    if (path / STORE_FOLDER).is_dir() and not (path / "store.json").exists():
        path = path / STORE_FOLDER
    store = open_store(path)
    folder = store.parent
    if store.name != STORE_FOLDER or not (folder / "migrations.parquet").is_file():
        return _Case(store, None, None, ())
    saved = load_correlation_options(folder) if (folder / OPTIONS_FILE).is_file() else None
    blocked = folder / "blocked.parquet"
    machines = folder / "machines.parquet"
    return _Case(
        store,
        pl.read_parquet(folder / "migrations.parquet"),
        pl.read_parquet(blocked) if blocked.is_file() else pl.DataFrame(),
        tuple(saved.catalogs) if saved else (),
        pl.read_parquet(machines) if machines.is_file() else None,
    )


def _zones(machines: pl.DataFrame | None) -> tuple[pl.DataFrame, dict[str, str]]:
    """The machine facts firewall_zone.resolve reads (each machine's zone as its System log
    names it) and the renames that make two computer names one machine, as the analysis
    found them; none without an analysis (its local times then stay read as UTC)."""
    zone_columns = {"machine": pl.String, "zone_iana": pl.String, "zone_bias_min": pl.Int64,
                    "zones_logged": pl.List(pl.String)}  # fmt: skip
    if machines is None or not set(zone_columns) <= set(machines.columns):
        return pl.DataFrame(schema=zone_columns), {}
    renames = (
        machines.select(pl.col("renames").explode())
        .unnest("renames")
        .drop_nulls("old")
        .rename({"old": "old_name", "new": "new_name"})
        if "renames" in machines.columns
        else pl.DataFrame()
    )
    return machines.select(*zone_columns), aliases(renames) if renames.height else {}


def _unnamed_computers(store: Path, renamed: dict[str, str]) -> dict[str, str]:
    """File SHA-256 -> the computer the analysis attributes its unnamed rows to
    (pfirewall.log names none: machines.unnamed_logs says whose it is, where it tells)."""
    events = scan_events(store)
    logs, _ = unnamed_logs(events, renamed)
    told = logs.filter(pl.col("computer").is_not_null()).select(*LOG, "computer")
    return dict(
        events.filter(pl.col("computer").is_null())
        .select(*LOG, "file_sha256")
        .unique()
        .join(told.lazy(), on=LOG, nulls_equal=True)
        .select("file_sha256", "computer")
        .unique("file_sha256")
        .collect()
        .iter_rows()
    )


def _placed(
    events: pl.LazyFrame,
    case: _Case,
    filters: EventFilter | None,
    named: dict[str, str],
    facts: pl.DataFrame,
    renamed: dict[str, str],
) -> tuple[pl.DataFrame, list[str]]:
    """``events`` filtered, with pfirewall.log local times placed in the zone the analysis
    found (when the store is an analysis folder's), and the notes saying where they were
    placed. The times are filtered after they are placed: lines still in local time
    would be kept or dropped by the wrong hour."""
    timed = EventFilter(since=filters.since, until=filters.until) if filters else EventFilter()
    if filters is not None:
        events = events.filter(replace(filters, since=None, until=None).expr())
    frame = computers_of_unnamed(named, events.collect())
    notes: list[str] = []
    if case.machines is not None:
        placed, notes = firewall_zone.resolve(frame.lazy(), facts, renamed)
        frame = placed.collect()
    elif frame.select(firewall_zone.UNRESOLVED.any()).item():
        notes = [UNPLACED]
    return frame.filter(timed.expr()), list(notes)


def placed_events(
    store: Path, filters: EventFilter | None = None
) -> tuple[pl.DataFrame, list[str]]:
    """The events of ``store`` (a store, an analysis folder, or ``OUT/store``) that match
    ``filters``, with pfirewall.log local times placed as the analysis placed them, as
    export writes them; and the notes saying which zone placed them, or that nothing
    could (a bare store ingested without ``--guest-tz``: then they show as stored)."""
    case = _case(store)
    facts, renamed = _zones(case.machines)
    events = scan_events(case.store)
    return _placed(events, case, filters, _unnamed_computers(case.store, renamed), facts, renamed)


def _event_parts(store: Path) -> list[Path]:
    """The store's event parts, in the layout store.py documents (events/*.parquet)."""
    return table_parts(store / "events")


def _write_jsonl(frame: pl.DataFrame, sink: BinaryIO) -> None:
    """One line per row; a null ``tag`` is left out (Timesketch would read it as 'None')."""
    frame = frame.with_columns(pl.col("datetime").dt.strftime(ISO_UTC))
    tagged = frame.filter(pl.col("tag").is_not_null())
    untagged = frame.filter(pl.col("tag").is_null()).drop("tag")
    for rows in (tagged, untagged):
        if rows.height:
            sink.write(printable_json(rows.write_ndjson()).encode("utf-8"))


def _write_csv(frame: pl.DataFrame, sink: BinaryIO, excel: bool) -> None:
    """The fixed columns; an untagged event's ``tag`` cell is ``[]``: Timesketch's CSV
    import (pandas) reads an empty cell as NaN and would tag the event 'nan'."""
    frame = frame.select(
        pl.col(c) if c in frame.columns else pl.lit(None).alias(c) for c in CSV_COLUMNS
    ).with_columns(pl.col("tag").cast(pl.List(pl.String)).fill_null([]))
    csv_frame(frame, excel).write_csv(sink, include_header=False)


def export_store(
    store: Path,
    fmt: ExportFormat,
    out: Path,
    filters: EventFilter | None = None,
    excel: bool = False,
) -> ExportSummary:
    """Write the store's events (those with a time), and its analysis when it has one, to
    ``out`` as Timesketch JSONL or CSV (``excel``: the form Excel reads as dates)."""
    case = _case(store)
    store = case.store
    out = Path(out)
    if out.resolve().is_relative_to(store.resolve()):
        raise ExportError(f"{out}: write the export outside the store folder {store}")
    if not out.parent.is_dir():
        raise ExportError(f"{out}: the folder {out.parent} does not exist")
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; give a file name")
    catalog = load_catalog(case.catalogs)
    evidence = (
        tags(case.migrations, case.blocked)
        if case.migrations is not None and case.blocked is not None
        else pl.DataFrame(
            schema={"source_path": pl.String, "member": pl.String, "record_id": pl.Int64,
                    "tag": pl.List(pl.String)}
        )
    )  # fmt: skip
    facts, renamed = _zones(case.machines)
    named = _unnamed_computers(store, renamed)
    notes: dict[str, None] = {}  # one note per machine, in the order first met
    rows = without_time = 0

    def write(frame: pl.DataFrame) -> None:
        if fmt is ExportFormat.csv:
            _write_csv(frame, sink, excel)
        else:
            _write_jsonl(frame, sink)

    with out.open("wb") as sink:
        if fmt is ExportFormat.csv:  # the header, even for an empty store
            sink.write((BOM if excel else b"") + (",".join(CSV_COLUMNS) + "\n").encode())
        for part in _event_parts(store):
            events = pl.scan_parquet(part, schema=EVENT_SCHEMA)
            frame, said = _placed(events, case, filters, named, facts, renamed)
            notes.update(dict.fromkeys(said))
            frame = frame.join(evidence, on=list(EVENT_KEY), how="left", nulls_equal=True)
            timed = frame.filter(pl.col("timestamp").is_not_null())
            without_time += frame.height - timed.height
            rows += timed.height
            for _, group in timed.group_by("provider", "event_id", maintain_order=True):
                write(event_rows(group, catalog))
        if (
            case.migrations is not None
            and case.migrations.height
            and filters in (None, EventFilter())
        ):
            facts = analysis_rows(case.migrations)
            rows += facts.height
            write(facts)
    return ExportSummary(out, rows, fmt, without_time, tuple(notes))
