"""Does the catalog fit these logs? Checked on the customer's own events, every analysis.

The problem: no public Hyper-V host log exists, so many host entries of the catalog
are inferred (field names, sides), and the simulator writes the same guesses: a
simulated test passes whether the guesses are right or not. The logs a customer
sends are the one place a wrong guess shows. So every analysis counts, per catalog
entry that matched events, how many of each payload field it expects came out
empty; lists what hosts logged under Hyper-V providers that no entry knows; and
looks whether the WFP entries' local and remote sides look the right way round
(a listening service port on the local side). The report says it plainly when a
guess does not fit, and ``lmtrace catalog check STORE`` prints the same, so a
support engineer with real host logs can correct the catalog with ``--catalog``.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.catalog import Catalog, tag

UNKNOWN_PROVIDERS = ("hyper-v",)
"""Providers whose events the catalog should know when they matter: Hyper-V's own."""
EMPTY_SHARE = 0.5
"""A field empty in more than this share of an entry's events is reported as not fitting."""
SIDES_MIN_EVENTS = 10
EPHEMERAL_PORT = 49152
"""IANA's first dynamic port (Windows' default ephemeral range starts here)."""

FIELD_SCHEMA = {
    "provider": pl.String,
    "event_id": pl.Int32,
    "kind": pl.String,
    "confidence": pl.String,
    "origin": pl.String,
    "events": pl.Int64,
    "column": pl.String,
    "payload": pl.String,
    "empty": pl.Int64,
}


@dataclass(frozen=True)
class CatalogCheck:
    """How the catalog fit one bundle's logs."""

    fields: pl.DataFrame  # FIELD_SCHEMA: per matched entry and mapped column
    unknown: pl.DataFrame  # provider, event_id, channel, events: Hyper-V events no entry knows
    sides: pl.DataFrame  # provider, event_id, inbound_tcp, looks_swapped (share)

    def problems(self) -> list[str]:
        """Each misfit in words, with what to do about it."""
        lines = [
            f"{r['provider']} {r['event_id']} ({r['kind']}, {r['confidence']}): {r['events']}"
            f" events, {r['payload']} empty in {r['empty']}: the catalog may not fit this"
            f" build; see --catalog ({r['origin']})"
            for r in self.fields.filter(pl.col("empty") > EMPTY_SHARE * pl.col("events"))
            .sort("provider", "event_id", "column")
            .iter_rows(named=True)
        ]
        lines += [
            f"{r['provider']} {r['event_id']}: in {r['looks_swapped']:.0%} of"
            f" {r['inbound_tcp']} inbound TCP events the local port is a client's (ephemeral)"
            " and the remote one a service's: the catalog's local and remote sides may be"
            " the other way round on this build; see --catalog"
            for r in self.sides.filter(pl.col("looks_swapped") > 0.5).iter_rows(named=True)
        ]
        lines += [
            f"{r['provider']} {r['event_id']} ({r['channel']}): {r['events']} events no catalog"
            " entry knows; if it is a migration event, add it with --catalog"
            for r in self.unknown.iter_rows(named=True)
        ]
        return lines


def _fields(tagged: pl.DataFrame, catalog: Catalog) -> pl.DataFrame:
    entries = pl.DataFrame(
        [
            {
                "entry": e.origin,
                "provider": e.provider,
                "event_id": e.event_id,
                "kind": e.kind,
                "confidence": e.confidence,
                "origin": e.origin,
                "column": column,
                "payload": payload,
            }
            for e in catalog.events
            for column, payload in e.fields.items()
            if column not in e.optional
        ],
        schema={
            "entry": pl.String,
            **{k: v for k, v in FIELD_SCHEMA.items() if k not in ("events", "empty")},
        },
    )
    columns = sorted(set(entries["column"]) & set(tagged.columns))
    if tagged.is_empty() or not columns:
        return pl.DataFrame(schema=FIELD_SCHEMA)
    empties = (
        tagged.group_by("entry")
        .agg(
            pl.len().cast(pl.Int64).alias("events"),
            *(pl.col(c).is_null().sum().cast(pl.Int64).alias(c) for c in columns),
        )
        .unpivot(index=["entry", "events"], on=columns, variable_name="column", value_name="empty")
    )
    return (
        entries.join(empties, on=["entry", "column"])
        .select(list(FIELD_SCHEMA))
        .sort("provider", "event_id", "column")
    )


