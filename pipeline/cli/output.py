"""What lmtrace prints: tables and data on stdout, progress bars and problems on stderr.

The commands in pipeline/cli/commands.py decide what to show; this module decides how it looks,
so that every command renders frames, verdicts and progress the same way, and the
command layer stays one short function per command. Nothing here picks an exit code.

Text from the logs reaches a terminal only through pipeline/printable.py (control
characters escaped: no ESC sequence, newline or bidi override acts on the screen)
and, in rich tables, as rich ``Text`` cells, never markup (a name such as ``[/x]`` is
text, not a tag rich would fail on).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import typer
from rich.console import Console
from rich.progress import Progress, ProgressColumn
from rich.table import Column, Table
from rich.text import Text

from pipeline import __version__
from pipeline.csv_tables import csv_bytes
from pipeline.printable import printable, printable_frame, printable_json
from pipeline.store import incomplete, problem_files
from pipeline.wording import UNSEEN_DROPS, verdict_lines
from pipeline.writes import writing

if TYPE_CHECKING:  # what the commands print; loaded by the commands that run them
    from pipeline.analyze import Analysis
    from pipeline.batch import BatchResult
    from pipeline.correlate import Correlation
    from pipeline.ingest import FileOutcome, IngestSummary

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


def emit(
    frame: pl.DataFrame,
    fmt: str,
    table_columns: list[str],
    free: str | None = None,
    title: str | None = None,
) -> None:
    """Write a frame to stdout as a table, CSV, JSON lines or a JSON array.

    ``free`` names the one table column that may wrap (words, such as errors); every
    other value is shown whole (:func:`print_table`).

    Tables and CSV show control characters escaped; JSON keeps every value exactly,
    with JSON's own escapes for the controls it would leave raw. Flushed here, so that
    a full disk behind a redirection is reported as ``<stdout>``.
    """
    with writing("<stdout>"):
        if fmt == "csv":
            sys.stdout.buffer.write(csv_bytes(frame))
        elif fmt == "jsonl":
            sys.stdout.write(printable_json(flat_text(frame).write_ndjson()))
        elif fmt == "json":
            text = frame.with_columns(pl.col(pl.Datetime).dt.strftime(_ISO_UTC)).write_json()
            sys.stdout.write(printable_json(text) + "\n")
        else:
            cells = printable_frame(flat_text(frame.select(table_columns))).select(
                pl.all().cast(pl.String).fill_null("").str.slice(0, 200)
            )
            print_table(cells, free=free, title=title)
        sys.stdout.flush()


def relative_paths(frame: pl.DataFrame, column: str, *also: str) -> tuple[pl.DataFrame, str | None]:
    """``column``'s paths relative to the folder they share, and a title naming it; the
    frame unchanged (and no title) when they share none. The paths of the ``also``
    columns under that folder are shown relative to it too (a file named by another
    row must read as that row names it)."""
    given = frame[column].drop_nulls()
    paths = [p for p in given.unique().to_list() if os.path.isabs(p)]
    if not paths or len(paths) != given.n_unique():
        return frame, None
    common = os.path.commonpath(paths)
    if common in paths:  # one file, or a file that is also the others' folder
        common = os.path.dirname(common)
    if common in ("", os.sep):
        return frame, None
    prefix = common.rstrip(os.sep) + os.sep
    cut = len(prefix)
    under = [
        pl.when(pl.col(c).str.starts_with(prefix)).then(pl.col(c).str.slice(cut)).otherwise(c)
        for c in also
    ]
    return frame.with_columns(pl.col(column).str.slice(cut), *under), f"files under {common}"


def terminal_width() -> int | None:
    """The width output must fit: ``COLUMNS`` when set (also in a pipe, as ls and git
    honour it), the terminal's width on a terminal, else None: a pipe or a file has no
    width, so nothing is wrapped or cut there."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    console = Console()
    return console.width if console.is_terminal else None


_FREE_MIN = 24  # a wrapping column narrower than this reads worse than one block per row


def print_table(cells: pl.DataFrame, free: str | None = None, title: str | None = None) -> None:
    """``cells`` (text) as a table that fits :func:`terminal_width`, else one block per row.

    A path or a timestamp broken character by character cannot be copied or read, so
    every column keeps its values whole; only ``free`` (a column of words) wraps, at
    spaces. When the whole columns leave ``free`` too little room, or no column is
    free and they do not fit, each row becomes a block of ``name: value`` lines, which
    the terminal wraps like any text.
    """
    names = cells.columns
    natural = {c: max(len(c), int(cells[c].str.len_chars().max() or 0)) for c in names}
    width = terminal_width()
    whole = sum(w for c, w in natural.items() if c != free) + 3 * len(names) + 1
    need = whole + (min(natural[free], _FREE_MIN) if free else 0)
    console = Console(width=width or whole + natural.get(free or "", 0), soft_wrap=False)
    if width is not None and need > width:
        if title:
            console.print(Text(title), soft_wrap=True)
        for row in cells.iter_rows(named=True):
            first, *rest = names
            console.print(Text(row[first], style="bold"), soft_wrap=True)
            for name in rest:
                if row[name]:
                    console.print(Text(f"  {name}: {row[name]}"), soft_wrap=True)
        return
    table = Table(
        *(Column(c, no_wrap=c != free, overflow="fold" if c == free else "ignore") for c in names),
        title=title,
    )
    for row in cells.iter_rows():
        table.add_row(*(Text(v) for v in row))
    console.print(table)


