"""Correlation: from stored events to migrations, guest windows and a verdict.

This module only orders the steps; each step lives in the module named for it:
catalog (tag events with kinds) -> machines (roles, coverage) -> migrations (host
events to migration records) -> matching (VM to guest, clock offsets) ->
quarantine (windows, blocked traffic) -> findings (verdict, gaps, remediation).
The result is one :class:`Correlation` value that every renderer reads; nothing
downstream recomputes a fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import polars as pl

from parsers.pfirewall import PROVIDER as PFIREWALL
from pipeline import (
    catalog_check,
    findings,
    firewall_zone,
    fix_status,
    guest_clock,
    machine_facts,
    machines,
    matching,
    migrations,
    quarantine,
)
from pipeline.catalog import Catalog, ModelParams, known, tag
from pipeline.catalog_check import CatalogCheck
from pipeline.matching import MatchSettings
from pipeline.verdict_table import load_table

WINDOW_COLUMNS = (
    "migration_id",
    "q0",
    "q0_host",
    "q_end",
    "q_end_host",
    "q_duration_s",
    "quarantine_class",
    "end_evidence",
    "blocked_inbound",
    "blocked_tcp",
    "blocked_udp",
    "blocked_other",
    "quarantine_default_drops",
    "blocked_out_of_scope",
    "blocked_events",
    "blocked_until_s",
    "network_changes",
    "last_change_at",
    "trigger_ref",
    "end_ref",
    "trigger_match",
)


@dataclass(frozen=True)
class CorrelateSettings:
    """User knowledge that overrides what the logs suggest."""

    hosts: Sequence[str] = ()
    guests: Sequence[str] = ()
    match: MatchSettings = field(default_factory=MatchSettings)


@dataclass(frozen=True)
class Correlation:
    """Every fact the reports show, computed once."""

    machines: pl.DataFrame
    coverage: pl.DataFrame
    migrations: pl.DataFrame  # one row per migration, with guest, offset, window, verdict
    blocked: pl.DataFrame  # one row per blocked inbound event inside a window
    context: pl.DataFrame  # catalog events near any migration, on both clocks, for timelines
    summary: findings.Summary
    clock_changes: pl.DataFrame  # Kernel-General 1 per machine: old/new time, delta, reason
    notes: tuple[str, ...]  # what the reader should know, e.g. which zone placed pfirewall.log
    aliases: dict[str, str]  # earlier short names of renamed computers -> machine (6011)
    catalog_check: CatalogCheck  # how the catalog fit these logs (a wrong guess shows here)
    catalog_files: tuple[str, ...]
    model: ModelParams  # the catalog's parameters this was computed with (timelines use them)
    generated_at: datetime


def _machine(renamed: dict[str, str]) -> pl.Expr:
    return machines.machine_of(pl.col("computer"), renamed).alias("machine")


def _logging(events: pl.LazyFrame, catalog: Catalog, renamed: dict[str, str]) -> pl.Series:
    """The machines that logged any event of ``catalog`` over the whole bundle (no payload
    is read): whether a guest's drops are observable does not depend on when it dropped."""
    return (
        known(events, catalog)
        .select(_machine(renamed))
        .unique()
        .collect(engine="streaming")["machine"]
    )


