"""Spans on the timeline: migrations on their host lanes, quarantine windows on guest lanes.

Why a module of its own: these layers draw intervals, not instants. A
migration is a line from start to completion on both its source and
destination host lanes (stacked when migrations overlap on one host), with the
host-reported blackout as a heavy tick ending at completion; a quarantine
window is a shaded box on its guest's lane from ``q0_host`` to ``q_end_host``.
Both are drawn as one plotly trace per verdict or class, their shapes separated
by None, so each point of a shape repeats its hover text (:func:`_per_point`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import polars as pl

from pipeline.machines import machine_of
from pipeline.timeline.lanes import ToLocal
from pipeline.timeline.plot import Plot, trace
from pipeline.timeline.text import (
    blackout_hover,
    escaped_text,
    quarantine_hover,
    span_hover,
    span_label,
)
from pipeline.verdict_table import load_table

QUARANTINE_COLOURS = {
    "safety-timeout": "rgba(198,40,40,0.22)",
    "prolonged": "rgba(239,108,0,0.22)",
    "normal": "rgba(46,125,50,0.18)",
}
LABELS_MAX = 40  # span labels beyond this many would only overlap


def _per_point(texts: Iterable[str | None], points: int) -> list[str | None]:
    """Each shape's text on each of its ``points``, then None for the gap after the shape."""
    return [t for text in texts for t in [text] * points + [None]]


def _segments(frame: pl.DataFrame, start: str, middle: str) -> tuple[list, list]:
    """x/y lists of (start, middle, end) per row at height ``_y``, separated by None."""
    xs: list = []
    ys: list = []
    for a, m, b, y in frame.select(start, pl.col(middle).alias("_mid"), "_e", "_y").iter_rows():
        xs += [a, m, b, None]
        ys += [y, y, y, None]
    return xs, ys


def _stack(frame: pl.DataFrame) -> pl.DataFrame:
    """Height ``_y`` per span: overlapping migrations on one host lane get their own rows."""
    heights = []
    for _, part in frame.sort("_host", "_s").group_by("_host", maintain_order=True):
        ends: list = []  # end time of the last span in each row
        slots = []
        for a, b in part.select("_s", "_e").iter_rows():
            slot = next((i for i, end in enumerate(ends) if end < a), len(ends))
            ends[slot : slot + 1] = [b]
            slots.append(slot)
        step = min(0.3, 0.8 / max(len(ends), 1))
        lane = part["lane"][0]
        heights.append(
            part.with_columns(
                pl.Series("_y", [lane + (s - (len(ends) - 1) / 2) * step for s in slots])
            )
        )
    return pl.concat(heights) if heights else frame.with_columns(pl.lit(0.0).alias("_y"))


def span_frame(
    migs: pl.DataFrame, local: ToLocal, lanes: pl.DataFrame, aliases: Mapping[str, str]
) -> pl.DataFrame:
    """Each migration once per host lane it touches, with display times and hover text.

    Hosts are named as the migration logged them; ``aliases`` (Correlation.aliases) puts a
    name from before a rename on the lane of the machine it is now."""
    start = pl.coalesce("start", "end")
    frame = migs.with_columns(
        machine_of(pl.col("source"), aliases).alias("_src"),
        machine_of(pl.col("destination"), aliases).alias("_dst"),
    ).with_columns(
        local(start).alias("_s"),
        local(pl.coalesce("end", "start")).alias("_e"),
        local(start + (pl.coalesce("end", "start") - start) / 2).alias("_m"),
        local(
            pl.col("end") - pl.duration(microseconds=pl.col("blackout_s").fill_null(0) * 1e6)
        ).alias("_bs"),
        span_hover().alias("_hover"),
    )
    sides = [frame.with_columns(pl.col(side).alias("_host")) for side in ("_src", "_dst")]
    # Every host that logged the migration gets its span, whether or not its side is known.
    logged = frame.with_columns(
        pl.col("logged_by").list.eval(machine_of(pl.element(), aliases)).alias("_host")
    ).explode("_host")
    return (
        pl.concat([*sides, logged])
        .unique(subset=["migration_id", "_host"], maintain_order=True)
        .join(lanes.rename({"machine": "_host"}), on="_host", how="inner")
        .pipe(_stack)
    )


