"""The verdict: per migration and per bundle, with reasons, gaps and remediation.

A verdict is only as good as the logs behind it. This module turns each migration's
correlation into the named facts of ``verdicts.toml`` (was a completion logged,
which guest, does its System log cover the moment, was the trigger found, what
the clock offset rests on, how the window ended, could drops be seen, were any)
and takes the verdict, the reason and what to collect from the first row of that
table whose facts hold. The table is the one place the rules are written; the
simulator's ground truth applies the same table to what it made happen.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.catalog import Catalog
from pipeline.machines import to_guest_clock
from pipeline.matching import OFFSET_BASES
from pipeline.quarantine import CLASS_WORDS, END_WORDS, starts_a_chain
from pipeline.verdict_table import Row, VerdictTable
from pipeline.wording import clock_words_expr

CANDIDATE_TRIGGERS = 3
"""How many Netvsc 14 a reason names when one of them may be the trigger."""


@dataclass(frozen=True)
class BundleFacts:
    """What the bundle's logs can show at all, per machine, beside the correlation."""

    trigger_logged: pl.DataFrame  # machine, first_ts, last_ts of the trigger's channel(s)
    drops_observable: pl.Series  # machines with WFP audit events or pfirewall lines
    security_exported: pl.Series  # machines with a Security log at all
    classification_logs: pl.DataFrame  # machine, logged_from, last_seen (quarantine.measure)
    triggers: pl.DataFrame  # machine, timestamp: every guest's Netvsc 14
    candidates: pl.DataFrame  # vm_key, machine: unmatched guests whose logs cover the VM
    host_logs: bool  # some machine exported Hyper-V migration channels
    unnamed_firewall: bool = False  # a pfirewall.log no place told the machine of (its lines
    # may be the drops a guest lacks: machines.unnamed_logs)


def _words(mapping: dict[str, str], column: str, **values: float) -> pl.Expr:
    return pl.col(column).replace_strict(
        {k: v.format(**values) for k, v in mapping.items()}, default=pl.col(column)
    )


def _unexplained_changes(
    table: pl.DataFrame, triggers: pl.DataFrame, timeout_s: float
) -> pl.DataFrame:
    """machine, timestamp: the network changes (the first Netvsc 14 of each chain) that
    no migration's quarantine starts at. Each may be a migration's trigger at another
    clock offset than the one its migration was searched at."""
    starts = triggers.select("machine", "timestamp").sort("machine", "timestamp")
    paired = table.select("machine", pl.col("q0").alias("timestamp")).drop_nulls()
    return starts.filter(starts_a_chain(timeout_s)).join(
        paired, on=["machine", "timestamp"], how="anti"
    )


def _candidate_triggers(table: pl.DataFrame, unexplained: pl.DataFrame) -> pl.DataFrame:
    """migration_id -> for a migration whose trigger was not found, the guest's
    unexplained network changes nearest the completion, each with the ``--clock-offset``
    that would make it the trigger (text)."""
    return (
        table.filter(pl.col("q0").is_null())
        .select("migration_id", "machine", "end")
        .drop_nulls()
        .join(unexplained, on="machine")
        .with_columns(
            ((pl.col("timestamp") - pl.col("end")).dt.total_milliseconds() / 1000).alias("_d")
        )
        .sort(pl.col("_d").abs())
        .group_by("migration_id", maintain_order=True)
        .head(CANDIDATE_TRIGGERS)
        .group_by("migration_id", maintain_order=True)
        .agg(
            pl.format(
                "{} UTC (--clock-offset {}={}s)",
                pl.col("timestamp").dt.strftime("%Y-%m-%d %H:%M:%S"),
                pl.col("machine"),
                pl.when(pl.col("_d") >= 0).then(pl.lit("+")).otherwise(pl.lit(""))
                + pl.col("_d").round(1).cast(pl.String),
            )
            .str.join("; ")
            .alias("trigger_candidates")
        )
    )