def _bundle_facts(
    cover: pl.DataFrame,
    traffic_logged: pl.Series,
    triggers: pl.DataFrame,
    candidates: pl.DataFrame,
    catalog: Catalog,
    nameless: pl.DataFrame,
) -> findings.BundleFacts:
    model = catalog.model

    def channels_of(kinds: Sequence[str]) -> list[str]:
        return sorted({(e.channel or "").lower() for e in catalog.entries_of(*kinds)} - {""})

    host_channels = {
        (e.channel or "").lower() or e.provider.lower()
        for e in catalog.events
        if e.kind.startswith("migration.")
    }

    lower_channel = pl.col("channel").str.to_lowercase()
    trigger_logged = cover.filter(lower_channel.is_in(channels_of(model.trigger_kinds))).select(
        "machine", "first_ts", "last_ts"
    )
    security = cover.filter(lower_channel.is_in(channels_of(model.blocked_kinds)))[
        "machine"
    ].unique()
    classification_logs = (
        cover.group_by("machine")
        .agg(
            pl.col("first_ts")
            .filter(lower_channel.is_in(channels_of(model.end_kinds)))
            .min()
            .alias("logged_from"),
            pl.col("last_ts").max().alias("last_seen"),
        )
        .filter(pl.col("logged_from").is_not_null())
    )
    # Host migration events are matched by provider (their channels are not in the
    # catalog): a host exported them if any channel it exported is named after one.
    host_logs = (
        cover.filter(
            pl.any_horizontal(
                pl.col("channel").str.to_lowercase().str.starts_with(c)
                for c in sorted(host_channels)
            )
        ).height
        > 0
    )
    return findings.BundleFacts(
        trigger_logged=trigger_logged,
        drops_observable=traffic_logged,
        security_exported=security,
        classification_logs=classification_logs,
        triggers=triggers.select("machine", "timestamp"),
        candidates=candidates,
        host_logs=host_logs,
        unnamed_firewall=(nameless["channel"] == PFIREWALL).any(),
    )


CONTEXT_COLUMNS = (
    "machine",
    "computer",
    "role",
    "timestamp",
    "timestamp_host",
    "kind",
    "event_id",
    "provider",
    "channel",
    "vm_name",
    "nic_name",
    "protocol",
    "local_port",
    "remote_address",
    "inbound",
    "interface",
    "profile",
    "source_path",
    "member",
    "record_id",
)


_EVENT_ORDER = ["timestamp_host", "machine", "channel", "source_path", "member", "record_id"]
"""A total order of context events: time first, then which log, then where in it."""


def _merged_spans(frame: pl.DataFrame, begin: pl.Expr, end: pl.Expr) -> pl.DataFrame:
    """Time spans ``_from`` - ``_to`` per row of ``frame``, overlapping ones merged, sorted:
    an event then needs one as-of lookup, or one range test per span."""
    spans = frame.select(begin.alias("_from"), end.alias("_to")).drop_nulls().sort("_from")
    return (
        spans.with_columns(
            (pl.col("_from") > pl.col("_to").cum_max().shift(1))
            .fill_null(True)
            .cum_sum()
            .alias("_g")
        )
        .group_by("_g")
        .agg(pl.col("_from").min(), pl.col("_to").max())
        .select("_from", "_to")
        .sort("_from")
    )


def _near_migrations(
    migs: pl.DataFrame, model: ModelParams, match: MatchSettings, stepped_s: float
) -> pl.Expr:
    """Events whose time could place them in a quarantine window or a timeline of some
    migration, whatever the logging guest's clock offset (estimated: up to
    ``max_clock_offset_s`` plus a clock jump, plus ``stepped_s``, the most any guest's
    logged clock steps add up to; given with --clock-offset: any size)."""
    given = max((abs(s) for s in match.clock_offsets.values()), default=0.0)
    reach_s = (
        max(model.max_clock_offset_s, given)
        + stepped_s
        + model.clock_jump_max_s
        + model.netvsc_lag_max_s
        + 2 * model.window_max_s
    )
    reach = pl.duration(microseconds=reach_s * 1e6)
    spans = _merged_spans(
        migs, pl.coalesce("start", "end") - reach, pl.coalesce("end", "start") + reach
    )
    return pl.any_horizontal(
        pl.lit(False),
        *(pl.col("timestamp").is_between(a, b) for a, b in spans.iter_rows()),
    )


