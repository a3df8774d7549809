"""The lmtrace command line: a thin Typer layer over the pipeline functions.

Each command parses its options, calls one library function, prints, and picks
the exit code: 0 everything read, 1 partial (something unreadable, the rest
kept), 2 usage or fatal. Data goes to stdout, progress and warnings to stderr.
Errors a user can fix (a bad path, a folder that is not a store, a bad time)
are lmtrace errors: :class:`_Commands` turns them into one line on stderr,
without a traceback, for every command at once. Options that several commands
share live in options.py; how tables, verdicts and progress bars look, in
output.py.

Start-up is part of the answer's speed: ``lmtrace --help`` loads typer and nothing
else, and each command loads the parts of lmtrace it runs (no plotly for ``files``,
no archive libraries for ``timeline``) in the imports at its top, its one place.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from parsers.engines import DEFAULT_ENGINE
from parsers.errors import LmtraceError
from parsers.time_values import Zone, parse_duration, parse_utc, parse_zone
from pipeline.cli.options import (
    SOURCE,
    TARGET,
    Catalogs,
    Channels,
    ClockOffsets,
    DisplayTz,
    EngineOption,
    EventIds,
    EventsFormat,
    Excel,
    ExportFormatName,
    FilesFormat,
    FirewallComputer,
    Guests,
    GuestTz,
    Hosts,
    Jobs,
    JsonSummary,
    MapFile,
    MaxExtractGib,
    MaxRatio,
    MinFreeGib,
    OutFolder,
    Password,
    Providers,
    Since,
    StorePath,
    Tolerance,
    Until,
    Window,
    archive_limits,
    correlate_settings,
    event_filter,
    parsed_as,
    remember_source,
    remember_target,
)
from pipeline.limits import Limits

EXIT_OK, EXIT_PARTIAL, EXIT_FATAL = 0, 1, 2
EXIT_INTERRUPTED = 128 + 2  # killed by SIGINT, as shells report it


def _no_bool_metavar(command: Any, ctx: typer.Context) -> None:
    """Flags (--quiet, --force, --help) take no value: without this, help shows them as
    ``<bool>`` and invites ``--quiet true``, which is then read as an input path."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False):
            param.metavar = ""


def _polars_errors() -> tuple[type[Exception], ...]:
    """Polars' error class once polars is loaded (before, no polars error can occur)."""
    polars = sys.modules.get("polars")
    return (polars.exceptions.PolarsError,) if polars is not None else ()


