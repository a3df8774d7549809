"""Quarantine windows in the guest after each migration, and the traffic they blocked.

The window opens at the guest's Netvsc 14 ("network has changed", Q0) found near
the migration's completion once the guest's clock offset is applied. It closes at
the first of:

* a network-classification event (NetworkProfile, NCSI, firewall 2010): the normal
  end, about 2-3 s after Q0;
* an allowed inbound connection of a protocol that quarantine blocks (TCP): traffic
  flows again, so the window has ended even though nothing logged why;
* failing both, the last inbound drop.

When nothing closes it but the guest did export its classification logs, the
silence itself is the bug's signature: the window is taken to last the safety
timeout (``end_evidence`` = ``inferred-timeout``). Times of the window are on the
guest's clock; ``*_host`` columns are on the host's clock (guest time minus offset).
Which kinds open, close and fill a window comes from the catalog's ``[model]``.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from pipeline.catalog import ModelParams
from pipeline.machines import to_guest_clock, to_host_clock

REF = ("source_path", "member", "record_id", "event_id")


def _seconds(expr: pl.Expr) -> pl.Expr:
    return expr.dt.total_microseconds() / 1e6


def _after(ts: str, seconds: float) -> pl.Expr:
    """The time ``seconds`` after the time column ``ts``."""
    return pl.col(ts) + timedelta(seconds=seconds)


def _on_host_clock(ts: str) -> pl.Expr:
    """A guest-clock time column on the host clock, by the row's ``clock_offset_s``."""
    return to_host_clock(pl.col(ts), pl.col("clock_offset_s"))


