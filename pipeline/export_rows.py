"""The rows of an export: each stored event and each analysis fact, as other tools read them.

Problem: an export that is a JSON blob per event is hard to search in Timesketch and
carries none of the analysis. Timesketch's analyzers and Sigma mapping key on plaso's
field names (``data_type``, ``source_name``, ``event_identifier``, ``computer_name``:
timesketch data/sigma_config.yaml maps ``EventID`` to ``event_identifier`` and its
Windows log sources to ``source_name`` / ``data_type: windows:evtx:record``), and an
engineer searches for ``DestPort:3389``, not for a substring of a blob.

So each event row carries: a readable ``message`` (the payload's fields by name, codes
such as ``%%14592`` in words from the catalog, protocol numbers as names); its payload
broken out into fields (raw values, as logged); plaso's names beside lmtrace's own;
and, where an analysis folder holds the store, a ``tag`` list (migration id, verdict,
role) on the events a verdict rests on. The analysis adds its own events: each
migration's start and completion (with the blackout) and each guest quarantine
window's opening and closing (with its class and length).

The analysis facts are read through :data:`MIGRATION`, the one mapping from the
migrations table's columns to the export's fields: a renamed column is one line here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import polars as pl

from pipeline import __version__
from pipeline.catalog import Catalog

MIGRATION = {
    "migration_id": "migration_id",
    "vm_name": "vm_name",
    "source": "source",
    "destination": "destination",
    "start": "start",
    "end": "end",
    "blackout_s": "blackout_s",
    "guest": "machine",
    "window_start": "q0",  # guest clock, as the guest's own events are exported
    "window_end": "q_end",
    "window_start_host_clock": "q0_host",
    "window_end_host_clock": "q_end_host",
    "window_s": "q_duration_s",
    "window_class": "quarantine_class",
    "window_words": "window_words",
    "window_end_words": "end_words",
    "blocked_inbound": "blocked_inbound",
    "verdict": "verdict",
    "reason": "reason",
    "trigger_ref": "trigger_ref",
    "end_ref": "end_ref",
    "host_evidence": "host_evidence",
}
"""Export field -> column of the migrations table (migrations.parquet)."""

EVENT_KEY = ("source_path", "member", "record_id")
"""What names one stored event in evidence references (file, archive member, record)."""

DATA_TYPES = {"pfirewall": "windows:firewall:log_entry"}
"""Plaso's data_type per reading engine; every other engine read an EVTX record."""
EVTX_DATA_TYPE = "windows:evtx:record"

OWN_FIELDS = (
    "computer",
    "channel",
    "provider",
    "event_id",
    "record_id",
    "level",
    "user_sid",
    "source_path",
    "member",
    "file_sha256",
    "engine",
)
HEAD = ("message", "datetime", "timestamp_desc", "timestamp", "data_type", "tag")
PLASO = ("source_name", "event_identifier", "computer_name", "record_number", "event_level")
RESERVED = frozenset(HEAD + PLASO + OWN_FIELDS + ("data", "lmtrace_version"))


def field_name(key: str) -> str:
    """A payload name as a field: dots would nest in OpenSearch; our own names win."""
    name = re.sub(r"[^\w\-]", "_", key) or "_"
    return f"data_{name}" if name in RESERVED else name


def _value_words(catalog: Catalog) -> tuple[dict[str, str], dict[str, str]]:
    """(code -> word for direction codes, IANA number -> protocol name), from the catalog."""
    directions = {code: word.capitalize() for code, word in catalog.directions.items()}
    protocols = {str(number): name for name, number in catalog.protocols.items()}
    return directions, protocols


def event_rows(events: pl.DataFrame, catalog: Catalog) -> pl.DataFrame:
    """Stored events of one (provider, event id) as export rows, payload broken out.

    One event type at a time, so that a row carries the fields its event has, not
    every field of every event in the part as nulls.
    """
    directions, protocols = _value_words(catalog)
    data = events["data"].fill_null("{}")
    decoded = data.str.json_decode(infer_schema_length=None)
    keys = [f.name for f in decoded.dtype.fields] if isinstance(decoded.dtype, pl.Struct) else []
    payload = decoded.struct.unnest().select(pl.all().cast(pl.String)) if keys else pl.DataFrame()
    shown = [
        pl.when(pl.col("_p_" + k).is_not_null()).then(
            pl.format(
                "{}: {}",
                pl.lit(k),
                pl.col("_p_" + k)
                .replace(protocols if k.lower() == "protocol" else {})
                .replace(directions),
            )
        )
        for k in keys
    ]
    provider = pl.col("provider").fill_null("?")
    what = (
        pl.when(pl.col("engine") == "pfirewall")
        .then(pl.lit("pfirewall.log line"))
        .otherwise(pl.format("{} {}", provider, pl.col("event_id").cast(pl.String)))
    )
    message = pl.format("{} on {}: ", what, pl.col("computer").fill_null("?")) + (
        pl.concat_str(shown, separator="; ", ignore_nulls=True) if shown else pl.lit("")
    )
    frame = pl.concat([events, payload.rename({k: "_p_" + k for k in keys})], how="horizontal")
    return frame.select(
        message.alias("message"),
        pl.col("timestamp").alias("datetime"),
        pl.when(pl.col("engine") == "pfirewall")
        .then(pl.lit("Firewall Log Time"))
        .otherwise(pl.lit("Event Recorded"))
        .alias("timestamp_desc"),
        pl.col("timestamp").dt.epoch("us").alias("timestamp"),
        pl.col("engine")
        .replace_strict(DATA_TYPES, default=EVTX_DATA_TYPE, return_dtype=pl.String)
        .alias("data_type"),
        pl.col("tag"),
        provider.alias("source_name"),
        pl.col("event_id").alias("event_identifier"),
        pl.col("computer").alias("computer_name"),
        pl.col("record_id").alias("record_number"),
        pl.col("level").alias("event_level"),
        *OWN_FIELDS,
        pl.col("data"),
        pl.lit(__version__).alias("lmtrace_version"),
        *(pl.col("_p_" + k).alias(field_name(k)) for k in keys),
    ).with_columns(pl.col("message").str.replace(r": $", ""))