class _Commands(TyperGroup):
    """Runs a command and turns any LmtraceError, and any operating-system error (disk
    full, read-only, no permission), into one line on stderr and exit 2, and a Ctrl-C
    into one line and the shell's usual 130."""

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        _no_bool_metavar(self, ctx)
        super().format_help(ctx, formatter)

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _no_bool_metavar(command, ctx)
        return command

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LmtraceError as e:
            from pipeline.printable import printable

            typer.echo(f"lmtrace: error: {printable(e)}", err=True)
            raise typer.Exit(EXIT_FATAL) from None
        except BrokenPipeError:
            # The reader went away (lmtrace events OUT | head): not an error to report.
            # click's main ends it without a word and exits 1, as rich does for its output
            # (the status is click's and rich's; a pipeline's status is the last command's).
            raise
        except (OSError, *_polars_errors()) as e:
            from pipeline.printable import printable
            from pipeline.writes import as_write_error

            # A full disk, a read-only or forbidden folder: the path and the system's words.
            path = ctx.meta.get(TARGET) or ctx.meta.get(SOURCE) or "<stdout>"
            error = as_write_error(e, path)
            if error is None:
                raise
            typer.echo(f"lmtrace: error: {printable(error)}", err=True)
            raise typer.Exit(EXIT_FATAL) from None
        except KeyboardInterrupt:
            again = " (the same command resumes)" if ctx.invoked_subcommand == "batch" else ""
            typer.echo(f"lmtrace: interrupted{again}", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None


app = typer.Typer(
    name="lmtrace",
    cls=_Commands,
    help="Did a Hyper-V live migration cut this VM off the network? Evidence from .evtx bundles.",
    epilog="Start with: lmtrace analyze BUNDLE --out OUT  (BUNDLE: the .evtx logs exported from "
    "the Hyper-V hosts and the guest, as folders or archives). It prints a verdict per migration "
    "and writes report.html, timeline.html and findings.json. Try: lmtrace analyze "
    "examples/bundles/quarantine-bug --out out/qb",
    no_args_is_help=True,
)


def _print_version(asked: bool) -> None:
    if asked:
        from parsers.native import compiled_scanner
        from pipeline import __version__

        typer.echo(f"lmtrace {__version__}")
        typer.echo(f"EVTX rows: {compiled_scanner()[1]}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Did a Hyper-V live migration cut this VM off the network, for how long, and why?"""


catalog_app = typer.Typer(
    cls=_Commands,
    help="The event catalog: which logged event means what (pipeline/catalog.toml).",
    no_args_is_help=True,
)
app.add_typer(catalog_app, name="catalog")


def _store(folder: Path) -> Path:
    """The store of an analysis folder (OUT/store), or ``folder`` itself: every command
    that reads events takes either, as the docs and ``lmtrace timeline`` do."""
    from pipeline.analyze import STORE_FOLDER

    inner = folder / STORE_FOLDER
    return inner if inner.is_dir() and not (folder / "store.json").exists() else folder


# ----- commands


@app.command()
def ingest(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help=".evtx files, pfirewall.log files, folders (walked), .zip/.tar/.tar.gz "
            "archives (nested ones too). Kinds are told by content, not by name.",
            show_default=False,
            readable=False,  # an unreadable input: counted and named, not a usage error
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Store folder to create or add to.", callback=remember_target
        ),
    ],
    engine: EngineOption = DEFAULT_ENGINE,
    event_id: EventIds = None,
    channel: Channels = None,
    provider: Providers = None,
    since: Since = None,
    until: Until = None,
    jobs: Jobs = None,
    guest_tz: GuestTz = None,
    firewall_computer: FirewallComputer = None,
    max_ratio: MaxRatio = Limits.max_ratio,
    max_extract_gib: MaxExtractGib = Limits.max_total_bytes / (1 << 30),
    min_free_gib: MinFreeGib = Limits.min_free_bytes / (1 << 30),
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="No progress bar and no summary; problems are still reported on stderr.",
        ),
    ] = False,
    json_out: JsonSummary = False,
    password: Password = None,
) -> None:
    """Read logs into a Parquet store: what could not be read is listed, the rest is kept.

    Identical files are read once; events already in the store (same computer,
    channel, record id and time, e.g. from an overlapping export) are not added
    again, so ingesting more bundles into the same --out folder is safe.
    Exit code 0: everything read; 1: something unreadable (named on stderr); 2: fatal.
    """
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn

    from parsers.evtx_reader import ReadSettings
    from parsers.pfirewall import PfirewallSettings
    from pipeline.cli.output import IngestBar, echo_problems, ingest_summary_line, stderr_progress
    from pipeline.ingest import ingest as run_ingest
    from pipeline.printable import printable_json

    settings = ReadSettings(engine, event_filter(event_id, channel, provider, since, until))
    limits = archive_limits(max_ratio, max_extract_gib, min_free_gib)
    firewall = PfirewallSettings(tz=guest_tz, computer=firewall_computer)
    columns = (
        TextColumn("{task.description:>12}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with stderr_progress(*columns, quiet=quiet) as bar:
        summary = run_ingest(
            inputs, out, settings, jobs, IngestBar(bar), limits, firewall,
            password,
        )  # fmt: skip
    echo_problems(summary.outcomes)
    if json_out:
        typer.echo(printable_json(json.dumps(summary.to_dict(), indent=2, default=str)))
    elif not quiet:
        typer.echo(ingest_summary_line(summary))
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
            help="At most this many events, the earliest first "
            "(default: 100 for table, all otherwise).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the stored events that match the filters, in time order, to stdout.

    pfirewall.log lines carry local times: in an analysis folder they are shown (and
    --since/--until compare them) in the zone the analysis placed them in, as the report
    and `lmtrace export` do; a note on stderr says which."""
    import polars as pl

    from pipeline.cli.output import emit, warn_incomplete
    from pipeline.export import placed_events
    from pipeline.printable import printable
    from pipeline.store import open_store

    warn_incomplete(open_store(_store(store)))
    placed, notes = placed_events(store, event_filter(event_id, channel, provider, since, until))
    for note in notes:
        typer.echo(f"lmtrace: note: {printable(note)}", err=True)
    selected = placed.sort("timestamp", "computer", "channel", "record_id", nulls_last=True)
    if limit is None and fmt is EventsFormat.table:
        limit = 100
        if selected.height > limit:
            typer.echo(
                f"lmtrace: showing the first {limit} of {selected.height:,} events"
                " (--limit N, --format csv)",
                err=True,
            )
    frame = selected.head(limit) if limit is not None else selected
    if fmt is EventsFormat.table:  # a space between payload fields: the table wraps there
        frame = frame.with_columns(pl.col("data").str.replace_all('","', '", "', literal=True))
    emit(
        frame,
        fmt.value,
        ["timestamp", "computer", "channel", "provider", "event_id", "record_id", "data"],
        free="data",
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
    from pipeline.cli.output import emit, relative_paths, warn_incomplete
    from pipeline.store import open_store, scan_files

    store = _store(store)
    warn_incomplete(open_store(store))
    frame = scan_files(store).sort("source_path", "member", nulls_last=False).collect()
    title = None
    if fmt is FilesFormat.table:  # long absolute paths: show them under their common folder
        frame, title = relative_paths(frame, "source_path", "same_as")
    emit(
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
            "same_as",
            "errors",
        ],
        free="errors",
        title=title,
    )


@catalog_app.command("check")
def catalog_check(
    store: StorePath,
    catalog: Catalogs = None,
    fmt: Annotated[
        FilesFormat,
        typer.Option("--format", help="table for reading, csv or json for other tools."),
    ] = FilesFormat.table,
) -> None:
    """Check the catalog against a store's own logs, to correct a guess in minutes.

    No public Hyper-V host log exists, so many host entries are inferred. Prints, per
    catalog entry that matched events, how many of each payload field it expects came out
    empty; then the Hyper-V events no entry knows, and whether the firewall events' local
    and remote sides look the right way round; then each misfit in words. Write the
    corrected entries into a TOML file and pass it with --catalog (here, and to analyze).
    Exit code 0 when the catalog fits, 1 when something does not, 2 on error.
    """
    from pipeline.catalog import load_catalog
    from pipeline.catalog_check import check_store as check_catalog
    from pipeline.cli.output import emit, warn_incomplete
    from pipeline.store import open_store, scan_events

    store = _store(store)
    warn_incomplete(open_store(store))
    result = check_catalog(scan_events(store), load_catalog(tuple(catalog or ())))
    emit(
        result.fields,
        fmt.value,
        ["provider", "event_id", "kind", "confidence", "events", "payload", "empty"],
    )
    if not result.unknown.is_empty():
        emit(result.unknown, fmt.value, ["provider", "event_id", "channel", "events"])
    problems = result.problems()
    for line in problems:
        typer.echo(f"misfit: {line}")
    raise typer.Exit(EXIT_PARTIAL if problems else EXIT_OK)


@app.command()
def correlate(
    store: StorePath,
    out: OutFolder,
    host: Hosts = None,
    guest: Guests = None,
    map_file: MapFile = None,
    clock_offset: ClockOffsets = None,
    tolerance: Tolerance = None,
    catalog: Catalogs = None,
    excel: Excel = False,
) -> None:
    """Find migrations, match guests, measure quarantine windows and give a verdict.

    Writes migrations, blocked and machines as Parquet and CSV, and findings.json, to --out.
    Exit code 0: every stored file was read in full; 1: some records were unreadable, or
    the store is incomplete (an ingest into it did not finish; the verdict stands on the
    rest); 2: fatal.
    """
    from pipeline.analyze import STORE_FOLDER, AnalyzeSettings, correlate_store
    from pipeline.case import check_no_case
    from pipeline.cli.output import echo_earlier_problems, print_verdict, warn_incomplete
    from pipeline.outputs import integrity, write_outputs
    from pipeline.store import open_store, scan_files

    check_no_case(out, STORE_FOLDER)
    settings = AnalyzeSettings(
        correlate=correlate_settings(host, guest, map_file, clock_offset, tolerance),
        catalogs=tuple(catalog or ()),
    )
    store = _store(store)
    note = warn_incomplete(open_store(store))
    result = correlate_store(store, settings)
    files = scan_files(store).collect()
    write_outputs(result, out, files, note, excel)
    echo_earlier_problems(files, ())
    print_verdict(result, out)
    partial = note or integrity(files)["files_with_problems"]
    raise typer.Exit(EXIT_PARTIAL if partial else EXIT_OK)


@app.command()
def analyze(
    bundles: Annotated[
        list[Path],
        typer.Argument(
            help="The bundle: .evtx files, folders (one per machine is usual) and archives.",
            show_default=False,
            readable=False,  # an unreadable input: counted and named, not a usage error
        ),
    ],
    out: OutFolder,
    engine: EngineOption = DEFAULT_ENGINE,
    jobs: Jobs = None,
    guest_tz: GuestTz = None,
    firewall_computer: FirewallComputer = None,
    host: Hosts = None,
    guest: Guests = None,
    map_file: MapFile = None,
    clock_offset: ClockOffsets = None,
    tolerance: Tolerance = None,
    catalog: Catalogs = None,
    tz: DisplayTz = "UTC",  # type: ignore[assignment]  # typer parses the default too
    max_ratio: MaxRatio = Limits.max_ratio,
    max_extract_gib: MaxExtractGib = Limits.max_total_bytes / (1 << 30),
    min_free_gib: MinFreeGib = Limits.min_free_bytes / (1 << 30),
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only the verdict table, no progress bar.")
    ] = False,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the verdict and each migration's as JSON on stdout (for scripts), "
            "instead of the table; no progress bar.",
        ),
    ] = False,
    add: Annotated[
        bool,
        typer.Option(
            "--add",
            help="The inputs are late logs of the case already in --out (the host logs that "
            "came a day after the guest's): add them to it. Without it, other inputs into a "
            "used --out are refused.",
        ),
    ] = False,
    excel: Excel = False,
    password: Password = None,
) -> None:
    """The main job: read a bundle, correlate, and say whether a migration cut a VM off.

    Example: lmtrace analyze examples/bundles/quarantine-bug --out out/quarantine-bug

    --out is one case: run the same inputs again into it at will (with a corrected
    --guest-tz, --engine or --firewall-computer the logs are read again); logs that arrive
    later join it with --add; other inputs belong in another --out.

    Writes OUT/store (the events), findings.json, migrations/blocked/machines tables and the
    report. Exit code 0: every file of the case read; 1: something unreadable, by this run or
    an earlier one into --out (named on stderr; the verdict stands on the rest); 2: fatal.
    """
    from rich.progress import BarColumn, DownloadColumn, TextColumn

    from parsers.evtx_reader import ReadSettings
    from parsers.pfirewall import PfirewallSettings
    from pipeline.analyze import AnalyzeSettings
    from pipeline.analyze import analyze as run_analyze
    from pipeline.cli.output import (
        IngestBar,
        echo_earlier_problems,
        echo_problems,
        print_verdict,
        stderr_progress,
        verdict_summary,
    )
    from pipeline.printable import printable
    from pipeline.timeline import TimelineSettings

    settings = AnalyzeSettings(
        read=ReadSettings(engine=engine),
        firewall=PfirewallSettings(tz=guest_tz, computer=firewall_computer),
        correlate=correlate_settings(host, guest, map_file, clock_offset, tolerance),
        catalogs=tuple(catalog or ()),
        limits=archive_limits(max_ratio, max_extract_gib, min_free_gib),
        jobs=jobs,
        timeline=TimelineSettings(zone=tz),
        excel=excel,
        add=add,
        password=password,
    )
    columns = (TextColumn("{task.description:>12}"), BarColumn(), DownloadColumn())
    with stderr_progress(*columns, quiet=quiet or json_out) as bar:
        analysis = run_analyze(bundles, out, settings, IngestBar(bar))
    if analysis.case is not None and analysis.case.reread:
        typer.echo(
            f"lmtrace: note: {out}: read again, {len(analysis.case.inputs)} input(s), because "
            + "; ".join(analysis.case.reread),
            err=True,
        )
    echo_problems(analysis.ingest.outcomes)
    echo_earlier_problems(analysis.files, analysis.ingest.outcomes)
    if analysis.incomplete:
        typer.echo(
            f"lmtrace: warning: {printable(out)}: {printable(analysis.incomplete)}", err=True
        )
    if json_out:
        typer.echo(json.dumps(verdict_summary(analysis), indent=2, default=str))
        raise typer.Exit(analysis.exit_code)
    print_verdict(analysis.result, out)
    for page in ("report.html", "report.md", "timeline.html"):
        if (out / page).is_file():
            typer.echo(f"{page}: {out / page}")
    raise typer.Exit(analysis.exit_code)


@app.command()
def simulate(
    scenario: Annotated[
        str,
        typer.Option(
            help="Scenario preset of pipeline/simulate/scenarios.toml (docs/simulate.md), e.g. "
            "quarantine-bug or healthy; a wrong name lists the valid ones."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Bundle folder to write (one folder per machine).", callback=remember_target
        ),
    ],
    seed: Annotated[int, typer.Option(help="Random seed: same arguments + seed, same bytes.")] = 0,
    hosts: Annotated[
        int | None, typer.Option(help="Hyper-V hosts (>= 2). (default: the scenario's)")
    ] = None,
    vms: Annotated[
        int | None, typer.Option(help="VMs, each with one guest. (default: the scenario's)")
    ] = None,
    migrations: Annotated[
        int | None, typer.Option(help="Live migrations. (default: the scenario's)")
    ] = None,
    guest_clock_offset: Annotated[
        float,
        typer.Option(
            parser=parsed_as(parse_duration, "--guest-clock-offset", signed=True),
            metavar="DURATION",
            help="Guest clock minus host clock (e.g. -90s, -1m30s; -5h: 5 h behind).",
        ),
    ] = "0s",  # type: ignore[assignment]
    guest_clock_drift: Annotated[
        float, typer.Option(help="Guest clock drift against the host, ppm.")
    ] = 0.0,
    guest_clock_jump: Annotated[
        float,
        typer.Option(
            parser=parsed_as(parse_duration, "--guest-clock-jump", signed=True),
            metavar="DURATION",
            help="How far the guest clock steps when it resumes after each migration "
            "(a time-sync correction on the new host), e.g. 4s or -2m.",
        ),
    ] = "0s",  # type: ignore[assignment]
    name_mismatch: Annotated[
        bool,
        typer.Option(help="Guests log host names unlike their VM names (SQLPROD7.corp...; FQDNs)."),
    ] = False,
    load: Annotated[
        float | None,
        typer.Option(
            help="Inbound connection attempts per second per guest around a migration. "
            "(default: the scenario's)"
        ),
    ] = None,
    noise: Annotated[
        float | None,
        typer.Option(help="Background events per machine per hour. (default: the scenario's)"),
    ] = None,
    guest_tz: Annotated[
        Zone,
        typer.Option(
            parser=parsed_as(parse_zone, "--guest-tz"),
            metavar="ZONE",
            help="Guests' time zone (pfirewall.log's local times, EventLog 6013's zone); "
            "an IANA name the simulator knows the Windows name of.",
        ),
    ] = "UTC",  # type: ignore[assignment]
    pfirewall: Annotated[bool, typer.Option(help="Also write each guest's pfirewall.log.")] = False,
    size: Annotated[
        str | None,
        typer.Option(
            help="Keep the logs running after the incident (noise only) until the .evtx files "
            "total this size, e.g. 1GB (binary units); for benchmarks."
        ),
    ] = None,
    start: Annotated[
        datetime,
        typer.Option(
            parser=parsed_as(parse_utc, "--start"),
            metavar="TIME",
            help="UTC time the scenario starts; migrations follow ~10 min later.",
        ),
    ] = "2025-03-04T09:00:00Z",  # type: ignore[assignment]
    ws2022_guests: Annotated[
        int, typer.Option(help="How many guests log Windows Server 2022 WFP events (FilterOrigin).")
    ] = 0,
    multicast_drops: Annotated[
        bool | None,
        typer.Option(
            "--multicast-drops/--no-multicast-drops",
            help="Neighbours' LLMNR, mDNS, SSDP and NetBIOS packets dropped at any time, inside "
            "quarantine windows too (not quarantine impact). (default: the scenario's)",
            show_default=False,
        ),
    ] = None,
    loopback_connections: Annotated[
        bool | None,
        typer.Option(
            "--loopback-connections/--no-loopback-connections",
            help="Allowed inbound loopback connections (5156 127.0.0.2:3389 <- 127.0.0.1), "
            "inside quarantine windows too. (default: the scenario's)",
            show_default=False,
        ),
    ] = None,
    nla_chatter: Annotated[
        bool | None,
        typer.Option(
            "--nla-chatter/--no-nla-chatter",
            help="The non-classifying NetworkProfile/NCSI/Firewall events around each network "
            "change ('Identifying...' network, 4004, 2010 to no profile, 4042 Capability 0). "
            "(default: the scenario's)",
            show_default=False,
        ),
    ] = None,
    host_fqdn: Annotated[
        bool | None,
        typer.Option(
            "--host-fqdn/--no-host-fqdn",
            help="Hosts log their FQDN (HV-NODE1.corp.contoso.com) as Computer. "
            "(default: the scenario's)",
            show_default=False,
        ),
    ] = None,
    upper_case_vmids: Annotated[
        bool | None,
        typer.Option(
            "--upper-case-vmids/--no-upper-case-vmids",
            help="Host events write VMIDs in upper case, as VMMS does. (default: the scenario's)",
            show_default=False,
        ),
    ] = None,
    wfp_audit: Annotated[
        str | None,
        typer.Option(
            help="Guests' WFP auditing: full (5152, 5156, 5157), failure-only (no 5156) or off. "
            "(default: the scenario's)",
            show_default=False,
        ),
    ] = None,
    classification_logs: Annotated[
        bool,
        typer.Option(
            "--classification-logs/--no-classification-logs",
            help="Export the guests' NetworkProfile, NCSI and Firewall logs (without: only "
            "System and Security).",
        ),
    ] = True,
    guest_nics: Annotated[
        int, typer.Option(help="Network adapters per guest; each logs its own Netvsc 14.")
    ] = 1,
    extra_network_changes: Annotated[
        int,
        typer.Option(
            help="Further network-change indications per migration, 1.5-4 s apart; the bug's "
            "quarantine ends 7 s after the last."
        ),
    ] = 0,
    unrelated_machines: Annotated[
        int,
        typer.Option(
            help="Extra machine folders that are no migrated guest: another case's guest days "
            "away, a local server that logged nothing of the incident, in turn (up to 4)."
        ),
    ] = 0,
    guest_os: Annotated[
        str,
        typer.Option(
            help="The other guests' Windows Server version, as their EventLog 6013 names it: "
            "2012r2, 2016 or 2019."
        ),
    ] = "2016",
    rename_guest: Annotated[
        bool,
        typer.Option(
            help="The first guest boots under a setup name (WIN-...) and is renamed (EventLog "
            "6011) ten minutes later: one machine under two names."
        ),
    ] = False,
) -> None:
    """Write a realistic host + guest bundle and its ground_truth.json (for tests and demos)."""
    from pipeline.simulate import SimulateError, SimulateOptions, parse_size
    from pipeline.simulate import simulate as run_simulate

    try:
        size_bytes = parse_size(size) if size is not None else None
    except ValueError as e:
        raise SimulateError(f"--size: {e}") from None
    options = SimulateOptions(
        scenario=scenario, seed=seed, hosts=hosts, vms=vms, migrations=migrations,
        guest_clock_offset=guest_clock_offset, guest_clock_drift=guest_clock_drift,
        guest_clock_jump=guest_clock_jump,
        name_mismatch=name_mismatch, load=load, noise=noise, guest_tz=guest_tz.name,
        pfirewall=pfirewall, size=size_bytes, start=start,
        ws2022_guests=ws2022_guests, multicast_drops=multicast_drops,
        loopback_connections=loopback_connections, nla_chatter=nla_chatter, host_fqdn=host_fqdn,
        upper_case_vmids=upper_case_vmids, wfp_audit=wfp_audit,  # type: ignore[arg-type]
        classification_logs=classification_logs, guest_nics=guest_nics,
        extra_network_changes=extra_network_changes, unrelated_machines=unrelated_machines,
        guest_os=guest_os, rename_guest=rename_guest,
    )  # fmt: skip
    result = run_simulate(options, out)
    truth = result.ground_truth
    typer.echo(
        f"lmtrace: wrote {out} ({result.total_bytes:,} bytes of .evtx, "
        f"{len(truth['files'])} files); verdict {truth['verdict']}",  # type: ignore[arg-type]
        err=True,
    )


# ----- timeline and export (pipeline/timeline/figure.py, pipeline/export.py)


@app.command()
def timeline(
    analysis: Annotated[
        Path,
        typer.Argument(
            help="An analysis folder (lmtrace analyze --out) or a store folder.",
            callback=remember_source,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="HTML page to write (default: ANALYSIS/timeline.html, or "
            "ANALYSIS/timeline-<around>.html with --around).",
            show_default=False,
            callback=remember_target,
        ),
    ] = None,
    tz: DisplayTz = "UTC",  # type: ignore[assignment]  # typer parses the default too
    around: Annotated[
        str | None,
        typer.Option(help="Zoom on a migration id (M001, as in findings.json) or an ISO time."),
    ] = None,
    window: Window = "30s",  # type: ignore[assignment]
    image: Annotated[
        Path | None,
        typer.Option(help="Also write the figure as a static .png or .svg (needs kaleido)."),
    ] = None,
    host: Hosts = None,
    guest: Guests = None,
    map_file: MapFile = None,
    clock_offset: ClockOffsets = None,
    tolerance: Tolerance = None,
    catalog: Catalogs = None,
) -> None:
    """Draw the offline timeline page: one lane per machine, guests on the host clock.

    Re-correlates the stored events with the options lmtrace analyze saved in the folder
    (analysis.json); correlation options given here replace them all.
    Example: lmtrace timeline out/case --around M001 --window 30s --tz +01:00
    """
    from dataclasses import replace

    from pipeline.analyze import AnalyzeSettings, correlate_store, load_correlation_options
    from pipeline.cli.output import warn_incomplete
    from pipeline.store import open_store
    from pipeline.timeline import (
        TimelineSettings,
        safe_name,
        timeline_figure,
        write_static,
        write_timeline,
    )

    settings = TimelineSettings(zone=tz, around=around, window_s=window)
    store = analysis / "store" if (analysis / "store").is_dir() else analysis
    given = any((host, guest, map_file, clock_offset, tolerance is not None, catalog))
    saved = None if given else load_correlation_options(analysis)
    if saved is not None:
        typer.echo(f"lmtrace: using the correlation options saved in {analysis}", err=True)
    analyze_settings = saved or AnalyzeSettings(
        correlate=correlate_settings(host, guest, map_file, clock_offset, tolerance),
        catalogs=tuple(catalog or ()),
    )
    settings = replace(settings, warning=warn_incomplete(open_store(store)))
    result = correlate_store(store, analyze_settings)
    page = out or analysis / (f"timeline-{safe_name(around)}.html" if around else "timeline.html")
    for path in write_timeline(result, page, settings):
        typer.echo(str(path))
    if image is not None:
        figure = timeline_figure(result, settings)
        typer.echo(str(write_static(figure, image, settings.warning)))


@app.command()
def export(
    store: StorePath,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="File to write (replaced).", callback=remember_target),
    ],
    fmt: Annotated[
        ExportFormatName,
        typer.Option(
            "--format",
            help="timesketch: JSON lines Timesketch imports (a readable message, the payload "
            "as fields, plaso's field names, tags); csv: fixed columns, payload as JSON.",
        ),
    ] = ExportFormatName.timesketch,
    event_id: EventIds = None,
    channel: Channels = None,
    provider: Providers = None,
    since: Since = None,
    until: Until = None,
    excel: Excel = False,
) -> None:
    """Stream the stored events to a Timesketch JSONL or CSV file (memory stays bounded).

    Given an analysis folder (OUT or OUT/store), the analysis goes too: each migration's
    start and completion and each quarantine window's opening and closing as events, and
    the events its verdict rests on tagged with the migration id and verdict.
    Example: lmtrace export out/case --format timesketch --out case.jsonl
    """
    from pipeline.cli.output import warn_incomplete
    from pipeline.export import ExportFormat, export_store
    from pipeline.printable import printable
    from pipeline.store import open_store

    warn_incomplete(open_store(_store(store)))
    chosen = event_filter(event_id, channel, provider, since, until)
    summary = export_store(store, ExportFormat(fmt.value), out, chosen, excel)
    for note in summary.notes:
        typer.echo(f"lmtrace: note: {printable(note)}", err=True)
    typer.echo(
        f"{summary.path}: {summary.rows:,} events as {summary.fmt.value}"
        + (f"; {summary.without_time:,} without a time left out" if summary.without_time else ""),
        err=True,
    )


@app.command()
def batch(
    bundles: Annotated[
        list[Path],
        typer.Argument(
            help="One bundle each (a folder or an archive); sweep an archive with: archive/*",
            show_default=False,
            readable=False,  # an unreadable input: counted and named, not a usage error
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for all results; re-run to resume.",
            callback=remember_target,
        ),
    ],
    jobs: Annotated[
        int | None,
        typer.Option(min=1, help="Bundles analysed at once (default: the number of CPUs)."),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="tcp://HOST:PORT of a Dask scheduler: run on its workers instead (they must "
            "see the bundles and --out at the same paths)."
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            parser=parsed_as(parse_duration, "--timeout"),
            metavar="DURATION",
            help="How long one bundle may take before it fails: 30m, 1h, 90s.",
        ),
    ] = "30m",  # type: ignore[assignment]
    max_memory: Annotated[
        int, typer.Option(min=64, help="MB of memory one bundle's analysis may use.")
    ] = 2048,
    force: Annotated[
        bool, typer.Option("--force", help="Analyse again even bundles already done.")
    ] = False,
    engine: EngineOption = DEFAULT_ENGINE,
    guest_tz: GuestTz = None,
    firewall_computer: FirewallComputer = None,
    catalog: Catalogs = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    json_out: JsonSummary = False,
    password: Password = None,
) -> None:
    """Analyse many bundles, each on its own: a summary table and an overview page.

    Example: lmtrace batch archive/* --out sweep --jobs 4

    Writes OUT/summary.parquet, OUT/summary.csv, OUT/index.html and one folder per bundle
    under OUT/bundles. Bundles already analysed (same bytes, lmtrace version and options)
    are reused. Exit code 0: every bundle read in full; 1: a bundle failed or was partly
    unreadable (the others are done); 2: fatal.
    """
    import polars as pl
    from rich.progress import BarColumn, DownloadColumn, TextColumn

    from parsers.evtx_reader import ReadSettings
    from parsers.pfirewall import PfirewallSettings
    from pipeline.analyze import AnalyzeSettings
    from pipeline.batch import BatchSettings, run_batch
    from pipeline.cli.output import BatchBar, batch_summary_line, stderr_progress
    from pipeline.printable import printable, printable_json

    settings = BatchSettings(
        analyze=AnalyzeSettings(
            read=ReadSettings(engine=engine),
            firewall=PfirewallSettings(tz=guest_tz, computer=firewall_computer),
            catalogs=tuple(catalog or ()),
            password=password,
        ),
        jobs=jobs or os.cpu_count() or 1,
        scheduler=scheduler,
        timeout_s=timeout,
        max_memory_mb=max_memory,
        force=force,
    )
    with stderr_progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), quiet=quiet
    ) as bar:
        result = run_batch(bundles, out, settings, BatchBar(bar))
    for row in result.summary.filter(pl.col("status") != "ok").iter_rows(named=True):
        said = "note" if row["status"] == "skipped" else row["status"]
        typer.echo(
            f"lmtrace: {said}: {printable(row['input'])}: {printable(row['error'])}", err=True
        )
    if json_out:
        typer.echo(printable_json(json.dumps(result.to_dict(), indent=2, default=str)))
    elif not quiet:
        typer.echo(batch_summary_line(result, out))
    raise typer.Exit(result.exit_code)
