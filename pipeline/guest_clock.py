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
    ``timestamp`` moved onto the continuous clock: minus every step logged before it."""
    if logged.is_empty():
        return events
    applied = logged.select(
        "machine", "timestamp", (pl.col("before_s") + pl.col("delta_s")).alias("_s")
    ).sort("timestamp")
    return (
        events.sort("timestamp")
        .join_asof(
            applied, on="timestamp", by="machine", strategy="backward", check_sortedness=False
        )
        .with_columns(_shift(pl.col("timestamp"), pl.col("_s").fill_null(0.0)).alias("timestamp"))
        .drop("_s")
    )


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
