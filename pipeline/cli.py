"""The lmtrace command line: a thin Typer layer over the pipeline functions.

Each command parses its options, calls one library function, prints, and picks
the exit code: 0 everything read, 1 partial (something unreadable, the rest
kept), 2 usage or fatal. Data goes to stdout, progress and warnings to stderr.
Errors a user can fix (a bad path, a folder that is not a store, a bad time)
are lmtrace errors: :class:`_Commands` turns them into one line on stderr,
without a traceback, for every command at once.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table
from typer.core import TyperGroup

from parsers.evtx_reader import ReadSettings
from parsers.model import LmtraceError
from parsers.pfirewall import PfirewallSettings
from pipeline.discover import Limits
from pipeline.ingest import ingest as run_ingest
from pipeline.store import EventFilter, parse_utc, scan_events, scan_files

EXIT_OK, EXIT_PARTIAL, EXIT_FATAL = 0, 1, 2


class _Commands(TyperGroup):
    """Runs a command and turns any LmtraceError into one line on stderr and exit 2."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LmtraceError as e:
            typer.echo(f"lmtrace: error: {e}", err=True)
            raise typer.Exit(EXIT_FATAL) from None


app = typer.Typer(
    name="lmtrace",
    cls=_Commands,
    help="Did a Hyper-V live migration cut this VM off the network? Evidence from .evtx bundles.",
    no_args_is_help=True,
)


@app.callback()
def main() -> None:
    """Did a Hyper-V live migration cut this VM off the network, for how long, and why?"""


# ----- options shared by the commands that select events


class EngineName(str, Enum):
    rust = "rust"
    python = "python"


class EventsFormat(str, Enum):
    table = "table"
    csv = "csv"
    jsonl = "jsonl"


class FilesFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


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
Since = Annotated[
    str | None,
    typer.Option(
        help="Keep events at or after this ISO 8601 time, e.g. 2024-05-01T10:00:00Z. "
        "A time without an offset is UTC."
    ),
]
Until = Annotated[
    str | None,
    typer.Option(
        help="Keep events at or before this ISO 8601 time (inclusive). "
        "A time without an offset is UTC."
    ),
]
StorePath = Annotated[Path, typer.Argument(help="A store folder written by lmtrace ingest --out.")]


def _filter(
    event_id: list[int] | None,
    channel: list[str] | None,
    provider: list[str] | None,
    since: str | None,
    until: str | None,
) -> EventFilter:
    return EventFilter(
        frozenset(event_id) if event_id else None,
        frozenset(channel) if channel else None,
        frozenset(provider) if provider else None,
        parse_utc(since, "--since") if since else None,
        parse_utc(until, "--until") if until else None,
    )


# ----- output


def _flat(frame: pl.DataFrame) -> pl.DataFrame:
    """Lists joined with '; ' and times as ISO 8601 UTC text, for CSV and tables."""
    return frame.with_columns(
        [pl.col(n).list.join("; ") for n, t in frame.schema.items() if isinstance(t, pl.List)]
        + [
            pl.col(n).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            for n, t in frame.schema.items()
            if isinstance(t, pl.Datetime)
        ]
    )


def _emit(frame: pl.DataFrame, fmt: str, table_columns: list[str]) -> None:
    """Write a frame to stdout as a table, CSV, JSON lines or a JSON array."""
    if fmt == "csv":
        sys.stdout.write(_flat(frame).write_csv())
    elif fmt == "jsonl":
        sys.stdout.write(_flat(frame).write_ndjson())
    elif fmt == "json":
        sys.stdout.write(
            frame.with_columns(
                pl.col(pl.Datetime).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            ).write_json()
            + "\n"
        )
    else:
        table = Table(*(Column(name, overflow="fold") for name in table_columns))
        for row in _flat(frame.select(table_columns)).iter_rows():
            table.add_row(*("" if v is None else str(v)[:200] for v in row))
        Console(soft_wrap=False).print(table)