def _context(
    tagged: pl.DataFrame,
    roles: pl.DataFrame,
    offsets: pl.DataFrame,
    logged_steps: pl.DataFrame,
    assessed: pl.DataFrame,
    blocked_kinds: Sequence[str],
    margin_s: float,
) -> pl.DataFrame:
    """Catalog events within ``margin_s`` of any migration, with guest times on the host clock
    (the guest's offset on its continuous clock, after the steps it logged).

    Inbound blocked events are left out: they have their own table. A timeline
    needs no more than this, so it never has to go back to the store.
    """
    margin = pl.duration(microseconds=margin_s * 1e6)
    spans = _merged_spans(
        assessed,
        pl.coalesce("start", "end") - margin,
        pl.max_horizontal("end", "q_end_host") + margin,
    )
    kept = tagged.filter(~(pl.col("kind").is_in(blocked_kinds) & pl.col("inbound")))
    on_continuous = guest_clock.continuous(
        kept.with_columns(pl.col("timestamp").alias("_own")), logged_steps
    )
    shifted = (
        on_continuous.join(roles.select("machine", "role"), on="machine", how="left")
        .join(offsets.select("machine", "clock_offset_s"), on="machine", how="left")
        .with_columns(
            machines.to_host_clock(
                pl.col("timestamp"), pl.col("clock_offset_s").fill_null(0.0)
            ).alias("timestamp_host"),
            pl.col("_own").alias("timestamp"),
        )
        # Ties broken down to the record: the joins above keep no row order, and events of
        # one second (pfirewall.log's resolution) must list the same way in every run.
        .sort(_EVENT_ORDER, nulls_last=True)
    )
    return (
        shifted.join_asof(spans, left_on="timestamp_host", right_on="_from", strategy="backward")
        .filter(pl.col("_to").is_not_null() & (pl.col("timestamp_host") <= pl.col("_to")))
        .select(CONTEXT_COLUMNS)
    )


def _host_names(migs: pl.DataFrame, renamed: dict[str, str]) -> dict[str, str]:
    """Lower-case host names as migrations log them (source, destination) -> machine."""
    names = pl.concat([migs["source"], migs["destination"]]).drop_nulls().unique()
    frame = pl.DataFrame({"computer": names}, schema={"computer": pl.String})
    frame = frame.with_columns(_machine(renamed))
    return dict(zip(frame["computer"].str.to_lowercase(), frame["machine"], strict=True))


_TIMELESS_NAMED = 5


def _timeless_notes(timeless: pl.DataFrame) -> list[str]:
    """A note on the events of known kinds left out because their time is unreadable."""
    if timeless.is_empty():
        return []
    named = "; ".join(
        f"{kind} in {path} record {record}"
        for kind, path, record in timeless.select("kind", "source_path", "record_id")
        .head(_TIMELESS_NAMED)
        .iter_rows()
    )
    more = timeless.height - _TIMELESS_NAMED
    return [
        f"{timeless.height} event(s) lmtrace correlates have no readable time (damaged "
        f"records) and are left out: {named}" + (f"; and {more} more" if more > 0 else "")
    ]


def _nameless_notes(nameless: pl.DataFrame) -> list[str]:
    """A note on the events that name no computer, by channel."""
    if nameless.is_empty():
        return []
    rows = nameless.select("channel", "events").iter_rows()
    channels = ", ".join(f"{c or '?'} ({n:,})" for c, n in rows)
    return [
        f"{nameless['events'].sum():,} event(s) name no computer and belong to no machine: "
        f"{channels}. A pfirewall.log takes the computer its file or folder name names, else"
        " that of the logs beside it; where neither tells one, put the computer's name in the"
        " file's name, or give it with --firewall-computer"
    ]


def _differ(windows: pl.DataFrame, other: pl.DataFrame) -> pl.Series:
    """Migrations whose quarantine differs between two measures of it: found or not, its
    class, or whether inbound packets were blocked in it."""
    facts = [pl.col("quarantine_class"), pl.col("blocked_inbound").fill_null(0) > 0]
    one = windows.select("migration_id", *facts)
    two = other.select("migration_id", *facts)
    both = one.join(two, on="migration_id", how="full", coalesce=True, nulls_equal=True)
    same = pl.col("quarantine_class").eq_missing(pl.col("quarantine_class_right")) & pl.col(
        "blocked_inbound"
    ).eq_missing(pl.col("blocked_inbound_right"))
    return both.filter(~same)["migration_id"]


def _undecided_notes(undecided: pl.DataFrame) -> list[str]:
    """A note per clock step back whose span holds events no log order placed."""
    return [
        f"{machine}: {n:,} event(s) lie in the span its clock stepped back over at "
        f"{old:%H:%M:%S} UTC, and no log's order tells whether they came before or after the "
        "step: the quarantine is measured both ways, and where the two differ, the verdict "
        "is inconclusive"
        for machine, old, n in undecided.iter_rows()
    ]


