"""Instants on the timeline: event markers on the lanes and blocked counts under them.

Why a module of its own: these layers draw single events (Netvsc 14,
classifications, allowed and blocked connections, host migration events) and
must stay readable and small when a bundle holds 100,000 of them. Each marker
layer is described by a :class:`Markers` value and drawn by one function,
:func:`_add_points`: a trace holds at most ``limit`` single markers; beyond that
its events are counted per lane in the narrowest bin of :data:`BIN_WIDTHS_S`
that keeps ``limit`` groups or fewer, drawn one marker per group sized by its
count, and the legend entry says so. The second row of the figure counts
blocked inbound connections per second (wider bins for long views), stacked by
protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from pipeline.catalog import ModelParams
from pipeline.timeline.lanes import ToLocal
from pipeline.timeline.plot import Plot, trace
from pipeline.timeline.text import binned_hover, blocked_detail, context_detail, event_hover

PROTOCOLS = {6: ("TCP", "#d62728"), 17: ("UDP", "#ff7f0e")}
OTHER_PROTOCOL = ("other", "#9467bd")
BIN_WIDTHS_S = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
COUNT_BINS_MAX = 4000


@dataclass(frozen=True)
class Markers:
    """How one marker layer looks and what its legend entry and ``meta.lmtrace`` say."""

    name: str  # legend text, before the event count
    group: str  # legend group
    symbol: str
    colour: str
    size: int
    offset: float  # above (+) or below (-) the lane's centre line
    role: str  # meta.lmtrace


TRIGGER = Markers(
    name="Network change (Netvsc 14)",
    group="guest",
    symbol="diamond",
    colour="#6a1b9a",
    size=11,
    offset=-0.22,
    role="trigger",
)
CLASSIFICATION = Markers(
    name="Network classification",
    group="guest",
    symbol="triangle-up",
    colour="#1b5e20",
    size=10,
    offset=-0.22,
    role="classification",
)
ALLOWED = Markers(
    name="Allowed inbound connection",
    group="guest",
    symbol="circle",
    colour="rgba(96,125,139,0.55)",
    size=5,
    offset=0.3,
    role="allowed",
)
HOST_EVENT = Markers(
    name="Host migration/cluster event",
    group="host",
    symbol="line-ns-open",
    colour="#0d47a1",
    size=12,
    offset=0.38,
    role="host-event",
)
OTHER_EVENT = Markers(
    name="Other catalog event",
    group="other",
    symbol="x-thin-open",
    colour="#9e9e9e",
    size=6,
    offset=0.3,
    role="other",
)


def _bin_width(times: pl.Series, keys: pl.DataFrame, limit: int) -> float | None:
    """The smallest bin (s) keeping distinct (key, bin) groups under ``limit``; None: no bins."""
    if times.len() <= limit:
        return None
    for width in BIN_WIDTHS_S:
        us = int(width * 1e6)
        groups = keys.with_columns((times.dt.epoch("us") // us).alias("_b")).n_unique()
        if groups <= limit:
            return width
    return BIN_WIDTHS_S[-1]


def _add_points(fig: Plot, frame: pl.DataFrame, style: Markers, limit: int) -> None:
    """Markers, one per event, or one per (lane, bin) sized by count when too dense."""
    if frame.is_empty():
        return
    width = _bin_width(frame["timestamp_host"], frame.select("lane"), limit)
    if width is None:
        fig.add_trace(
            trace(
                "scatter",
                x=frame["_t"].to_list(),
                y=(frame["lane"] + style.offset).to_list(),
                mode="markers",
                marker={
                    "symbol": style.symbol,
                    "color": style.colour,
                    "size": style.size,
                    "line": {"width": 0},
                },
                hovertext=frame["_hover"].to_list(),
                hoverinfo="text",
                name=f"{style.name} ({frame.height:,})",
                legendgroup=style.group,
                meta={"lmtrace": style.role, "events": frame.height, "binned_s": None},
            ),
            row=1,
        )
        return
    us = int(width * 1e6)
    binned = (
        frame.with_columns((pl.col("timestamp_host").dt.epoch("us") // us).alias("_b"))
        .group_by("lane", "_b")
        .agg(
            pl.col("_t").min(),
            pl.len().alias("_n"),
            pl.col("_hover").first().alias("_first"),
        )
        .sort("_t")
        .with_columns(binned_hover(width).alias("_text"))
    )
    fig.add_trace(
        trace(
            "scatter",
            x=binned["_t"].to_list(),
            y=(binned["lane"] + style.offset).to_list(),
            mode="markers",
            marker={
                "symbol": style.symbol,
                "color": style.colour,
                "size": (style.size + binned["_n"].sqrt().clip(0, 16 - style.size)).to_list(),
                "line": {"width": 0},
            },
            hovertext=binned["_text"].to_list(),
            hoverinfo="text",
            name=(
                f"{style.name} ({frame.height:,}; 1 marker per {width:g} s per lane, size ~ count)"
            ),
            legendgroup=style.group,
            meta={"lmtrace": style.role, "events": frame.height, "binned_s": width},
        ),
        row=1,
    )


def _on_lanes(
    events: pl.DataFrame, lanes: pl.DataFrame, local: ToLocal, detail: pl.Expr
) -> pl.DataFrame:
    """Events of the drawn machines, with their lane, display time and hover text."""
    return events.join(lanes, on="machine", how="inner").with_columns(
        local(pl.col("timestamp_host")).alias("_t"),
        event_hover(detail).alias("_hover"),
    )


def _by_protocol(frame: pl.DataFrame) -> Iterator[tuple[int | None, str, str, pl.DataFrame]]:
    """(protocol, name, colour, rows): TCP, UDP, then every other or unlogged protocol together."""
    for value, (name, colour) in PROTOCOLS.items():
        yield value, name, colour, frame.filter(pl.col("protocol") == value)
    other = ~pl.col("protocol").is_in(list(PROTOCOLS)).fill_null(False)
    yield None, *OTHER_PROTOCOL, frame.filter(other)


def add_context(
    fig: Plot,
    context: pl.DataFrame,
    lanes: pl.DataFrame,
    local: ToLocal,
    model: ModelParams,
    limit: int,
) -> None:
    """Context events, each in the first layer whose kinds it matches, the rest as 'other'."""
    frame = _on_lanes(context, lanes, local, context_detail())
    kind = pl.col("kind")
    layers = (
        (kind.is_in(model.trigger_kinds), TRIGGER),
        (kind.is_in(model.end_kinds), CLASSIFICATION),
        (kind.is_in(model.allowed_kinds) & pl.col("inbound"), ALLOWED),
        (kind.str.starts_with("migration.") | kind.str.starts_with("cluster."), HOST_EVENT),
    )
    taken = pl.lit(False)
    for condition, style in layers:
        _add_points(fig, frame.filter(condition & ~taken), style, limit)
        taken = taken | condition
    _add_points(fig, frame.filter(~taken), OTHER_EVENT, limit)


def add_blocked(
    fig: Plot, blocked: pl.DataFrame, lanes: pl.DataFrame, local: ToLocal, limit: int
) -> None:
    """Blocked inbound connections on their guest's lane, one layer per protocol."""
    frame = _on_lanes(blocked, lanes, local, blocked_detail())
    for value, name, colour, part in _by_protocol(frame):
        offset = 0.12 if value != 17 else 0.2
        style = Markers(
            name=f"Blocked inbound {name}",
            group="blocked",
            symbol="circle",
            colour=colour,
            size=7,
            offset=offset,
            role="blocked",
        )
        _add_points(fig, part, style, limit)