def _facts(table: pl.DataFrame, facts: BundleFacts, catalog: Catalog) -> pl.DataFrame:
    """The named facts of verdicts.toml as columns, and the words the reasons use."""
    model = catalog.model
    offset_known = pl.col("clock_offset_s").is_not_null()
    # Where the offset could not be measured (the guest logged no Netvsc 14 near any
    # migration), equal clocks are assumed for coverage, and the reason says so. A log
    # exported after the migration with a clock far ahead would end "before" it; a clock
    # far behind still puts the moment inside a log that goes on after it.
    at_guest = to_guest_clock(pl.col("end"), pl.col("clock_offset_s").fill_null(0.0))
    covers = (pl.col("first_ts") <= at_guest) & (pl.col("last_ts") >= at_guest)
    covered = (
        table.select("migration_id", "machine", "end", "clock_offset_s")
        .join(facts.trigger_logged, on="machine", how="left")
        .group_by("migration_id")
        .agg(covers.fill_null(False).any().alias("_covered"))
    )
    candidates = facts.candidates.group_by("vm_key").agg(
        pl.col("machine").sort().str.join(", ").alias("candidates")
    )
    unexplained = _unexplained_changes(table, facts.triggers, model.safety_timeout_s)
    # A given offset is the user's word, and a sign or unit slip is easy: where the guest
    # logged network changes that no migration explains, the absence of one where that
    # offset points proves nothing. A measured offset rests on the logs themselves.
    given = pl.col("offset_basis") == "given"
    doubted = given & pl.col("machine").is_in(unexplained["machine"].unique().implode())
    logging_triggers = facts.triggers["machine"].unique().implode()
    blocked_seen = pl.col("machine").is_in(facts.drops_observable.implode())
    drops_words = (
        pl.when(~blocked_seen & pl.lit(facts.unnamed_firewall))
        .then(
            pl.lit(
                "blocked traffic cannot be seen: a pfirewall.log of the bundle is no machine's"
                " (the notes name the computers it may be; --firewall-computer says which)"
            )
        )
        .when(~blocked_seen & pl.col("machine").is_in(facts.security_exported.implode()))
        .then(pl.lit("blocked traffic cannot be seen: the Security log holds no WFP audit events"))
        .when(~blocked_seen)
        .then(pl.lit("blocked traffic cannot be seen: no Security log or pfirewall.log"))
        .otherwise(pl.lit("no inbound connection was blocked in it while auditing was on"))
    )
    offset_text = pl.when(pl.col("clock_offset_s") >= 0).then(pl.lit("+")).otherwise(pl.lit(""))
    offset_value = offset_text + pl.col("clock_offset_s").round(1).cast(pl.String) + pl.lit("s")
    return (
        table.join(covered, on="migration_id", how="left")
        .join(candidates, on="vm_key", how="left")
        .join(_candidate_triggers(table, unexplained), on="migration_id", how="left")
        .with_columns(
            pl.col("end").is_not_null().alias("completion"),
            pl.when(pl.col("machine").is_not_null())
            .then(pl.lit("matched"))
            .when(pl.col("candidates").is_not_null())
            .then(pl.lit("candidates"))
            .otherwise(pl.lit("none"))
            .alias("guest"),
            pl.when(pl.col("_covered").fill_null(False))
            .then(pl.lit("covers"))
            .otherwise(pl.lit("missing"))
            .alias("trigger_log"),
            pl.col("q0").is_not_null().alias("network_change"),
            pl.when((offset_known & ~doubted) | ~pl.col("machine").is_in(logging_triggers))
            .then(pl.lit("complete"))
            .otherwise(pl.lit("incomplete"))
            .alias("trigger_search"),
            # A lone far pair is a guess; a guest whose every migration meets a Netvsc 14
            # right after it (clock steps between them allowed) is a pattern, not luck.
            pl.when(
                (pl.col("offset_basis") == "one-pair")
                & (pl.col("q0").is_not_null().sum().over("machine") < 2)
            )
            .then(pl.lit("guess"))
            .otherwise(pl.lit("known"))
            .alias("clock"),
            pl.col("quarantine_class").alias("window"),
            blocked_seen.alias("drops_observable"),
            (pl.col("blocked_inbound") > 0).alias("blocked"),
            # The words the reasons are made of.
            pl.col("end").dt.strftime("%Y-%m-%d %H:%M:%S UTC").alias("end_text"),
            _words(CLASS_WORDS, "quarantine_class").alias("window_words"),
            _words(END_WORDS, "end_evidence", timeout=model.safety_timeout_s).alias("end_words"),
            drops_words.alias("drops_words"),
            pl.when(blocked_seen)
            .then(
                pl.format(
                    "{} inbound packets dropped meanwhile, as designed", pl.col("blocked_inbound")
                )
            )
            .otherwise(drops_words)
            .alias("dropped_meanwhile"),
            pl.format(
                "{}, which rests on {}",
                clock_words_expr(pl.col("clock_offset_s")),
                _words(OFFSET_BASES, "offset_basis"),
            ).alias("offset_words"),
            offset_value.alias("clock_offset_text"),
            pl.when(given)
            .then(pl.format("the --clock-offset given ({}) puts none there", offset_value))
            .otherwise(pl.lit("its clock offset is not known"))
            .alias("offset_doubt"),
            pl.when(offset_known)
            .then(pl.lit(""))
            .otherwise(
                pl.lit(" (the guest's clock offset could not be measured; equal clocks assumed)")
            )
            .alias("offset_note"),
        )
        .drop("_covered")
    )


def _reason(row: Row) -> pl.Expr:
    """The row's reason template as one expression over the frame's columns."""
    pieces = []
    rest = row.reason
    for name in row.placeholders():
        before, rest = rest.split("{" + name + "}", 1)
        value = pl.col(name)
        if name == "q_duration_s":
            value = value.round(1)
        pieces += [pl.lit(before), value.cast(pl.String).fill_null("?")]
    return pl.concat_str([*pieces, pl.lit(rest)])


