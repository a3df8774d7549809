"""Which computer in a bundle is a Hyper-V host and which is a guest, and what each logged.

Bundles arrive as folders named by whoever exported them, so roles come from what a
computer logged (the System/Computer field), not from folder names: a computer that
logged migration or cluster events is a host, every other computer is a candidate
guest. ``--host`` and ``--guest`` override, because a host may run no migrations
in the exported period and a guest may log nothing lmtrace knows.

Coverage (which channels each computer exported, and the time span of each) decides
later whether an absence of evidence means anything: no Netvsc 14 proves nothing
if the guest's System log ends before the migration.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

HOST_KIND_PREFIXES = ("migration.", "cluster.")


def short_name(expr: pl.Expr) -> pl.Expr:
    """Lower-case host name without its DNS domain: ``SQL7.corp.example`` -> ``sql7``."""
    return expr.str.to_lowercase().str.strip_chars().str.split(".").list.first()


def to_host_clock(guest_time: pl.Expr, offset_s: pl.Expr) -> pl.Expr:
    """A guest's time on the host clock. ``offset_s`` is the guest's clock minus the
    hosts' (as matching estimates it), so the host saw the moment ``offset_s`` earlier."""
    return guest_time - pl.duration(microseconds=offset_s * 1e6)


def to_guest_clock(host_time: pl.Expr, offset_s: pl.Expr) -> pl.Expr:
    """A host's time on a guest's clock: the inverse of :func:`to_host_clock`."""
    return host_time + pl.duration(microseconds=offset_s * 1e6)


def _folder(path: pl.Expr) -> pl.Expr:
    """The folder part of a path (``/`` or ``\\`` separated); empty at the top."""
    return path.str.replace(r"[/\\][^/\\]*$", "")


def attribute_unnamed(events: pl.LazyFrame) -> pl.LazyFrame:
    """Give rows from logs that name no computer (pfirewall.log) the computer beside them.

    Customers export one folder per machine, and the firewall log sits in it or
    a folder or two below (``LogFiles/Firewall``). So an unnamed row takes the
    computer named most often by the other logs of its folder, else of its parent,
    else of its grandparent; ``lmtrace ingest --firewall-computer`` names it
    outright. Rows with no named neighbour keep a null computer and match nothing.
    """
    if events.filter(pl.col("computer").is_null()).select(pl.len()).collect().item() == 0:
        return events  # the usual case: one cheap scan of one column, nothing to attribute
    location = pl.coalesce(
        pl.concat_str("source_path", pl.lit("!"), "member"), pl.col("source_path")
    )
    events = events.with_columns(_folder(location).alias("_dir"))
    named = (
        events.filter(pl.col("computer").is_not_null())
        .group_by("_dir")
        .agg(pl.col("computer").mode().sort().first().alias("_near"))
    )
    unnamed = events.filter(pl.col("computer").is_null())
    guesses = []
    for level in range(3):
        unnamed = unnamed.with_columns(
            (pl.col("_dir") if level == 0 else _folder(pl.col(f"_d{level - 1}"))).alias(
                f"_d{level}"
            )
        )
        unnamed = unnamed.join(
            named.rename({"_dir": f"_d{level}", "_near": f"_near{level}"}),
            on=f"_d{level}",
            how="left",
        )
        guesses.append(pl.col(f"_near{level}"))
    attributed = unnamed.with_columns(pl.coalesce(guesses).alias("computer")).select(
        events.collect_schema().names()
    )
    return pl.concat([events.filter(pl.col("computer").is_not_null()), attributed]).drop("_dir")


def coverage(events: pl.LazyFrame) -> pl.DataFrame:
    """Per computer and channel: first and last event time and the event count."""
    return (
        events.group_by("computer", "channel")
        .agg(
            pl.col("timestamp").min().alias("first_ts"),
            pl.col("timestamp").max().alias("last_ts"),
            pl.len().alias("events"),
        )
        .with_columns(short_name(pl.col("computer")).alias("machine"))
        .sort("computer", "channel")
        .collect()
    )


def classify(
    cover: pl.DataFrame,
    tagged: pl.DataFrame,
    hosts: Sequence[str] = (),
    guests: Sequence[str] = (),
) -> pl.DataFrame:
    """One row per machine: ``machine`` (short name), ``computer``, ``role``, ``role_source``.

    ``role_source`` is ``given`` for ``--host``/``--guest`` and ``logged`` otherwise.
    """
    given = pl.DataFrame(
        {
            "machine": [h.lower().split(".")[0] for h in hosts]
            + [g.lower().split(".")[0] for g in guests],
            "_given": ["host"] * len(hosts) + ["guest"] * len(guests),
        },
        schema={"machine": pl.String, "_given": pl.String},
    ).unique("machine", keep="last")
    host_like = (
        tagged.filter(
            pl.any_horizontal(pl.col("kind").str.starts_with(p) for p in HOST_KIND_PREFIXES)
        )
        .select(short_name(pl.col("computer")).alias("machine"))
        .unique()
        .with_columns(pl.lit(True).alias("_logged_host"))
    )
    return (
        cover.group_by("machine")
        .agg(
            pl.col("computer").mode().first(),
            pl.col("channel").unique().sort().alias("channels"),
            pl.col("first_ts").min(),
            pl.col("last_ts").max(),
            pl.col("events").sum(),
        )
        .join(host_like, on="machine", how="left")
        .join(given, on="machine", how="left")
        .with_columns(
            pl.coalesce(
                "_given",
                pl.when(pl.col("_logged_host")).then(pl.lit("host")).otherwise(pl.lit("guest")),
            ).alias("role"),
            pl.when(pl.col("_given").is_not_null())
            .then(pl.lit("given"))
            .otherwise(pl.lit("logged"))
            .alias("role_source"),
        )
        .drop("_given", "_logged_host")
        .sort(pl.col("role") != "host", "machine")
    )