def add_counts(
    fig: Plot, blocked: pl.DataFrame, local: ToLocal, first: datetime, last: datetime
) -> float:
    """Blocked inbound per second (wider bins when the view is long), stacked by protocol."""
    span = (last - first).total_seconds()
    width = next(
        (w for w in BIN_WIDTHS_S if w >= 1 and span / w <= COUNT_BINS_MAX), BIN_WIDTHS_S[-1]
    )
    us = int(width * 1e6)
    counts = (
        blocked.with_columns((pl.col("timestamp_host").dt.epoch("us") // us * us).alias("_b"))
        .group_by("_b", "protocol")
        .agg(pl.len().alias("_n"))
        .with_columns(
            local(
                pl.from_epoch(pl.col("_b") + us // 2, time_unit="us").dt.replace_time_zone("UTC")
            ).alias("_t")
        )
        .sort("_b")
    )
    for value, name, colour, part in _by_protocol(counts):
        if value is None:
            part = part.group_by("_t").agg(pl.col("_n").sum()).sort("_t")
        if part.is_empty():
            continue
        fig.add_trace(
            trace(
                "bar",
                x=part["_t"].to_list(),
                y=part["_n"].to_list(),
                width=width * 1000 * 0.9,
                marker={"color": colour},
                name=f"Blocked {name} per {width:g} s",
                legendgroup="blocked",
                showlegend=False,
                hovertemplate=f"%{{y}} blocked {name} in %{{x}} (±{width / 2:g} s)<extra></extra>",
                meta={"lmtrace": "count"},
            ),
            row=2,
        )
    return width