def add_migrations(fig: Plot, spans: pl.DataFrame) -> None:
    """Spans coloured by verdict, their labels while few enough to read, and blackout ticks."""
    for verdict, colour in ((v.name, v.colour) for v in load_table().meanings):
        part = spans.filter(pl.col("verdict") == verdict)
        if part.is_empty():
            continue
        xs, ys = _segments(part, "_s", "_m")
        fig.add_trace(
            trace(
                "scatter",
                x=xs,
                y=ys,
                mode="lines+markers",
                line={"color": colour, "width": 9},
                marker={"size": 4, "color": colour},
                hovertext=_per_point(part["_hover"].to_list(), 3),
                hoverinfo="text",
                name=f"Migration, {verdict} ({part['migration_id'].n_unique()})",
                legendgroup="migrations",
                legendgrouptitle={"text": "Migrations (start → completion)"},
                meta={"lmtrace": "migration", "migrations": part["migration_id"].to_list()},
            ),
            row=1,
        )
    if 0 < spans.height <= LABELS_MAX:
        fig.add_trace(
            trace(
                "scatter",
                x=spans["_m"].to_list(),
                y=(spans["_y"] - 0.05).to_list(),
                mode="text",
                text=spans.select(span_label()).to_series().to_list(),
                textposition="top center",
                textfont={"size": 10, "color": "#37474f"},
                hoverinfo="skip",
                showlegend=False,
                meta={"lmtrace": "label"},
            ),
            row=1,
        )
    black = spans.filter(pl.col("blackout_s").is_not_null() & pl.col("end").is_not_null())
    if black.height:
        xs, ys = _segments(black, "_bs", "_bs")
        fig.add_trace(
            trace(
                "scatter",
                x=xs,
                y=ys,
                mode="lines+markers",  # the tick keeps a sub-pixel blackout visible
                line={"color": "#111111", "width": 15},
                marker={"symbol": "line-ns", "size": 18, "line": {"width": 3, "color": "#111111"}},
                hovertext=_per_point(map(blackout_hover, black["blackout_s"].to_list()), 3),
                hoverinfo="text",
                name="Blackout (length from the host, drawn ending at completion)",
                legendgroup="migrations",
                meta={"lmtrace": "blackout"},
            ),
            row=1,
        )


def add_quarantine(fig: Plot, migs: pl.DataFrame, lanes: pl.DataFrame, local: ToLocal) -> None:
    """The guest's quarantine window, from q0_host to q_end_host, shaded on its lane."""
    windows = (
        migs.filter(pl.col("q0_host").is_not_null() & pl.col("q_end_host").is_not_null())
        .join(lanes, on="machine", how="inner")
        .with_columns(
            local(pl.col("q0_host")).alias("_a"),
            local(pl.col("q_end_host")).alias("_b"),
            quarantine_hover().alias("_hover"),
        )
    )
    for cls in windows["quarantine_class"].unique(maintain_order=True).to_list():
        part = windows.filter(pl.col("quarantine_class") == cls)
        xs: list = []
        ys: list = []
        for a, b, lane in part.select("_a", "_b", "lane").iter_rows():
            xs += [a, b, b, a, a, None]
            ys += [lane - 0.42, lane - 0.42, lane + 0.42, lane + 0.42, lane - 0.42, None]
        fig.add_trace(
            trace(
                "scatter",
                x=xs,
                y=ys,
                mode="lines",
                fill="toself",
                fillcolor=QUARANTINE_COLOURS.get(cls, "rgba(117,117,117,0.2)"),
                line={
                    "width": 1,
                    "color": QUARANTINE_COLOURS.get(cls, "#9e9e9e").replace("0.2", "0.8"),
                },
                hovertext=_per_point(part["_hover"].to_list(), 5),
                hoveron="fills+points",
                hoverinfo="text",
                name=f"Quarantine window, {escaped_text(part['window_words'][0])} ({part.height})",
                legendgroup="guest",
                legendgrouptitle={"text": "Guest (on the host clock)"},
                meta={"lmtrace": "quarantine", "migrations": part["migration_id"].to_list()},
            ),
            row=1,
        )
