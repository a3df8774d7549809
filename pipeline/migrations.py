"""Live migrations rebuilt from host events: one record per VM move.

A single live migration leaves events in several logs on two nodes: VMMS 20413 and
20415 on the source, High-Availability 21300/21301 on the source and 21306/21307
on the target, Worker summaries on the target. Bundles often hold only one side.
So migrations are built per VM from whatever is there, by grouping the VM's
events in time order:

* a *start* after a *terminal* event (completed or failed) opens a new migration
  (a failed attempt followed by a retry is two migrations);
* two terminal events further apart than ``terminal_merge_s`` are two migrations
  (a start may be missing from the bundle);
* any two events further apart than ``migration_max_s`` are two migrations.

The VM is keyed by VMID where any of its events carries one (names are mapped to
VMIDs seen beside them), by lower-case name otherwise. ``source`` and
``destination`` come only from events whose catalog entry states which node logs
them (or from a payload naming the destination); ``logged_by`` lists every host
that logged the migration, whatever its side.
"""

from __future__ import annotations

import polars as pl

from pipeline.catalog import ModelParams
from pipeline.machines import short_name

START = "migration.started"
TERMINAL = ("migration.completed", "migration.completed_slow", "migration.failed")
COMPLETED = ("migration.completed", "migration.completed_slow")

MIGRATION_SCHEMA: dict[str, pl.DataType] = {
    "migration_id": pl.String(),
    "vm_key": pl.String(),
    "vm_name": pl.String(),
    "vmid": pl.String(),
    "source": pl.String(),
    "destination": pl.String(),
    "start": pl.Datetime("us", "UTC"),
    "end": pl.Datetime("us", "UTC"),
    "blackout_s": pl.Float64(),
    "duration_s": pl.Float64(),
    "status": pl.String(),
    "slow_blackout": pl.Boolean(),
    "clustered": pl.Boolean(),
    "logged_by": pl.List(pl.String()),
    "host_evidence": pl.List(
        pl.Struct(
            {
                "kind": pl.String(),
                "event_id": pl.Int32(),
                "computer": pl.String(),
                "timestamp": pl.Datetime("us", "UTC"),
                "source_path": pl.String(),
                "member": pl.String(),
                "record_id": pl.Int64(),
            }
        )
    ),
}


def _vm_keys(events: pl.DataFrame) -> pl.DataFrame:
    """Add ``vmid_norm`` (lower case, no braces) and ``vm_key`` to migration events."""
    events = events.with_columns(
        pl.col("vmid").str.to_lowercase().str.strip_chars("{} ").alias("vmid_norm"),
        pl.col("vm_name").str.to_lowercase().str.strip_chars().alias("name_lc"),
    )
    name_to_vmid = (
        events.filter(pl.col("vmid_norm").is_not_null() & pl.col("name_lc").is_not_null())
        .group_by("name_lc")
        .agg(pl.col("vmid_norm").first().alias("_vmid_by_name"))
    )
    return (
        events.join(name_to_vmid, on="name_lc", how="left")
        .with_columns(pl.coalesce("vmid_norm", "_vmid_by_name").alias("vmid_norm"))
        .with_columns(
            pl.coalesce(
                pl.col("vmid_norm"), pl.concat_str(pl.lit("name:"), pl.col("name_lc"))
            ).alias("vm_key")
        )
        .drop("_vmid_by_name")
        .filter(pl.col("vm_key").is_not_null())
    )


def _sequence(events: pl.DataFrame, model: ModelParams) -> pl.DataFrame:
    """Number each VM's migrations (``mig_seq``) by the grouping rules of the module doc."""
    is_terminal = pl.col("kind").is_in(TERMINAL)
    prev_terminal = is_terminal.shift(1).over("vm_key")
    gap_s = pl.col("timestamp").diff().over("vm_key").dt.total_microseconds() / 1e6
    new = (
        gap_s.is_null()
        | (gap_s > model.migration_max_s)
        | ((pl.col("kind") == START) & prev_terminal)
        | (prev_terminal & is_terminal & (gap_s > model.terminal_merge_s))
        | (
            prev_terminal
            & ~is_terminal
            & (pl.col("kind") != START)
            & (gap_s > model.terminal_merge_s)
        )
    )
    return events.sort("vm_key", "timestamp").with_columns(
        new.cast(pl.Int32).cum_sum().over("vm_key").alias("mig_seq")
    )


def _same_node(a: str, b: str) -> pl.Expr:
    return (short_name(pl.col(a)) == short_name(pl.col(b))).fill_null(False)


def reconstruct(tagged_host: pl.DataFrame, model: ModelParams) -> pl.DataFrame:
    """Migration records (``MIGRATION_SCHEMA``) from tagged ``migration.*`` host events."""
    events = tagged_host.filter(pl.col("kind").str.starts_with("migration."))
    if events.is_empty():
        return pl.DataFrame(schema=MIGRATION_SCHEMA)
    events = _sequence(_vm_keys(events), model)
    first_at = lambda kinds: pl.col("timestamp").filter(pl.col("kind").is_in(kinds)).min()  # noqa: E731
    evidence = pl.struct(
        "kind", "event_id", "computer", "timestamp", "source_path", "member", "record_id"
    )
    migrations = (
        events.group_by("vm_key", "mig_seq")
        .agg(
            pl.col("vm_name").drop_nulls().first(),
            pl.col("vmid_norm").drop_nulls().first().alias("vmid"),
            pl.col("computer").filter(pl.col("side") == "source").first().alias("source"),
            pl.coalesce(
                pl.col("computer").filter(pl.col("side") == "target").first(),
                pl.col("destination").drop_nulls().first(),
            ).alias("destination"),
            first_at([START]).alias("start"),
            first_at(COMPLETED).alias("_completed_at"),
            first_at(["migration.failed"]).alias("_failed_at"),
            pl.col("blackout_s").drop_nulls().first(),
            pl.col("seconds").drop_nulls().first().alias("_seconds"),
            (pl.col("kind") == "migration.completed_slow").any().alias("slow_blackout"),
            pl.col("computer").unique().sort().alias("logged_by"),
            pl.col("provider")
            .str.to_lowercase()
            .str.contains("high-availability")
            .any()
            .alias("clustered"),
            evidence.sort_by("timestamp").alias("host_evidence"),
        )
        .with_columns(
            pl.when(pl.col("_completed_at").is_not_null())
            .then(pl.lit("completed"))
            .when(pl.col("_failed_at").is_not_null())
            .then(pl.lit("failed"))
            .otherwise(pl.lit("unknown"))
            .alias("status"),
            pl.coalesce("_completed_at", "_failed_at").alias("end"),
        )
        .with_columns(
            pl.coalesce(
                (pl.col("end") - pl.col("start")).dt.total_microseconds() / 1e6,
                pl.col("_seconds"),
            ).alias("duration_s"),
            # Both sides named the same node: one of the two guesses is wrong, and which
            # one cannot be told, so neither is asserted (``logged_by`` still names it).
            *(
                pl.when(_same_node("source", "destination")).then(None).otherwise(c).alias(c)
                for c in ("source", "destination")
            ),
        )
        .sort(pl.coalesce("end", "start"), "vm_key")
        .with_row_index("_n", offset=1)
        .with_columns(
            pl.format("M{}", pl.col("_n").cast(pl.String).str.zfill(3)).alias("migration_id")
        )
    )
    return migrations.select([pl.col(c).cast(t) for c, t in MIGRATION_SCHEMA.items()])