class _Bar:
    """Ingest progress as a rich bar on stderr, in bytes, one task per phase."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: Any = None
        self._total = 0

    def phase(self, name: str, total_bytes: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=self._total)
        self._total = total_bytes
        self._task = self._progress.add_task(name, total=total_bytes or None)

    def advance(self, nbytes: int) -> None:
        self._progress.advance(self._task, nbytes)


# ----- commands


@app.command()
def ingest(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help=".evtx files, folders (walked), .zip/.tar/.tar.gz archives (nested ones too).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Store folder to create or add to.")],
    engine: Annotated[
        EngineName,
        typer.Option(
            help="EVTX decoder: rust (pyevtx-rs, fast) or python "
            "(python-evtx, slow; for cross-checks)."
        ),
    ] = EngineName.rust,
    event_id: EventIds = None,
    channel: Channels = None,
    provider: Providers = None,
    since: Since = None,
    until: Until = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Reading processes, one file each. [default: number of CPUs]",
            show_default=False,
        ),
    ] = None,
    firewall_tz: Annotated[
        str,
        typer.Option(
            help="Time zone of pfirewall.log times, which are local and carry no offset: "
            "an IANA name (Europe/Berlin) or an offset (+02:00). Converted to UTC on read.",
        ),
    ] = "UTC",
    firewall_computer: Annotated[
        str | None,
        typer.Option(help="Computer name for pfirewall.log rows (the log does not name it)."),
    ] = None,
    max_ratio: Annotated[
        float, typer.Option(help="Refuse archive members that inflate more than this (zip bombs).")
    ] = Limits.max_ratio,
    max_extract_gib: Annotated[
        float,
        typer.Option(help="Refuse to extract more than this many GiB from archives in total."),
    ] = Limits.max_total_bytes / (1 << 30),
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="No progress bar and no summary; problems are still reported on stderr.",
        ),
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout.")
    ] = False,
) -> None:
    """Read logs into a Parquet store: what could not be read is listed, the rest is kept.

    Identical files are read once; events already in the store (same computer,
    channel, record id and time, e.g. from an overlapping export) are not added
    again, so ingesting more bundles into the same --out folder is safe.
    Exit code 0: everything read; 1: something unreadable (named on stderr); 2: fatal.
    """
    filters = _filter(event_id, channel, provider, since, until)
    settings = ReadSettings(
        engine=engine.value,
        event_ids=filters.event_ids,
        channels=filters.channels,
        providers=filters.providers,
        since=filters.since,
        until=filters.until,
    )
    limits = Limits(max_ratio=max_ratio, max_total_bytes=int(max_extract_gib * (1 << 30)))
    firewall = PfirewallSettings(tz=firewall_tz, computer=firewall_computer)
    columns = [
        TextColumn("{task.description:>12}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    ]
    console = Console(stderr=True)  # a bar only on a terminal: logs stay clean
    with Progress(*columns, console=console, disable=quiet or not console.is_terminal) as bar:
        summary = run_ingest(
            inputs, out, settings, jobs or os.cpu_count() or 1, _Bar(bar), limits, firewall
        )
    for item in summary.problems:
        typer.echo(f"lmtrace: {item.status}: {item.where}: {item.message}", err=True)
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), indent=2, default=str))
    elif not quiet:
        files = ", ".join(
            f"{summary.count(s)} {s}" for s in ("read", "partial", "failed", "skipped", "refused")
        )
        typer.echo(
            f"{summary.store}: files {files}; records {summary.records:,} read, "
            f"{summary.records_skipped:,} unreadable; events {summary.events_stored:,} stored, "
            f"{summary.events_duplicate:,} already present; {summary.seconds:.1f} s"
        )
    raise typer.Exit(summary.exit_code)


@app.command()
def events(
    store: StorePath,
    event_id: EventIds = None,
    channel: Channels = None,
    provider: Providers = None,
    since: Since = None,
    until: Until = None,
    fmt: Annotated[
        EventsFormat,
        typer.Option("--format", help="table for reading, csv or jsonl for other tools."),
    ] = EventsFormat.table,
    limit: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="At most this many events (the earliest). [default: 100 for table, all otherwise]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the stored events that match the filters, in time order, to stdout."""
    selected = scan_events(store, _filter(event_id, channel, provider, since, until)).sort(
        "timestamp", "computer", "channel", "record_id", nulls_last=True
    )
    if limit is None and fmt is EventsFormat.table:
        limit = 100
        total = selected.select(pl.len()).collect().item()
        if total > limit:
            typer.echo(
                f"lmtrace: showing the first {limit} of {total:,} events (--limit N, --format csv)",
                err=True,
            )
    frame = (selected.head(limit) if limit is not None else selected).collect()
    _emit(
        frame,
        fmt.value,
        ["timestamp", "computer", "channel", "provider", "event_id", "record_id", "data"],
    )


@app.command()
def files(
    store: StorePath,
    fmt: Annotated[
        FilesFormat,
        typer.Option("--format", help="table for reading, csv or json for other tools."),
    ] = FilesFormat.table,
) -> None:
    """Print the per-file integrity table: every file seen, its counts, and what went wrong."""
    frame = scan_files(store).sort("source_path", "member", nulls_last=False).collect()
    _emit(
        frame,
        fmt.value,
        [
            "source_path",
            "member",
            "kind",
            "engine",
            "records",
            "records_skipped",
            "chunks_skipped",
            "errors",
        ],
    )
