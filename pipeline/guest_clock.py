"""A guest clock that the guest itself logged stepping, made continuous again.

The problem: a guest's clock can step when it resumes on a new host (the time-sync
service corrects it at once), by seconds or by minutes. Every migration after a step
then meets its Netvsc 14 a little further from the completion, and an offset search
that assumes one offset per guest either misses those triggers (a step beyond the
120 s it allows) or, worse, pairs a trigger with the next migration's completion and
reports the guest untouched. The guest logs each step itself: Kernel-General 1,
with the old and the new time (issue 14's ``clock_changes``). This module turns
those into a continuous clock: on it, the guest runs at one offset to its hosts, so
the offset is estimated as for any guest, and each migration's own offset is that
base plus the steps the guest logged up to its resume. Steps no guest logged are
left to the bounded clock-jump search of :mod:`pipeline.quarantine`.

A step back is harder: for as long as it stepped back, the clock shows again times it
already showed, so an event's time alone does not say on which side of the step it
happened. An inbound connection allowed just before the migration then reads as one
allowed just after it, inside the quarantine, and the quarantine looks over before it
began. Each log's own order says it (:func:`misplaced`).
"""

from __future__ import annotations

import polars as pl

from pipeline.machines import to_guest_clock

STEP_SCHEMA = {
    "machine": pl.String,
    "timestamp": pl.Datetime("us", "UTC"),
    "old_time": pl.Datetime("us", "UTC"),
    "delta_s": pl.Float64,
    "source_path": pl.String,
    "member": pl.String,
    "record_id": pl.Int64,
}


def _shift(ts: pl.Expr, seconds: pl.Expr) -> pl.Expr:
    return ts - pl.duration(microseconds=seconds * 1e6)


def steps(clock_changes: pl.DataFrame) -> pl.DataFrame:
    """Each guest's logged clock steps in order, with ``before_s`` (the sum of the steps
    before it) and ``continuous`` (the moment of the step on the continuous clock)."""
    frame = (
        clock_changes.select(list(STEP_SCHEMA))
        .drop_nulls(["machine", "timestamp", "old_time", "delta_s"])
        .sort("machine", "timestamp")
    )
    before = pl.col("delta_s").cum_sum().over("machine") - pl.col("delta_s")
    return frame.with_columns(before.alias("before_s")).with_columns(
        _shift(pl.col("old_time"), pl.col("before_s")).alias("continuous")
    )


def continuous(events: pl.DataFrame, logged: pl.DataFrame) -> pl.DataFrame:
    """``events`` (with ``machine`` and ``timestamp`` on the guest's own clock) with
    ``timestamp`` moved onto the continuous clock: minus every step logged before it
    (before it in its log's order, where :func:`misplaced` gave a ``clock_fix_s``)."""
    if logged.is_empty():
        return events
    applied = logged.select(
        "machine", "timestamp", (pl.col("before_s") + pl.col("delta_s")).alias("_s")
    ).sort("timestamp")
    steps_by_time = pl.col("_s").fill_null(0.0)
    if FIX in events.columns:  # a step its time puts it after, but its log's order before
        steps_by_time = steps_by_time - pl.col(FIX)
    return (
        events.sort("timestamp")
        .join_asof(
            applied, on="timestamp", by="machine", strategy="backward", check_sortedness=False
        )
        .with_columns(_shift(pl.col("timestamp"), steps_by_time).alias("timestamp"))
        .drop("_s")
    )


FIX = "clock_fix_s"
"""Seconds to add to an event's time to read it on the clock its time wrongly puts it on."""

UNTOLD = "clock_side_untold"
"""The event lies in a step back's span and no log order tells its side (taken as before)."""

DECREASE_S = 0.1
"""A log whose times fall back by more than this, inside a step back's span, has met the
step there. Smaller falls are the ordinary jitter of events written by several threads."""

_FILE = ["source_path", "member"]