def correlate(
    events: pl.LazyFrame, catalog: Catalog, settings: CorrelateSettings = CorrelateSettings()
) -> Correlation:
    """Run every correlation step over one bundle's events."""
    model = catalog.model
    # A record whose time could not be read (damaged bytes; the files table says which)
    # cannot be placed next to anything: left out, and named where the catalog knows it.
    timeless = events.filter(pl.col("timestamp").is_null())
    if timeless.select(pl.len()).collect().item():  # rare: tagging costs a scan of every event
        timeless_known = tag(timeless, catalog)
        events = events.filter(pl.col("timestamp").is_not_null())
    else:
        timeless_known = pl.DataFrame()
    traffic_catalog, other_catalog = catalog.split(model.blocked_kinds + model.allowed_kinds)
    tagged = tag(events, other_catalog)
    # A renamed computer is one machine: every step below names machines through this.
    renamed = machines.aliases(tagged.filter(pl.col("kind") == machine_facts.RENAMED))
    # A pfirewall.log names no computer: where it lies tells whose it is, or that it cannot.
    logs, notes = machines.unnamed_logs(events, renamed)
    events = machines.attribute_unnamed(events, logs)
    tagged = machines.attribute_unnamed(tagged.lazy(), logs).collect()
    tagged = tagged.with_columns(_machine(renamed))
    facts = machine_facts.extract(tagged)
    events, zone_notes = firewall_zone.resolve(events, facts.facts, renamed)
    notes += zone_notes
    notes += _timeless_notes(timeless_known)
    cover = machines.coverage(events).with_columns(_machine(renamed))
    # Rows naming no computer (a pfirewall.log with no named log beside it) are no
    # machine: left out, and said.
    nameless = cover.filter(pl.col("computer").is_null())
    notes += _nameless_notes(nameless)
    cover = cover.filter(pl.col("computer").is_not_null())
    roles = machines.classify(cover, tagged, settings.hosts, settings.guests, renamed)
    notes += machines.given_name_notes(
        {
            "--host": (settings.hosts, "not applied"),
            "--guest": (settings.guests, "not applied"),
            "--map": (
                list(settings.match.mapping.values()),
                "its VM is matched to a guest whose logs are not here",
            ),
            "--clock-offset": (list(settings.match.clock_offsets), "not applied"),
        },
        renamed,
        roles["machine"].to_list(),
    )
    match_settings = settings.match.named_as(renamed)
    host_names = roles.filter(pl.col("role") == "host")["machine"].implode()
    guest_names = roles.filter(pl.col("role") == "guest")
    migs = migrations.reconstruct(tagged.filter(pl.col("machine").is_in(host_names)), model)

    # Firewall traffic is most of a busy guest's log (a connection per event); only what
    # lies near a migration can matter, so only that is tagged and its payload read.
    # Clock steps the guests logged (Kernel-General 1) made good: the offset search runs
    # on a continuous guest clock, and each migration's offset adds the steps before it.
    logged_steps = guest_clock.steps(facts.clock_changes)
    stepped_s = float(
        logged_steps.select((pl.col("before_s") + pl.col("delta_s")).abs().max()).item() or 0.0
    )
    near = events.filter(_near_migrations(migs, model, match_settings, stepped_s))
    tagged = pl.concat(
        [tagged, tag(near, traffic_catalog).with_columns(_machine(renamed))], how="diagonal"
    )
    # Where a guest's clock stepped back, its log's order tells which events came before.
    tagged, undecided = guest_clock.misplaced(tagged, logged_steps)
    notes += _undecided_notes(undecided)
    guest_events = tagged.filter(pl.col("machine").is_in(guest_names["machine"].implode()))
    # A machine whose Netvsc driver logged anything is a Hyper-V guest: the one fact that
    # tells a VM's guest from a physical server exported alongside it.
    virtual = guest_events.filter(pl.col("kind").str.starts_with("guest."))["machine"].unique()
    guest_names = guest_names.with_columns(
        pl.col("machine").is_in(virtual.implode()).alias("hyperv_guest")
    )
    netvsc = guest_events.filter(pl.col("kind").is_in(model.trigger_kinds))
    guest_vmids = guest_events.filter(pl.col("vmid").is_not_null()).select("machine", "vmid")
    diffs = matching.clock_differences(migs, guest_clock.continuous(netvsc, logged_steps), model)
    matches = matching.match_guests(
        migs, guest_names, diffs, guest_vmids, match_settings, model, renamed
    )
    offsets = matching.clock_offsets(diffs, matches, match_settings, model)
    pairs = guest_clock.offsets_at(
        migs.join(matches, on="vm_key", how="left").join(offsets, on="machine", how="left"),
        logged_steps,
        (settings.match.tolerance_s or model.tolerance_s) + model.netvsc_lag_max_s,
    )
    unmatched = guest_names.filter(~pl.col("machine").is_in(matches["machine"].implode()))
    covers = matching.covering(migs, unmatched, model)
    candidates = covers.filter(~pl.col("vm_key").is_in(matches["vm_key"].implode()))
    roles = machines.unrelated(roles, matches, covers, migs.height > 0)

    tolerance = settings.match.tolerance_s or model.tolerance_s
    evidence = _bundle_facts(
        cover, _logging(events, traffic_catalog, renamed), netvsc, candidates, catalog, nameless
    )

    def measured(fix: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Windows and blocked packets, the guests' events moved by ``fix`` seconds: onto
        the clock each migration's window is on (its offset holds the steps before it)."""
        on_window_clock = guest_events.with_columns(
            pl.col("timestamp") + pl.duration(microseconds=fix * 1e6)
        )
        found = quarantine.find_windows(
            pairs.select(
                "migration_id", "machine", "end", "clock_offset_s", "clock_steps_s",
                "clock_step_ref",
            ),
            on_window_clock,
            model,
            tolerance,
        )  # fmt: skip
        return quarantine.measure(
            found, on_window_clock, evidence.classification_logs, model, catalog.scopes
        )

    windows, blocked = measured(pl.col(guest_clock.FIX))  # untold sides taken as before
    window_columns = windows.select(WINDOW_COLUMNS)
    table = pairs.join(window_columns, on="migration_id", how="left").with_columns(
        pl.col("blocked_inbound", "blocked_tcp", "blocked_udp", "blocked_other").fill_null(0),
        pl.lit("told").alias("step_sides"),
    )
    if not undecided.is_empty():  # and taken as after: where the two differ, untold
        after, _ = measured(
            pl.when(pl.col(guest_clock.UNTOLD)).then(0.0).otherwise(pl.col(guest_clock.FIX))
        )
        table = table.with_columns(
            pl.when(pl.col("migration_id").is_in(_differ(windows, after).implode()))
            .then(pl.lit("untold"))
            .otherwise(pl.lit("told"))
            .alias("step_sides")
        )
    verdicts = load_table()
    assessed = findings.assess(table, evidence, catalog, verdicts).sort("migration_id")
    host_of = _host_names(assessed, renamed)
    assessed = fix_status.migration_notes(assessed, facts, host_of, catalog.fix)
    context = _context(
        tagged, roles, offsets, logged_steps, assessed, model.blocked_kinds, model.window_max_s
    )
    summary = findings.summarize(assessed, evidence, catalog, verdicts)
    summary = fix_status.amend(summary, assessed, facts, host_of, catalog.fix)
    return Correlation(
        machines=roles.join(facts.facts, on="machine", how="left"),
        coverage=cover,
        migrations=assessed,
        blocked=blocked.sort("timestamp", "source_path", "record_id"),
        context=context,
        summary=summary,
        clock_changes=facts.clock_changes.join(
            roles.select("machine", "role"), on="machine", how="left"
        ),
        notes=tuple(notes),
        aliases=renamed,
        catalog_check=catalog_check.check(tagged, events, catalog),
        catalog_files=catalog.files,
        model=model,
        generated_at=datetime.now(timezone.utc),
    )