def assess(
    table: pl.DataFrame, facts: BundleFacts, catalog: Catalog, verdicts: VerdictTable
) -> pl.DataFrame:
    """Add the facts, ``rule`` (the verdicts.toml row that decided), ``verdict``,
    ``reason`` and ``collect`` (hint ids) to each migration row."""
    rows = verdicts.migration
    framed = _facts(table, facts, catalog).with_columns(verdicts.rule_of(rows))
    # What would make drops visible: auditing, or the Security log itself; nothing when
    # they were visible all along (none arrived).
    drops_hint = (
        pl.when(pl.col("drops_observable"))
        .then(pl.lit(None, pl.String))
        .when(pl.col("machine").is_in(facts.security_exported.implode()))
        .then(pl.lit("wfp-audit"))
        .otherwise(pl.lit("guest-security"))
    )

    def by_rule(values: dict[str, pl.Expr]) -> pl.Expr:
        expr = pl.when(pl.lit(False)).then(None)
        for rule_id, value in values.items():
            expr = expr.when(pl.col("rule") == rule_id).then(value)
        return expr

    collect = {
        r.id: pl.concat_list(
            [drops_hint if c == "__drops" else pl.lit(c) for c in r.collect]
            or [pl.lit(None, pl.String)]
        ).list.drop_nulls()
        for r in rows
    }
    return framed.with_columns(
        by_rule({r.id: pl.lit(r.verdict) for r in rows}).alias("verdict"),
        by_rule({r.id: _reason(r) for r in rows}).alias("reason"),
        by_rule(collect).alias("collect"),
    ).drop(REASON_PARTS)


REASON_PARTS = (
    "end_text",
    "drops_words",
    "dropped_meanwhile",
    "offset_words",
    "clock_offset_text",
    "offset_note",
    "offset_doubt",
)
"""Words only the reasons are made of; the reason holds them, the tables do not repeat
them. (``window_words`` and ``end_words`` stay: the reports and the timeline show them.)"""


def _unexplained(triggers: pl.DataFrame) -> list[str]:
    """One line per guest that logged network changes no migration explains: 'at' one
    time when they all fall in one second (a single event), else 'between' two."""
    first = pl.col("first").dt.strftime("%Y-%m-%d %H:%M:%S")
    last = pl.col("last").dt.strftime("%Y-%m-%d %H:%M:%S")
    return (
        triggers.group_by("machine")
        .agg(
            pl.len().alias("n"),
            pl.col("timestamp").min().alias("first"),
            pl.col("timestamp").max().alias("last"),
        )
        .sort("machine")
        .select(
            pl.format(
                "{} logged {} network-change event{} (Netvsc 14) {} UTC that no migration in"
                " the bundle explains",
                "machine",
                "n",
                pl.when(pl.col("n") == 1).then(pl.lit("")).otherwise(pl.lit("s")),
                pl.when(first == last)
                .then(pl.format("at {}", first))
                .otherwise(pl.format("between {} and {}", first, last)),
            )
        )
        .to_series()
        .to_list()
    )


@dataclass(frozen=True)
class Summary:
    """Everything the renderers need, computed once (habit 9: one source, many renderers)."""

    verdict: str
    reasons: list[str]
    collect: list[dict[str, str]]
    remediation: list[dict[str, object]]
    rule: str | None = None  # the bundle rule of verdicts.toml, when no migration decided


def summarize(
    assessed: pl.DataFrame, facts: BundleFacts, catalog: Catalog, verdicts: VerdictTable
) -> Summary:
    """Bundle verdict, the reasons behind it, what to collect, and what to do.

    With migrations, the bundle takes the gravest verdict of its migrations. Without
    any, the table's bundle rows decide from what the hosts' logs cover, and the
    guests' network-change events are listed: they are all such a bundle can show.
    """
    rule = None
    hint_ids = set(assessed["collect"].explode().drop_nulls().to_list())
    if assessed.is_empty():
        bundle_facts = {
            "host_logs": facts.host_logs,
            "unexplained_changes": not facts.triggers.is_empty(),
        }
        decided = next(r for r in verdicts.bundle if r.holds(bundle_facts))
        verdict, rule = decided.verdict, decided.id
        reasons = [
            decided.reason
            + ("" if facts.host_logs else " (no Hyper-V host exported migration logs)")
        ]
        reasons += _unexplained(facts.triggers)
        hint_ids.add("host-vmms")
    else:
        verdict = verdicts.gravest(assessed["verdict"].to_list(), default="inconclusive")
        reasons = assessed.filter(pl.col("verdict") == verdict)["reason"].to_list()
    collect = [
        {"id": h.id, "when": h.when, "how": h.how} for h in catalog.collect if h.id in hint_ids
    ]
    remediation: list[dict[str, object]] = []
    if verdict in verdicts.cut_off:
        remediation = [
            {
                "id": r.id,
                "where": r.where,
                "permanent": r.permanent,
                "title": r.title,
                "steps": list(r.steps),
                "effect": r.effect,
                "tradeoff": r.tradeoff,
                "confidence": r.confidence,
            }
            for r in catalog.remediation
        ]
    return Summary(verdict, reasons, collect, remediation, rule)
