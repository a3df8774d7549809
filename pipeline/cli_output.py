"""What lmtrace prints: tables and data on stdout, progress bars and problems on stderr.

The commands in pipeline/cli.py decide what to show; this module decides how it looks,
so that every command renders frames, verdicts and progress the same way, and the
command layer stays one short function per command. Nothing here picks an exit code.

Text from the logs reaches a terminal only through pipeline/shown.py (control
characters escaped: no ESC sequence, newline or bidi override acts on the screen)
and, in rich tables, with rich's markup escaped too (a name such as ``[/x]`` is text,
not a tag rich would fail on).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, ProgressColumn
from rich.table import Column, Table

from pipeline.batch import BatchResult
from pipeline.correlate import Correlation
from pipeline.ingest import FileOutcome, IngestSummary
from pipeline.printable import printable, printable_frame, printable_json
from pipeline.store import incomplete
from pipeline.writes import writing

_ISO_UTC = "%Y-%m-%dT%H:%M:%S%.6fZ"


def flat_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Lists joined with '; ' and times as ISO 8601 UTC text, for CSV and tables."""
    return frame.with_columns(
        [pl.col(n).list.join("; ") for n, t in frame.schema.items() if isinstance(t, pl.List)]
        + [
            pl.col(n).dt.strftime(_ISO_UTC)
            for n, t in frame.schema.items()
            if isinstance(t, pl.Datetime)
        ]
    )


def emit(frame: pl.DataFrame, fmt: str, table_columns: list[str]) -> None:
    """Write a frame to stdout as a table, CSV, JSON lines or a JSON array.

    Tables and CSV show control characters escaped; JSON keeps every value exactly,
    with JSON's own escapes for the controls it would leave raw. Flushed here, so that
    a full disk behind a redirection is reported as ``<stdout>``.
    """
    with writing("<stdout>"):
        if fmt == "csv":
            sys.stdout.write(printable_frame(flat_text(frame)).write_csv())
        elif fmt == "jsonl":
            sys.stdout.write(printable_json(flat_text(frame).write_ndjson()))
        elif fmt == "json":
            text = frame.with_columns(pl.col(pl.Datetime).dt.strftime(_ISO_UTC)).write_json()
            sys.stdout.write(printable_json(text) + "\n")
        else:
            table = Table(*(Column(name, overflow="fold") for name in table_columns))
            for row in printable_frame(flat_text(frame.select(table_columns))).iter_rows():
                table.add_row(*("" if v is None else escape(str(v)[:200]) for v in row))
            Console(soft_wrap=False).print(table)
        sys.stdout.flush()


def said(value: object) -> str:
    """A value for rich's console: control characters and rich markup escaped."""
    return escape(printable(value))


def print_verdict(result: Correlation, out: Path) -> None:
    """The short verdict table on stdout: one row per migration, then the bundle verdict.

    Notes (which zone placed a pfirewall.log, ...) go to stderr first: they qualify the data.
    """
    for note in result.notes:
        typer.echo(f"lmtrace: note: {printable(note)}", err=True)
    table = Table(
        "migration", "VM", "guest", "from -> to", "completed (UTC)", "blackout s",
        "quarantine s", "class", "blocked in", "verdict",
        title="Live migrations",
    )  # fmt: skip
    for row in result.migrations.iter_rows(named=True):
        end = row["end"].strftime("%Y-%m-%d %H:%M:%S") if row["end"] else "-"
        table.add_row(
            *(
                said("-" if v is None else v)
                for v in (
                    row["migration_id"],
                    row["vm_name"],
                    row["machine"],
                    f"{row['source'] or '?'} -> {row['destination'] or '?'}",
                    end,
                    row["blackout_s"],
                    None if row["q_duration_s"] is None else round(row["q_duration_s"], 1),
                    row["quarantine_class"],
                    row["blocked_inbound"],
                    row["verdict"],
                )
            )
        )
    console = Console(soft_wrap=False)
    if not console.is_terminal:  # a pipe or a file: no terminal width to respect
        console = Console(soft_wrap=False, width=200)
    if result.migrations.height:
        console.print(table)
    console.print(f"verdict: [bold]{said(result.summary.verdict)}[/bold]")
    for reason in result.summary.reasons:
        console.print(f"  - {said(reason)}")
    for hint in result.summary.collect:
        console.print(f"  collect: {said(hint['how'])}")
    console.print(f"findings: {said(out)}")


def warn_incomplete(store: Path) -> str | None:
    """Say on stderr when a store lacks what an unfinished ingest was asked to read;
    return the reason (for the findings), or None when the store is whole."""
    mark = incomplete(store)
    if mark is None:
        return None
    typer.echo(f"lmtrace: warning: {printable(store)}: {printable(mark)}", err=True)
    return str(mark)


def echo_problems(problems: Iterable[FileOutcome]) -> None:
    """One stderr line per file that was partly read, unreadable or refused."""
    for item in problems:
        typer.echo(
            f"lmtrace: {item.status}: {printable(item.where)}: {printable(item.message)}", err=True
        )


def ingest_summary_line(summary: IngestSummary) -> str:
    """The one-line account of an ingest: files by outcome, records, events, seconds."""
    files = ", ".join(
        f"{summary.count(s)} {s}" for s in ("read", "partial", "failed", "skipped", "refused")
    )
    return (
        f"{printable(summary.store)}: files {files}; records {summary.records:,} read, "
        f"{summary.records_skipped:,} unreadable; events {summary.events_stored:,} stored, "
        f"{summary.events_duplicate:,} already present; {summary.seconds:.1f} s"
    )


def batch_summary_line(result: BatchResult, out: Path) -> str:
    """The one-line account of a batch: bundles by outcome and where the overview is."""
    return (
        f"{result.summary.height} bundles: {result.count('ok')} ok, "
        f"{result.count('partial')} partial, {result.count('failed')} failed "
        f"({result.reused} reused); overview {out / 'index.html'}"
    )


# ----- progress on stderr


def stderr_progress(*columns: ProgressColumn, quiet: bool) -> Progress:
    """A rich progress display on stderr, shown only on a terminal (logs stay clean)
    and never with --quiet."""
    console = Console(stderr=True)
    return Progress(*columns, console=console, disable=quiet or not console.is_terminal)


class IngestBar:
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


class BatchBar:
    """Batch progress as one rich bar over the bytes of all bundles, with done / failed."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: Any = None
        self._bundles = self._done = self._failed = 0

    def start(self, total_bytes: int, bundles: int) -> None:
        self._bundles = bundles
        self._task = self._progress.add_task(f"0/{bundles} bundles", total=total_bytes or None)

    def done(self, row: dict[str, Any]) -> None:
        self._done += 1
        self._failed += row.get("status") == "failed"
        self._progress.update(
            self._task,
            advance=int(row.get("bytes") or 0),
            description=f"{self._done}/{self._bundles} bundles, {self._failed} failed",
        )