def print_verdict(result: Correlation, out: Path) -> None:
    """The short verdict table on stdout: one row per migration, then the bundle verdict.

    Notes (which zone placed a pfirewall.log, ...) go to stderr first: they qualify the data.
    The verdict, its reasons and the commands to collect logs are printed without
    wrapping, so a command piped into a ticket or a script stays on one line.
    """
    for note in result.notes:
        typer.echo(f"lmtrace: note: {printable(note)}", err=True)
    if result.migrations.height:
        print_table(verdict_rows(result.migrations), free="class", title="Live migrations")
    doc = {
        "reasons": result.summary.reasons,
        "migrations": result.migrations.select("vm_name", "verdict").to_dicts(),
    }
    typer.echo(f"verdict: {printable(result.summary.verdict)}")
    for line in verdict_lines(doc):
        typer.echo(f"  - {printable(line)}")
    for hint in result.summary.collect:
        typer.echo(f"  collect: {printable(hint['how'])}")
    typer.echo(f"findings: {printable(out)}")


VERDICT_TABLE = {
    "migration": pl.col("migration_id"),
    "VM": pl.col("vm_name"),
    "guest": pl.col("machine"),
    "from -> to": pl.format(
        "{} -> {}", pl.col("source").fill_null("?"), pl.col("destination").fill_null("?")
    ),
    "completed (UTC)": pl.col("end").dt.strftime("%Y-%m-%d %H:%M:%S"),
    "blackout s": pl.col("blackout_s").cast(pl.String),
    "quarantine s": pl.col("q_duration_s").round(1).cast(pl.String),
    "class": pl.col("window_words"),  # findings' words for quarantine_class, as the reports
    # no guest, nothing counted: a dash; a guest that logs no drops: not a reassuring 0
    "blocked in": pl.when(pl.col("machine").is_null())
    .then(None)
    .when(pl.col("drops_observable"))
    .then(pl.col("blocked_inbound").cast(pl.String))
    .otherwise(pl.lit(UNSEEN_DROPS)),
    "verdict": pl.col("verdict"),
}
"""The verdict table's columns, from the migrations table's: a renamed column is one line."""


def verdict_rows(migrations: pl.DataFrame) -> pl.DataFrame:
    """The verdict table's cells: text, control characters shown escaped (log names)."""
    return printable_frame(
        migrations.select(
            expr.cast(pl.String).fill_null("-").alias(name) for name, expr in VERDICT_TABLE.items()
        )
    )


def verdict_summary(analysis: Analysis) -> dict[str, Any]:
    """What ``lmtrace analyze --json`` prints: the verdict and each migration's, for scripts."""
    result = analysis.result
    return {
        "lmtrace_version": __version__,
        "verdict": result.summary.verdict,
        "reasons": result.summary.reasons,
        "collect": [hint["how"] for hint in result.summary.collect],
        "notes": list(result.notes),
        "exit_code": analysis.exit_code,
        "out": str(analysis.out),
        "written": [str(p) for p in analysis.written],
        "migrations": result.migrations.select(
            "migration_id", "vm_name", "machine", "source", "destination", "start", "end",
            "blackout_s", "q_duration_s", "quarantine_class", "blocked_inbound", "verdict",
            "reason",
        ).to_dicts(),
    }  # fmt: skip


def warn_incomplete(store: Path) -> str | None:
    """Say on stderr when a store lacks what an unfinished ingest was asked to read;
    return the reason (for the findings), or None when the store is whole."""
    mark = incomplete(store)
    if mark is None:
        return None
    typer.echo(f"lmtrace: warning: {printable(store)}: {printable(mark)}", err=True)
    return str(mark)


def echo_problems(outcomes: Iterable[FileOutcome]) -> None:
    """One stderr line per file that was partly read, unreadable or refused, and per file
    read in full of which chunks changed after Windows wrote their checksums."""
    for item in outcomes:
        if item.problem:
            typer.echo(
                f"lmtrace: {item.status}: {printable(item.where)}: {printable(item.message)}",
                err=True,
            )
        if item.altered:
            many = item.altered > 1
            typer.echo(
                f"lmtrace: altered: {printable(item.where)}: {item.altered} chunk"
                f"{'s' if many else ''} changed after Windows wrote {'their' if many else 'its'}"
                " checksums; read and used (named in `lmtrace files` and the report)",
                err=True,
            )


def echo_earlier_problems(files: pl.DataFrame, outcomes: Iterable[FileOutcome]) -> None:
    """One stderr line per file of the case that an earlier run could not read in full
    and this run did not read (the store holds it already): without them a re-run or an
    ``--add`` exits 1 naming nothing. ``files`` is the store's files table."""
    read_now = [o.where for o in outcomes if o.status not in ("skipped", "repeated")]
    where = pl.when(pl.col("member").is_not_null()).then(
        pl.format("{}!{}", "source_path", "member")
    )
    lines = (
        problem_files(files)
        .with_columns(where.otherwise(pl.col("source_path")).alias("where"))
        .filter(~pl.col("where").is_in(read_now))
        .unique("where", keep="last", maintain_order=True)
        .select(
            pl.format(
                "lmtrace: {}: {}: {} (as an earlier run read it)",
                pl.when(pl.col("records").is_null())
                .then(pl.lit("refused"))
                .when(pl.col("engine").is_null())
                .then(pl.lit("failed"))
                .otherwise(pl.lit("partial")),
                "where",
                pl.col("errors").list.first().fill_null("records or chunks unreadable"),
            )
        )
        .to_series()
    )
    for line in lines:
        typer.echo(printable(line), err=True)


def ingest_summary_line(summary: IngestSummary) -> str:
    """The one-line account of an ingest: files by outcome, records, events, seconds."""
    files = ", ".join(f"{n} {status}" for status, n in summary.files.items())
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
        f"({result.reused} reused)"
        + (f", {result.count('skipped')} skipped (no log)" if result.count("skipped") else "")
        + f"; overview {out / 'index.html'}"
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