def tags(migrations: pl.DataFrame, blocked: pl.DataFrame) -> pl.DataFrame:
    """(source_path, member, record_id, tag) for each event a migration's verdict rests on:
    the host's migration events, the guest's trigger and window end, the blocked events."""
    m = migrations.select(
        pl.col(MIGRATION["migration_id"]).alias("mid"),
        pl.col(MIGRATION["verdict"]).alias("verdict"),
        pl.col(MIGRATION["trigger_ref"]).alias("trigger"),
        pl.col(MIGRATION["end_ref"]).alias("window end"),
        pl.col(MIGRATION["host_evidence"]).alias("migration"),
    )

    def refs(column: str, role: str, frame: pl.DataFrame) -> pl.DataFrame:
        return (
            frame.select("mid", "verdict", pl.col(column).alias("_ref"))
            .drop_nulls("_ref")
            .unnest("_ref")
            .select(*EVENT_KEY, "mid", "verdict", pl.lit(role).alias("role"))
        )

    parts = [
        refs("trigger", "quarantine trigger", m),
        refs("window end", "quarantine window end", m),
        refs("migration", "migration", m.explode("migration")),
    ]
    if blocked.height:
        verdicts = m.select("mid", "verdict")
        parts.append(
            blocked.select(*EVENT_KEY, pl.col("migration_id").alias("mid"))
            .join(verdicts, on="mid", how="left")
            .with_columns(pl.lit("blocked inbound").alias("role"))
        )
    typed = [
        p.with_columns(pl.col("record_id").cast(pl.Int64), pl.col("member").cast(pl.String))
        for p in parts
    ]
    return (
        pl.concat(typed, how="diagonal_relaxed")
        .with_columns(
            pl.concat_list(
                pl.col("mid"), pl.format("verdict {}", pl.col("verdict")), pl.col("role")
            ).alias("tag")
        )
        .group_by(*EVENT_KEY)
        .agg(pl.col("tag").explode().unique(maintain_order=True))
    )


def analysis_rows(migrations: pl.DataFrame) -> pl.DataFrame:
    """Each migration's start and completion and each guest window's opening and closing,
    as events of their own (data_type lmtrace:migration / lmtrace:quarantine)."""
    c = {field: pl.col(column) for field, column in MIGRATION.items()}
    mid, vm, verdict = c["migration_id"], c["vm_name"], c["verdict"]
    common = [
        mid.alias("migration_id"),
        vm.alias("vm_name"),
        verdict.alias("verdict"),
        pl.concat_list(mid, pl.format("verdict {}", verdict)).alias("tag"),
        pl.lit(__version__).alias("lmtrace_version"),
    ]
    route = pl.format("{} to {}", c["source"].fill_null("?"), c["destination"].fill_null("?"))
    moves = [
        (
            c["start"],
            "Migration Start",
            pl.format("{} live migration of {} from {} started", mid, vm, route),
        ),
        (
            c["end"],
            "Migration Completed",
            pl.format(
                "{} live migration of {} from {} completed, blackout {} s; verdict {}: {}",
                mid, vm, route, c["blackout_s"], verdict, c["reason"],
            ),
        ),
    ]  # fmt: skip
    windows = [
        (
            c["window_start"],
            "Quarantine Window Opened",
            pl.format(
                "{} guest {} quarantine window opened (network change after the migration)",
                mid, c["guest"],
            ),
        ),
        (
            c["window_end"],
            "Quarantine Window Closed",
            pl.format(
                "{} guest {} quarantine window closed after {} s ({}), ended by {}",
                mid, c["guest"], c["window_s"].round(1), c["window_words"],
                c["window_end_words"],
            ),
        ),
    ]  # fmt: skip
    rows = []
    for data_type, events, extra in (
        ("lmtrace:migration", moves, [c["blackout_s"].alias("blackout_s")]),
        (
            "lmtrace:quarantine",
            windows,
            [
                c["guest"].alias("computer_name"),
                c["window_class"].alias("window_class"),
                c["window_s"].alias("window_s"),
                c["window_start_host_clock"].alias("window_start_host_clock"),
                c["window_end_host_clock"].alias("window_end_host_clock"),
                c["blocked_inbound"].alias("blocked_inbound"),
            ],
        ),
    ):
        for at, what, message in events:
            rows.append(
                migrations.filter(at.is_not_null()).select(
                    message.alias("message"),
                    at.alias("datetime"),
                    pl.lit(what).alias("timestamp_desc"),
                    at.dt.epoch("us").alias("timestamp"),
                    pl.lit(data_type).alias("data_type"),
                    *common,
                    *extra,
                )
            )
    return pl.concat(rows, how="diagonal_relaxed")


def computers_of_unnamed(named: Mapping[str, str], frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with a null computer filled from ``named`` (file SHA-256 -> computer)."""
    if not named:
        return frame
    return frame.with_columns(
        pl.coalesce(
            pl.col("computer"),
            pl.col("file_sha256").replace_strict(named, default=None, return_dtype=pl.String),
        ).alias("computer")
    )