def _first_after(
    windows: pl.DataFrame, events: pl.DataFrame, name: str, horizon_s: float
) -> pl.DataFrame:
    """Join each window to the first of ``events`` strictly after Q0, within the horizon."""
    right = events.select(
        "machine",
        pl.col("timestamp").alias(f"{name}_at"),
        pl.struct(*REF, "kind").alias(f"{name}_ref"),
    ).sort(f"{name}_at")
    joined = windows.sort("q0").join_asof(
        right,
        left_on="q0",
        right_on=f"{name}_at",
        by="machine",
        strategy="forward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    too_late = _seconds(pl.col(f"{name}_at") - pl.col("q0")) > horizon_s
    return joined.with_columns(
        pl.when(too_late).then(None).otherwise(pl.col(f"{name}_at")).alias(f"{name}_at"),
        pl.when(too_late).then(None).otherwise(pl.col(f"{name}_ref")).alias(f"{name}_ref"),
    )


def find_windows(
    pairs: pl.DataFrame, guest_events: pl.DataFrame, model: ModelParams, tolerance_s: float
) -> pl.DataFrame:
    """One row per (migration, guest) whose guest logged the trigger near the completion.

    ``pairs`` holds ``migration_id``, ``machine``, ``end`` (host clock) and
    ``clock_offset_s``; ``guest_events`` are tagged events of guests with ``machine``.

    The trigger is looked for where the guest's offset puts it (within the
    tolerance, allowing the notification lag). A migration left without one then
    takes the nearest unclaimed trigger within ``clock_jump_max_s``: the guest
    clock can step when it resumes on the new host, and then that migration's own
    offset (``clock_offset_s`` of the window, ``trigger_match`` = ``clock-jump``)
    places its window on the host clock.
    """
    triggers = guest_events.filter(pl.col("kind").is_in(model.trigger_kinds)).select(
        "machine", pl.col("timestamp").alias("q0"), pl.struct(*REF, "kind").alias("trigger_ref")
    )
    candidates = pairs.filter(
        pl.col("end").is_not_null() & pl.col("clock_offset_s").is_not_null()
    ).with_columns(to_guest_clock(pl.col("end"), pl.col("clock_offset_s")).alias("expected"))
    located = (
        candidates.with_columns(
            (pl.col("expected") - pl.duration(microseconds=tolerance_s * 1e6)).alias("_lo")
        )
        .sort("_lo")
        .join_asof(
            triggers.sort("q0"),
            left_on="_lo",
            right_on="q0",
            by="machine",
            strategy="forward",
            check_sortedness=False,
        )
    )
    reach = tolerance_s + model.netvsc_lag_max_s
    near = located.filter(
        pl.col("q0").is_not_null() & (_seconds(pl.col("q0") - pl.col("expected")) <= reach)
    ).drop("_lo")
    unclaimed = triggers.join(near.select("machine", "q0"), on=["machine", "q0"], how="anti")
    jumped = (
        candidates.join(near.select("migration_id"), on="migration_id", how="anti")
        .sort("expected")
        .join_asof(
            unclaimed.sort("q0"),
            left_on="expected",
            right_on="q0",
            by="machine",
            strategy="nearest",
            tolerance=timedelta(seconds=model.clock_jump_max_s + reach),
            check_sortedness=False,
        )
        .filter(pl.col("q0").is_not_null())
        .with_columns(
            (pl.col("clock_offset_s") + _seconds(pl.col("q0") - pl.col("expected"))).alias(
                "clock_offset_s"
            )
        )
    )
    return pl.concat(
        [
            near.with_columns(pl.lit("offset").alias("trigger_match")),
            jumped.with_columns(pl.lit("clock-jump").alias("trigger_match")),
        ],
        how="diagonal_relaxed",
    )


def _without_duplicate_sources(guest_events: pl.DataFrame, model: ModelParams) -> pl.DataFrame:
    """Drop fallback-source traffic (pfirewall.log) of guests that have WFP audit events."""
    traffic = model.blocked_kinds + model.allowed_kinds
    primary = guest_events.filter(
        pl.col("kind").is_in(traffic) & ~pl.col("kind").is_in(model.fallback_kinds)
    )["machine"].unique()
    return guest_events.filter(
        ~(pl.col("kind").is_in(model.fallback_kinds) & pl.col("machine").is_in(primary.implode()))
    )


def measure(
    windows: pl.DataFrame,
    guest_events: pl.DataFrame,
    end_logged: pl.Series,
    model: ModelParams,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Close each window and count the inbound traffic it blocked.

    ``end_logged`` lists the guests that exported classification logs at all.
    Returns (windows with end, duration, class and counts; the blocked events,
    one row each, tagged with their migration).
    """
    guest_events = _without_duplicate_sources(guest_events, model)
    ends = guest_events.filter(pl.col("kind").is_in(model.end_kinds))
    allowed = guest_events.filter(
        pl.col("kind").is_in(model.allowed_kinds)
        & pl.col("inbound")
        & pl.col("protocol").is_in(model.end_evidence_protocols)
    )
    w = _first_after(windows, ends, "classified", model.window_max_s)
    w = _first_after(w, allowed, "allowed", model.window_max_s)
    w = w.with_columns(
        pl.min_horizontal(
            "classified_at",
            "allowed_at",
            _after("q0", model.window_max_s),
        ).alias("_horizon")
    )
    blocked = (
        guest_events.filter(pl.col("kind").is_in(model.blocked_kinds) & pl.col("inbound"))
        .sort("timestamp")
        .join_asof(
            w.select("machine", "q0", "_horizon", "migration_id", "clock_offset_s").sort("q0"),
            left_on="timestamp",
            right_on="q0",
            by="machine",
            strategy="backward",
            check_sortedness=False,
        )
        .filter(pl.col("q0").is_not_null() & (pl.col("timestamp") <= pl.col("_horizon")))
        .with_columns(_on_host_clock("timestamp").alias("timestamp_host"))
        .drop("_horizon", "q0")
    )
    is_origin_proof = pl.col("filter_origin").str.to_lowercase() == "quarantine default"
    counts = blocked.group_by("migration_id").agg(
        pl.len().cast(pl.Int64).alias("blocked_inbound"),
        (pl.col("protocol") == 6).sum().cast(pl.Int64).alias("blocked_tcp"),
        (pl.col("protocol") == 17).sum().cast(pl.Int64).alias("blocked_udp"),
        (~pl.col("protocol").is_in([6, 17]) | pl.col("protocol").is_null())
        .sum()
        .cast(pl.Int64)
        .alias("blocked_other"),
        is_origin_proof.sum().cast(pl.Int64).alias("quarantine_default_drops"),
        pl.col("timestamp").max().alias("last_drop_at"),
    )
    w = w.join(counts, on="migration_id", how="left").with_columns(
        pl.col(
            "blocked_inbound",
            "blocked_tcp",
            "blocked_udp",
            "blocked_other",
            "quarantine_default_drops",
        ).fill_null(0)
    )
    return _close(w, end_logged, model), blocked


def _close(w: pl.DataFrame, end_logged: pl.Series, model: ModelParams) -> pl.DataFrame:
    classified_first = pl.col("classified_at").is_not_null() & (
        pl.col("allowed_at").is_null() | (pl.col("classified_at") <= pl.col("allowed_at"))
    )
    silent = pl.col("machine").is_in(end_logged.implode()) & pl.col("classified_at").is_null()
    timeout_at = _after("q0", model.safety_timeout_s)
    # Traffic resumed without a classification, and the model's safety timeout lies between
    # the last drop and the first allowed connection: every piece of evidence agrees with it,
    # and it is exact, where either bracket alone is off by up to the gap between connections.
    bracketed = (
        ~classified_first
        & pl.col("allowed_at").is_not_null()
        & (timeout_at <= pl.col("allowed_at"))
        & (timeout_at >= pl.coalesce("last_drop_at", "q0"))
    )
    end = (
        pl.when(classified_first)
        .then(pl.col("classified_at"))
        .when(bracketed)
        .then(timeout_at)
        .when(pl.col("allowed_at").is_not_null())
        .then(pl.col("allowed_at"))
        .when(pl.col("last_drop_at").is_not_null())
        .then(pl.col("last_drop_at"))
        .when(silent)
        .then(timeout_at)
    )
    evidence = (
        pl.when(classified_first)
        .then(pl.col("classified_ref").struct.field("kind"))
        .when(bracketed)
        .then(pl.lit("timeout-bracketed"))
        .when(pl.col("allowed_at").is_not_null())
        .then(pl.lit("allowed-inbound"))
        .when(pl.col("last_drop_at").is_not_null())
        .then(pl.lit("last-drop"))
        .when(silent)
        .then(pl.lit("inferred-timeout"))
    )
    w = w.with_columns(end.alias("q_end"), evidence.alias("end_evidence")).with_columns(
        _seconds(pl.col("q_end") - pl.col("q0")).alias("q_duration_s")
    )
    near_timeout = pl.col("q_duration_s") >= model.safety_timeout_s - 1.0
    quarantine_class = (
        pl.when(pl.col("q_end").is_null())
        .then(pl.lit("unknown"))
        .when(pl.col("end_evidence").is_in(["inferred-timeout", "timeout-bracketed"]))
        .then(pl.lit("safety-timeout"))
        .when(~classified_first & near_timeout)
        .then(pl.lit("safety-timeout"))
        .when(
            (pl.col("blocked_inbound") == 0)
            & (pl.col("end_evidence") == "allowed-inbound")
            & (pl.col("q_duration_s") <= model.normal_quarantine_max_s)
        )
        .then(pl.lit("none"))
        .when(pl.col("q_duration_s") <= model.normal_quarantine_max_s)
        .then(pl.lit("normal"))
        .otherwise(pl.lit("prolonged"))
    )
    return w.with_columns(
        quarantine_class.alias("quarantine_class"),
        _on_host_clock("q0").alias("q0_host"),
        _on_host_clock("q_end").alias("q_end_host"),
        pl.when(classified_first)
        .then(pl.col("classified_ref"))
        .when(pl.col("allowed_at").is_not_null())
        .then(pl.col("allowed_ref"))
        .alias("end_ref"),
    ).drop("_horizon", "classified_ref", "allowed_ref")