def misplaced(events: pl.DataFrame, logged: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``events`` with ``clock_fix_s``: for an event its log's order puts before a step
    back although its time lies in the step's span, the step (so that time plus the fix is
    what the clock read after the step); 0 for every other event. ``clock_side_untold``
    marks the events of a span whose side no order tells: they are taken as before, and
    the correlator measures their quarantine both ways. Also returns how many there are,
    per guest and step (for a note).

    An event's side of a step, in its own log: in the log that holds the step's record
    (the System log's Kernel-General 1), its record id against the step's. In any other
    log, times after the step's old time are after it; inside the span, the first record
    whose time falls back (the clock's step, seen in this log) starts the after side.
    Where nothing falls back, the span's events are taken as before the step: read as
    after it, one inbound connection allowed before the migration would end its
    quarantine before it began.
    """
    back = (
        # A step back shorter than the jitter of a log's own times reorders nothing that
        # matters here (time service corrections of microseconds are common).
        logged.filter(pl.col("delta_s") < -DECREASE_S)
        .select(
            pl.col("machine").alias("_step_machine"),
            pl.col("timestamp").alias("_new"),
            pl.col("old_time").alias("_old"),
            "delta_s",
            pl.col("source_path").alias("_step_path"),
            pl.col("member").alias("_step_member"),
            pl.col("record_id").alias("_step_record"),
        )
        .with_row_index("_step")
    )
    no_fix = events.with_columns(pl.lit(0.0).alias(FIX), pl.lit(False).alias(UNTOLD))
    undecided_schema = {"machine": pl.String, "_old": pl.Datetime("us", "UTC"), "events": pl.UInt32}
    if back.is_empty():
        return no_fix, pl.DataFrame(schema=undecided_schema)
    ts = pl.col("timestamp")
    in_span = (ts >= pl.col("_new")) & (ts < pl.col("_old"))
    keys = ["machine", *_FILE, "record_id"]
    own = (
        events.select(*keys, "timestamp")
        .drop_nulls(["machine", "record_id", "timestamp"])
        .unique(keys)
    )
    # The logs with events inside a step's span, then all of those logs' events.
    spanned = (
        own.join_where(back, pl.col("machine") == pl.col("_step_machine"), in_span)
        .select("_step", *_FILE)
        .unique()
    )
    if spanned.is_empty():
        return no_fix, pl.DataFrame(schema=undecided_schema)
    per_file = ["_step", *_FILE]
    rows = (
        own.join(spanned.join(back, on="_step"), on=_FILE, nulls_equal=True)
        .filter(pl.col("machine") == pl.col("_step_machine"))
        .sort(*per_file, "record_id")
    )
    falls = in_span & ((ts.shift(1).over(per_file) - ts) > pl.duration(seconds=DECREASE_S))
    own_log = (pl.col("source_path") == pl.col("_step_path")) & pl.col("member").eq_missing(
        pl.col("_step_member")
    )
    seen_after = pl.col("record_id").filter(falls | (ts >= pl.col("_old"))).min().over(per_file)
    told = pl.col("record_id").filter(falls).count().over(per_file) > 0
    placed = rows.with_columns(
        pl.when(own_log)
        .then(pl.col("_step_record") + 1)
        .otherwise(seen_after)
        .alias("_after_from"),
        (own_log | told).alias("_told"),
    ).filter(in_span)
    before = placed.filter(
        pl.col("_after_from").is_null() | (pl.col("record_id") < pl.col("_after_from"))
    )
    fixes = before.group_by(keys).agg(
        pl.col("delta_s").sum().alias(FIX), (~pl.col("_told")).any().alias(UNTOLD)
    )
    undecided = (
        before.filter(~pl.col("_told"))
        .group_by("machine", "_old")
        .agg(pl.len().cast(pl.UInt32).alias("events"))
        .sort("machine", "_old")
    )
    fixed = events.join(
        fixes, on=keys, how="left", nulls_equal=True, maintain_order="left"
    ).with_columns(pl.col(FIX).fill_null(0.0), pl.col(UNTOLD).fill_null(False))
    return fixed, undecided


def offsets_at(pairs: pl.DataFrame, logged: pl.DataFrame, reach_s: float) -> pl.DataFrame:
    """Each (migration, guest) pair's ``clock_offset_s`` (the guest's base offset on the
    continuous clock) plus the steps the guest logged up to that migration's resume (the
    last step within ``reach_s`` after its completion on the continuous clock), with
    ``clock_steps_s`` and the last such step in ``clock_step_ref``."""
    if logged.is_empty():
        return pairs.with_columns(
            pl.lit(0.0).alias("clock_steps_s"), pl.lit(None).alias("clock_step_ref")
        )
    ref = pl.struct("source_path", "member", "record_id", "delta_s").alias("clock_step_ref")
    applied = logged.select(
        "machine",
        "continuous",
        (pl.col("before_s") + pl.col("delta_s")).alias("clock_steps_s"),
        ref,
    ).sort("continuous")
    at = _shift(to_guest_clock(pl.col("end"), pl.col("clock_offset_s")), pl.lit(-reach_s))
    return (
        pairs.with_columns(at.alias("_at"))
        .sort("_at")
        .join_asof(
            applied,
            left_on="_at",
            right_on="continuous",
            by="machine",
            strategy="backward",
            check_sortedness=False,
        )
        .with_columns(
            pl.col("clock_steps_s").fill_null(0.0),
            (pl.col("clock_offset_s") + pl.col("clock_steps_s").fill_null(0.0)).alias(
                "clock_offset_s"
            ),
        )
        .drop("_at", "continuous")
    )
