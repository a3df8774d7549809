"""pfirewall.log local times placed in the zone the guest's own System log names.

pfirewall.log writes local times without an offset and names no zone. When the
user gave none (``--guest-tz``), ingest stores the times as if they were UTC and
marks each row ``local_zone: unknown`` (parsers/pfirewall.py). The guest's
EventLog 6013 names its zone (machine_facts), so correlation places the rows
here, before anything reads their times, and says which zone it used and why.

Why resolve at correlation rather than at ingest: a log is read by a worker that
sees one file, while the zone is a fact of the machine, learnt from another file
(System.evtx) that may arrive in a later ingest into the same store; and the
stored row keeps what the log said, so a later ``--guest-tz`` run or a corrected
catalog can place it again.
"""

from __future__ import annotations

from datetime import timedelta, timezone

import polars as pl

from parsers.pfirewall import LOCAL_ZONE, PROVIDER, UNKNOWN_ZONE
from parsers.wall_clock import repeats, to_utc, undecided
from pipeline.machines import machine_of

LOG = ["source_path", "member"]  # one pfirewall.log, whose lines run in record_id order
UNRESOLVED = (pl.col("provider") == PROVIDER) & pl.col("data").str.contains(
    f'"{LOCAL_ZONE}": ?"{UNKNOWN_ZONE}"'
)


def _offset(bias_min: int) -> str:
    """A fixed offset polars accepts for a Windows bias (UTC = local + bias)."""
    return str(timezone(-timedelta(minutes=bias_min))).replace("UTC", "") or "+00:00"


def _zone_of(facts: pl.DataFrame) -> dict[str, tuple[str, str]]:
    """machine -> (zone polars can place local times in, how lmtrace knows it)."""
    out: dict[str, tuple[str, str]] = {}
    for row in facts.iter_rows(named=True):  # one row per machine
        logged = f"EventLog 6013: '{row['zones_logged'][-1]}'" if row["zones_logged"] else ""
        if row["zone_iana"]:
            out[row["machine"]] = (row["zone_iana"], f"the zone its System log names ({logged})")
        elif row["zone_bias_min"] is not None:
            zone = _offset(row["zone_bias_min"])
            out[row["machine"]] = (
                zone,
                f"the standard offset of the zone its System log names ({logged}; not a zone"
                " lmtrace can map, so daylight-saving time is not applied)",
            )
    return out


def _offset_at(zone: str, at: object) -> object:
    """The UTC offset ``zone`` has at the instant ``at`` (a timedelta)."""
    there = pl.Series([at]).dt.convert_time_zone(zone)
    return (there.dt.base_utc_offset() + there.dt.dst_offset()).item()


def _disagreements(
    events: pl.LazyFrame, machine: pl.Expr, zones: dict[str, tuple[str, str]]
) -> list[str]:
    """A note per machine whose firewall log was read in a zone (--guest-tz) whose offset
    differs from that of the zone its own System log names: one of the two is wrong."""
    given = (
        events.filter((pl.col("provider") == PROVIDER) & ~UNRESOLVED)
        .select(
            machine.alias("machine"),
            pl.col("data").str.extract(f'"{LOCAL_ZONE}": ?"([^"]*)"').alias("zone"),
            "timestamp",
        )
        .group_by("machine", "zone")
        .agg(pl.col("timestamp").min())
        .collect()
    )
    notes = []
    for row in given.drop_nulls().sort("machine", "zone").iter_rows(named=True):
        if row["machine"] not in zones:
            continue
        logged, why = zones[row["machine"]]
        if _offset_at(row["zone"], row["timestamp"]) != _offset_at(logged, row["timestamp"]):
            notes.append(
                f"pfirewall.log of {row['machine']} was read in {row['zone']} (--guest-tz), but"
                f" {logged} is {why}: their offsets differ, so one of the two is wrong"
            )
    return notes


def resolve(
    events: pl.LazyFrame, facts: pl.DataFrame, renamed: dict[str, str]
) -> tuple[pl.LazyFrame, list[str]]:
    """``events`` with unplaced pfirewall.log times in their machine's zone, and one note per
    machine saying which zone its firewall log was read in (for stderr and the report)."""
    if events.filter(pl.col("provider") == PROVIDER).select(pl.len()).collect().item() == 0:
        return events, []  # the usual case: one cheap look at one column
    machine = machine_of(pl.col("computer"), renamed)
    local = pl.col("timestamp").dt.replace_time_zone(None)
    zones = _zone_of(facts)
    notes = _disagreements(events, machine, zones)
    unresolved = (
        events.filter(UNRESOLVED)
        .select(
            machine.alias("machine"), local.alias("_local"), "source_path", "member", "record_id"
        )
        .collect()
    )
    if unresolved.is_empty():
        return events, notes
    placed = pl.col("timestamp")
    for name in sorted(unresolved["machine"].unique().drop_nulls().to_list()):
        lines = unresolved.filter(pl.col("machine") == name)
        if name not in zones:
            notes.append(
                f"pfirewall.log of {name}: local times read as UTC; no --guest-tz was given"
                " and its System log names no time zone (EventLog 6013): give --guest-tz"
            )
            continue
        zone, why = zones[name]
        # the hour repeated in autumn is told apart by the order each log wrote its
        # lines in (parsers/wall_clock.py); a window over every event costs a sort, so
        # only a log with lines in such an hour pays for it
        in_log = to_utc(local, zone)
        if lines.select(repeats(pl.col("_local"), zone).any()).item():
            in_log = in_log.over(LOG, order_by="record_id")
        placed = pl.when(UNRESOLVED & (machine == name)).then(in_log).otherwise(placed)
        read = lines.select(
            to_utc(pl.col("_local"), zone).is_null().sum().alias("gap"),  # in any order
            undecided(pl.col("_local"), zone)
            .over(LOG, order_by="record_id")
            .sum()
            .alias("undecided"),
        ).row(0, named=True)
        note = f"pfirewall.log of {name}: local times read in {zone}, {why}; --guest-tz overrides"
        if read["gap"]:
            note += f"; {read['gap']} line(s) fall in a daylight-saving gap and cannot be placed"
        if read["undecided"]:
            note += (
                f"; {read['undecided']} line(s) fall in the hour repeated when daylight saving"
                " time ended, and nothing in the log tells which pass: read at the offset"
                " before the change"
            )
        notes.append(note)
    if unresolved["machine"].null_count():
        notes.append(
            f"{unresolved['machine'].null_count()} pfirewall.log line(s) belong to no known"
            " computer: their local times were read as UTC"
        )
    return events.with_columns(placed.alias("timestamp")), notes