def _sides(tagged: pl.DataFrame, catalog: Catalog) -> pl.DataFrame:
    """Per traffic entry: inbound TCP events between two ports, and the share of them whose
    local port is ephemeral while the remote one is a service port, i.e. a client's."""
    kinds = catalog.model.blocked_kinds + catalog.model.allowed_kinds
    local_ephemeral = pl.col("local_port") >= EPHEMERAL_PORT
    remote_ephemeral = pl.col("remote_port") >= EPHEMERAL_PORT
    # Only events where exactly one side is ephemeral tell: a client's port on the local
    # side and a service's on the remote one is an inbound connection named backwards.
    return (
        tagged.filter(
            pl.col("kind").is_in(kinds)
            & pl.col("inbound")
            & (pl.col("protocol") == 6)
            & (local_ephemeral != remote_ephemeral)
        )
        .group_by("provider", "event_id")
        .agg(
            pl.len().cast(pl.Int64).alias("inbound_tcp"),
            local_ephemeral.mean().alias("looks_swapped"),
        )
        .filter(pl.col("inbound_tcp") >= SIDES_MIN_EVENTS)
        .sort("provider", "event_id")
    )


def unknown_events(events: pl.LazyFrame, catalog: Catalog) -> pl.DataFrame:
    """Events of Hyper-V providers that no catalog entry knows (no payload is read)."""
    known = pl.DataFrame(
        {
            "_prov": [e.provider.lower() for e in catalog.events],
            "event_id": [e.event_id for e in catalog.events],
        },
        schema={"_prov": pl.String, "event_id": pl.Int32},
    ).unique()
    lower = pl.col("provider").str.to_lowercase()
    return (
        events.filter(
            pl.any_horizontal(lower.str.contains(p, literal=True) for p in UNKNOWN_PROVIDERS)
        )
        .group_by("provider", "event_id", "channel")
        .agg(pl.len().cast(pl.Int64).alias("events"))
        .with_columns(pl.col("provider").str.to_lowercase().alias("_prov"))
        .collect()
        .join(known, on=["_prov", "event_id"], how="anti")
        .drop("_prov")
        .sort("provider", "event_id", "channel")
    )


TRAFFIC_SAMPLE = 200_000
"""Firewall connection events checked per store by ``lmtrace catalog check`` (a busy
server logs millions, all alike)."""


def check_store(events: pl.LazyFrame, catalog: Catalog) -> CatalogCheck:
    """The check over a whole store's events: every event the catalog knows, but only the
    first ``TRAFFIC_SAMPLE`` firewall connection events."""
    model = catalog.model
    traffic, other = catalog.split(model.blocked_kinds + model.allowed_kinds)
    traffic_ids = sorted({e.event_id for e in traffic.events})
    sample = events.filter(pl.col("event_id").is_in(traffic_ids)).head(TRAFFIC_SAMPLE)
    tagged = pl.concat([tag(events, other), tag(sample, traffic)], how="diagonal_relaxed")
    return check(tagged, events, catalog)


def check(tagged: pl.DataFrame, events: pl.LazyFrame, catalog: Catalog) -> CatalogCheck:
    """How ``catalog`` fit the bundle: ``tagged`` are its tagged events (with ``entry``)."""
    return CatalogCheck(
        fields=_fields(tagged, catalog),
        unknown=unknown_events(events, catalog),
        sides=_sides(tagged, catalog),
    )
