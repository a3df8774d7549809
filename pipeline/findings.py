"""The verdict: per migration and per bundle, with reasons, gaps and remediation.

A verdict is only as good as the logs behind it, so every rule below names what
it rests on, and an absence of evidence never becomes "not affected" unless the
log that would hold the evidence was exported and covers the moment:

========================================================  ===============
per migration (first rule that applies wins)              verdict
========================================================  ===============
no completion or failure event                            inconclusive
no guest matched to the VM                                inconclusive
guest's trigger log (System) absent or not covering it    inconclusive
no Netvsc 14 near the completion                          not-affected
safety-timeout or prolonged window with inbound drops     affected
drops observable, window normal or none                   not-affected
safety-timeout signature, drops not observable or none    likely-affected
anything else                                             inconclusive
========================================================  ===============

"Drops observable" means the guest logged WFP audit events (5152/5156/5157) or
pfirewall.log lines at all; a Security log without them means auditing was off.
The bundle takes the gravest verdict of its migrations in the order affected,
likely-affected, inconclusive, not-affected; a bundle without any migration is
inconclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.catalog import Catalog
from pipeline.machines import to_guest_clock

VERDICTS = ("affected", "likely-affected", "inconclusive", "not-affected")


@dataclass(frozen=True)
class GuestFacts:
    """What each guest exported, as polars Series of machine names."""

    trigger_logged: pl.DataFrame  # machine, first_ts, last_ts of the trigger's channel(s)
    drops_observable: pl.Series  # machines with WFP audit events or pfirewall lines
    security_exported: pl.Series  # machines with a Security log at all
    end_logged: pl.Series  # machines that logged classification events at all


Rule = tuple[pl.Expr, str, pl.Expr, list[str]]

_END_WORDS = {
    "timeout-bracketed": "the safety timeout (between the last drop and the first allowed)",
    "inferred-timeout": "nothing: no classification followed, so the safety timeout applies",
    "allowed-inbound": "inbound traffic being allowed again",
    "last-drop": "the last drop (nothing logged why)",
}


def _end_words() -> pl.Expr:
    """What closed a window, in words; classification events by their catalog kind."""
    return pl.col("end_evidence").replace_strict(
        _END_WORDS,
        default=pl.concat_str(pl.lit("network classification ("), "end_evidence", pl.lit(")")),
        return_dtype=pl.String,
    )


def _rule_table(catalog: Catalog) -> tuple[list[Rule], pl.Expr]:
    """(condition, verdict, reason, hints to collect) in order; the first true one applies.

    The hint id ``__drops`` stands for the second value: which log to collect so
    that blocked traffic becomes visible (auditing, or the Security log itself).
    """
    model = catalog.model
    drops_missing_hint = (
        pl.when(pl.col("_security")).then(pl.lit("wfp-audit")).otherwise(pl.lit("guest-security"))
    )
    safety = pl.col("quarantine_class") == "safety-timeout"
    return [
        (
            pl.col("end").is_null(),
            "inconclusive",
            pl.format("{}: the migration has no completion or failure event", pl.col("vm_name")),
            ["host-vmms"],
        ),
        (
            pl.col("machine").is_null(),
            "inconclusive",
            pl.format("{}: no guest in the bundle could be matched to this VM", pl.col("vm_name")),
            ["guest-logs"],
        ),
        (
            ~pl.col("_trigger_covered"),
            "inconclusive",
            pl.format(
                "{}: the guest's System log is missing or does not cover the migration at {}",
                pl.col("machine"),
                pl.col("end").dt.strftime("%Y-%m-%d %H:%M:%S UTC"),
            ),
            ["guest-system"],
        ),
        (
            pl.col("q0").is_null(),
            "not-affected",
            pl.format(
                "{}: no network-change event (Netvsc 14) in the guest after the migration:"
                " the trigger did not fire",
                pl.col("machine"),
            ),
            [],
        ),
        (
            (safety | (pl.col("quarantine_class") == "prolonged"))
            & (pl.col("blocked_inbound") > 0),
            "affected",
            pl.format(
                "{}: inbound traffic blocked for {} s after the migration ({} blocked inbound;"
                " window {}, ended by {})",
                pl.col("machine"),
                pl.col("q_duration_s").round(1),
                pl.col("blocked_inbound"),
                pl.col("quarantine_class"),
                _end_words(),
            ),
            [],
        ),
        (
            pl.col("_observable") & pl.col("quarantine_class").is_in(["normal", "none"]),
            "not-affected",
            pl.format(
                "{}: quarantine {} ({} s, ended by {}), {} blocked inbound",
                pl.col("machine"),
                pl.col("quarantine_class"),
                pl.col("q_duration_s").round(1),
                _end_words(),
                pl.col("blocked_inbound"),
            ),
            [],
        ),
        (
            safety,
            "likely-affected",
            pl.format(
                "{}: network change after the migration and no network classification for"
                " {} s (the safety-timeout signature), but blocked traffic is not visible",
                pl.col("machine"),
                pl.lit(model.safety_timeout_s),
            ),
            ["__drops"],
        ),
        (
            pl.lit(True),
            "inconclusive",
            pl.format(
                "{}: network change after the migration, but the logs cannot show how long"
                " inbound traffic was blocked",
                pl.col("machine"),
            ),
            ["__drops", "guest-classification"],
        ),
    ], drops_missing_hint


def assess(table: pl.DataFrame, facts: GuestFacts, catalog: Catalog) -> pl.DataFrame:
    """Add ``verdict``, ``reason`` and ``collect`` (hint ids) to each migration row."""
    rules, drops_hint = _rule_table(catalog)
    covered = (
        table.select("migration_id", "machine", "end", "clock_offset_s")
        .join(facts.trigger_logged, on="machine", how="left")
        .with_columns(
            to_guest_clock(pl.col("end"), pl.col("clock_offset_s").fill_null(0.0)).alias("_at")
        )
        .group_by("migration_id")
        .agg(
            ((pl.col("first_ts") <= pl.col("_at")) & (pl.col("last_ts") >= pl.col("_at")))
            .any()
            .alias("_trigger_covered")
        )
    )
    frame = table.join(covered, on="migration_id", how="left").with_columns(
        pl.col("_trigger_covered").fill_null(False),
        pl.col("machine").is_in(facts.drops_observable.implode()).alias("_observable"),
        pl.col("machine").is_in(facts.security_exported.implode()).alias("_security"),
    )
    verdict = pl.when(rules[0][0]).then(pl.lit(rules[0][1]))
    reason = pl.when(rules[0][0]).then(rules[0][2])
    hints = pl.when(rules[0][0]).then(pl.lit(rules[0][3], dtype=pl.List(pl.String)))
    for condition, name, text, ids in rules[1:]:
        verdict = verdict.when(condition).then(pl.lit(name))
        reason = reason.when(condition).then(text)
        hint_exprs = [drops_hint if i == "__drops" else pl.lit(i) for i in ids]
        hints = hints.when(condition).then(
            pl.concat_list(hint_exprs) if hint_exprs else pl.lit([], dtype=pl.List(pl.String))
        )
    return frame.with_columns(
        verdict.alias("verdict"), reason.alias("reason"), hints.alias("collect")
    ).drop("_trigger_covered", "_observable", "_security")


def bundle_verdict(assessed: pl.DataFrame) -> str:
    """The gravest per-migration verdict; ``inconclusive`` when there is no migration."""
    present = set(assessed["verdict"].to_list())
    return next((v for v in VERDICTS if v in present), "inconclusive")


def _unexplained(triggers: pl.DataFrame) -> list[str]:
    """One line per guest that logged network changes no migration explains."""
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
                "{} logged {} network-change event(s) (Netvsc 14) between {} and {} UTC that"
                " no migration in the bundle explains",
                "machine",
                "n",
                pl.col("first").dt.strftime("%Y-%m-%d %H:%M:%S"),
                pl.col("last").dt.strftime("%Y-%m-%d %H:%M:%S"),
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


def summarize(
    assessed: pl.DataFrame, machines: pl.DataFrame, triggers: pl.DataFrame, catalog: Catalog
) -> Summary:
    """Bundle verdict, the reasons behind it, what to collect, and what to do.

    ``triggers`` holds the guests' network-change events (``machine``,
    ``timestamp``): without any migration they are all a bundle can show, and
    the engineer should see them rather than a bare "nothing found".
    """
    verdict = bundle_verdict(assessed)
    reasons = assessed.filter(pl.col("verdict") == verdict)["reason"].to_list()
    hint_ids = set(assessed["collect"].explode().drop_nulls().to_list())
    if assessed.is_empty():
        hosts = machines.filter(pl.col("role") == "host").height
        reasons = [
            "no live migration was found in the bundle"
            + ("" if hosts else " (no Hyper-V host logged migration events)")
        ]
        reasons += _unexplained(triggers)
        hint_ids.add("host-vmms")
    collect = [
        {"id": h.id, "when": h.when, "how": h.how} for h in catalog.collect if h.id in hint_ids
    ]
    remediation: list[dict[str, object]] = []
    if verdict in ("affected", "likely-affected"):
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
    return Summary(verdict, reasons, collect, remediation)
