"""Where things go on the timeline: one lane per machine, times on the display clock.

Why a module of its own: every layer places its marks with the same two
coordinates, a lane (``y = i`` for the ``i``-th machine, hosts above guests) and
a wall-clock time in the zone the user chose. This module decides the lane order
and labels, names the time converter the layers are given, and adds the legend
entries that say which guest clocks were moved onto the host clock, the one
fact a reader needs to trust that guest marks line up with host marks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from pipeline.correlate import Correlation
from pipeline.timeline.plot import Plot, trace
from pipeline.timeline.text import escaped_text, lane_label
from pipeline.wording import clock_words

ToLocal = Callable[[pl.Expr], pl.Expr]
"""UTC time column -> naive wall-clock time in the display zone."""


@dataclass(frozen=True)
class Lanes:
    """Lane order and labels: hosts above, guests below, each once."""

    keys: tuple[str, ...]  # machine (short lower-case name)
    labels: tuple[str, ...]  # escaped, with role and clock offset
    hosts: int

    def index(self) -> pl.DataFrame:
        return pl.DataFrame(
            {"machine": list(self.keys), "lane": list(range(len(self.keys)))},
            schema={"machine": pl.String, "lane": pl.Int64},
        )


def guest_offsets(result: Correlation) -> pl.DataFrame:
    """One row per matched guest: the offset the findings applied and how it was obtained."""
    return (
        result.migrations.filter(pl.col("machine").is_not_null())
        .group_by("machine")
        .agg(pl.col("clock_offset_s").drop_nulls().first(), pl.col("offset_method").first())
        .sort("machine")
    )


def lane_layout(result: Correlation, wanted: set[str] | None) -> Lanes:
    """The lanes of the machines in ``wanted`` (all when None), labelled with their clocks."""
    frame = (
        result.machines.filter(
            pl.lit(True) if wanted is None else pl.col("machine").is_in(sorted(wanted))
        )
        .join(guest_offsets(result), on="machine", how="left")
        .with_columns((pl.col("role") != "host").alias("_guest"))
        .sort("_guest", "machine")
        .with_columns(lane_label().alias("_label"))
    )
    return Lanes(
        tuple(frame["machine"].to_list()),
        tuple(frame["_label"].to_list()),
        int((~frame["_guest"]).sum()),
    )


def legend_notes(fig: Plot, result: Correlation, lanes: Lanes) -> None:
    """Invisible traces whose legend entries state each guest clock offset applied."""
    offsets = guest_offsets(result).filter(pl.col("machine").is_in(list(lanes.keys)))
    computers = dict(result.machines.select("machine", "computer").iter_rows())
    for machine, offset, method in offsets.iter_rows():
        name = escaped_text(computers.get(machine, machine))
        text = f"{name}: {escaped_text(clock_words(offset, method))}"
        fig.add_trace(
            trace(
                "scatter",
                x=[None],
                y=[None],
                mode="markers",
                marker={"symbol": "hourglass", "color": "#546e7a", "size": 9},
                name=text,
                legendgroup="offsets",
                legendgrouptitle={"text": "Guest clocks, drawn on the host clock"},
                hoverinfo="skip",
                meta={"lmtrace": "offset"},
            ),
            row=1,
        )
