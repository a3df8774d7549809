"""The layers of a timeline figure: lanes, migration spans, guest windows, markers, counts.

Each function adds one kind of fact from :class:`Correlation` to a plotly
figure whose first row holds one lane per machine (lane ``i`` at y = i) and
whose second row holds the blocked-per-second bars. Every trace carries
``meta.lmtrace`` naming what it draws, so tests and readers can find it. Text
from the logs goes through :func:`escaped` before it enters the figure; times
are converted for display by the ``local`` function the caller passes (UTC to
wall-clock time in the zone the user chose).

Dense markers: a trace holds at most ``limit`` single markers; beyond that its
events are counted per lane in the narrowest bin of :data:`BIN_WIDTHS_S` that
keeps ``limit`` groups or fewer, drawn one marker per group sized by its count,
and the legend entry says so.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import plotly.graph_objects as go
import polars as pl

from pipeline.catalog import ModelParams
from pipeline.correlate import Correlation
from pipeline.machines import short_name

ToLocal = Callable[[pl.Expr], pl.Expr]
"""UTC time column -> naive wall-clock time in the display zone."""

PROTOCOLS = {6: ("TCP", "#d62728"), 17: ("UDP", "#ff7f0e")}
OTHER_PROTOCOL = ("other", "#9467bd")
VERDICT_COLOURS = {
    "affected": "#c62828",
    "likely-affected": "#ef6c00",
    "inconclusive": "#757575",
    "not-affected": "#2e7d32",
}
QUARANTINE_COLOURS = {
    "safety-timeout": "rgba(198,40,40,0.22)",
    "prolonged": "rgba(239,108,0,0.22)",
    "normal": "rgba(46,125,50,0.18)",
}
BIN_WIDTHS_S = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
COUNT_BINS_MAX = 4000
LABELS_MAX = 40  # span labels beyond this many would only overlap


# ----- escaping and text


def escaped(expr: pl.Expr) -> pl.Expr:
    """Log text made inert for plotly labels and HTML: & < > " ' become entities."""
    out = expr.cast(pl.String).fill_null("")
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;")):
        out = out.str.replace_all(char, entity, literal=True)
    return out.str.replace_all("'", "&#39;", literal=True)


def _where() -> pl.Expr:
    """'file!member, record 231' from the provenance columns, escaped."""
    member = pl.col("member")
    return pl.concat_str(
        escaped(pl.col("source_path")),
        pl.when(member.is_not_null()).then(pl.lit("!") + escaped(member)).otherwise(pl.lit("")),
        pl.lit(", record "),
        pl.col("record_id").cast(pl.String).fill_null("?"),
    )


# ----- lanes


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
    offsets = guest_offsets(result)
    frame = (
        result.machines.filter(
            pl.lit(True) if wanted is None else pl.col("machine").is_in(sorted(wanted))
        )
        .join(offsets, on="machine", how="left")
        .with_columns((pl.col("role") != "host").alias("_guest"))
        .sort("_guest", "machine")
        .with_columns(
            pl.concat_str(
                pl.lit("<b>"),
                escaped(pl.col("computer")),
                pl.lit("</b>  "),
                pl.when(pl.col("role") == "host")
                .then(pl.lit("host"))
                .when(pl.col("clock_offset_s").is_not_null())
                .then(
                    pl.format(
                        "guest, shifted {} s",
                        (-pl.col("clock_offset_s")).round(3).cast(pl.String),
                    )
                )
                .otherwise(pl.lit("guest, own clock")),
            ).alias("_label")
        )
    )
    return Lanes(
        tuple(frame["machine"].to_list()),
        tuple(frame["_label"].to_list()),
        int((~frame["_guest"]).sum()),
    )


# ----- traces


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


def span_frame(migs: pl.DataFrame, local: ToLocal, lanes: pl.DataFrame) -> pl.DataFrame:
    """Each migration once per host lane it touches, with display times and hover text."""
    start = pl.coalesce("start", "end")
    last = pl.col("host_evidence").list.last()  # the event that ended it, in time order
    frame = migs.with_columns(
        short_name(pl.col("source")).alias("_src"),
        short_name(pl.col("destination")).alias("_dst"),
    ).with_columns(
        local(start).alias("_s"),
        local(pl.coalesce("end", "start")).alias("_e"),
        local(start + (pl.coalesce("end", "start") - start) / 2).alias("_m"),
        local(
            pl.col("end") - pl.duration(microseconds=pl.col("blackout_s").fill_null(0) * 1e6)
        ).alias("_bs"),
        pl.concat_str(
            pl.lit("<b>"),
            escaped(pl.col("migration_id")),
            pl.lit(" "),
            escaped(pl.col("vm_name")),
            pl.lit("</b><br>"),
            escaped(pl.col("source")),
            pl.lit(" → "),
            escaped(pl.col("destination")),
            pl.lit("<br>start "),
            pl.col("start").dt.strftime("%H:%M:%S%.3f").fill_null("not logged"),
            pl.lit(" · end "),
            pl.col("end").dt.strftime("%H:%M:%S%.3f").fill_null("not logged"),
            pl.lit(" UTC<br>"),
            escaped(pl.col("status")),
            pl.lit(", blackout "),
            pl.col("blackout_s").round(3).cast(pl.String).fill_null("not logged"),
            pl.lit(" s<br>verdict: "),
            escaped(pl.col("verdict")),
            pl.lit("<br>last host event: "),
            pl.concat_str(
                escaped(last.struct.field("kind")),
                pl.lit(" (event "),
                last.struct.field("event_id").cast(pl.String),
                pl.lit(") in "),
                escaped(last.struct.field("source_path")),
                pl.lit(", record "),
                last.struct.field("record_id").cast(pl.String),
            ).fill_null("none"),
        ).alias("_hover"),
    )
    sides = [frame.with_columns(pl.col(side).alias("_host")) for side in ("_src", "_dst")]
    return (
        pl.concat(sides)
        .unique(subset=["migration_id", "_host"], maintain_order=True)
        .join(lanes.rename({"machine": "_host"}), on="_host", how="inner")
        .pipe(_stack)
    )


def add_migrations(fig: go.Figure, spans: pl.DataFrame) -> None:
    for verdict, colour in VERDICT_COLOURS.items():
        part = spans.filter(pl.col("verdict") == verdict)
        if part.is_empty():
            continue
        xs, ys = _segments(part, "_s", "_m")
        hover = [h for h in part["_hover"].to_list() for h in (h, h, h, None)]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                line={"color": colour, "width": 9},
                marker={"size": 4, "color": colour},
                hovertext=hover,
                hoverinfo="text",
                name=f"Migration, {verdict} ({part['migration_id'].n_unique()})",
                legendgroup="migrations",
                legendgrouptitle_text="Migrations (start → completion)",
                meta={"lmtrace": "migration", "migrations": part["migration_id"].to_list()},
            ),
            row=1,
            col=1,
        )
    if 0 < spans.height <= LABELS_MAX:
        fig.add_trace(
            go.Scatter(
                x=spans["_m"].to_list(),
                y=(spans["_y"] - 0.05).to_list(),
                mode="text",
                text=spans.select(
                    pl.concat_str(
                        escaped(pl.col("migration_id")), pl.lit(" · "), escaped(pl.col("vm_name"))
                    )
                )
                .to_series()
                .to_list(),
                textposition="top center",
                textfont={"size": 10, "color": "#37474f"},
                hoverinfo="skip",
                showlegend=False,
                meta={"lmtrace": "label"},
            ),
            row=1,
            col=1,
        )
    black = spans.filter(pl.col("blackout_s").is_not_null() & pl.col("end").is_not_null())
    if black.height:
        xs, ys = _segments(black, "_bs", "_bs")
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",  # the tick keeps a sub-pixel blackout visible
                line={"color": "#111111", "width": 15},
                marker={"symbol": "line-ns", "size": 18, "line": {"width": 3, "color": "#111111"}},
                hovertext=[
                    t
                    for v in black["blackout_s"].to_list()
                    for t in (
                        f"blackout {v:.3f} s (host-reported length,<br>drawn ending at completion)",
                    )
                    * 3
                    + (None,)
                ],
                hoverinfo="text",
                name="Blackout (length from the host, drawn ending at completion)",
                legendgroup="migrations",
                meta={"lmtrace": "blackout"},
            ),
            row=1,
            col=1,
        )


def add_quarantine(fig: go.Figure, migs: pl.DataFrame, lanes: pl.DataFrame, local: ToLocal) -> None:
    """The guest's quarantine window, from q0_host to q_end_host, shaded on its lane."""
    windows = (
        migs.filter(pl.col("q0_host").is_not_null() & pl.col("q_end_host").is_not_null())
        .join(lanes, on="machine", how="inner")
        .with_columns(
            local(pl.col("q0_host")).alias("_a"),
            local(pl.col("q_end_host")).alias("_b"),
            pl.concat_str(
                pl.lit("<b>quarantine "),
                escaped(pl.col("quarantine_class")),
                pl.lit("</b> on "),
                escaped(pl.col("machine")),
                pl.lit(" ("),
                escaped(pl.col("migration_id")),
                pl.lit(")<br>"),
                pl.col("q_duration_s").round(2).cast(pl.String).fill_null("?"),
                pl.lit(" s, ended by "),
                escaped(pl.col("end_evidence")),
                pl.lit("<br>"),
                pl.col("blocked_inbound").cast(pl.String),
                pl.lit(" blocked inbound (TCP "),
                pl.col("blocked_tcp").cast(pl.String),
                pl.lit(", UDP "),
                pl.col("blocked_udp").cast(pl.String),
                pl.lit(")"),
            ).alias("_hover"),
        )
    )
    for cls in windows["quarantine_class"].unique(maintain_order=True).to_list():
        part = windows.filter(pl.col("quarantine_class") == cls)
        xs: list = []
        ys: list = []
        hover: list = []
        for a, b, lane, text in part.select("_a", "_b", "lane", "_hover").iter_rows():
            xs += [a, b, b, a, a, None]
            ys += [lane - 0.42, lane - 0.42, lane + 0.42, lane + 0.42, lane - 0.42, None]
            hover += [text] * 5 + [None]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                fill="toself",
                fillcolor=QUARANTINE_COLOURS.get(cls, "rgba(117,117,117,0.2)"),
                line={
                    "width": 1,
                    "color": QUARANTINE_COLOURS.get(cls, "#9e9e9e").replace("0.2", "0.8"),
                },
                hovertext=hover,
                hoveron="fills+points",
                hoverinfo="text",
                name=f"Quarantine window, {html.escape(str(cls))} ({part.height})",
                legendgroup="guest",
                legendgrouptitle_text="Guest (on the host clock)",
                meta={"lmtrace": "quarantine", "migrations": part["migration_id"].to_list()},
            ),
            row=1,
            col=1,
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


def _add_points(
    fig: go.Figure,
    frame: pl.DataFrame,
    *,
    name: str,
    group: str,
    symbol: str,
    colour: str,
    size: int,
    offset: float,
    limit: int,
    role: str,
) -> None:
    """Markers, one per event, or one per (lane, bin) sized by count when too dense."""
    if frame.is_empty():
        return
    width = _bin_width(frame["timestamp_host"], frame.select("lane"), limit)
    if width is None:
        fig.add_trace(
            go.Scatter(
                x=frame["_t"].to_list(),
                y=(frame["lane"] + offset).to_list(),
                mode="markers",
                marker={"symbol": symbol, "color": colour, "size": size, "line": {"width": 0}},
                hovertext=frame["_hover"].to_list(),
                hoverinfo="text",
                name=f"{name} ({frame.height:,})",
                legendgroup=group,
                meta={"lmtrace": role, "events": frame.height, "binned_s": None},
            ),
            row=1,
            col=1,
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
        .with_columns(
            pl.format(
                "<b>{} events in {} s</b><br>first:<br>{}",
                pl.col("_n"),
                pl.lit(width),
                pl.col("_first"),
            ).alias("_text")
        )
    )
    fig.add_trace(
        go.Scatter(
            x=binned["_t"].to_list(),
            y=(binned["lane"] + offset).to_list(),
            mode="markers",
            marker={
                "symbol": symbol,
                "color": colour,
                "size": (size + binned["_n"].sqrt().clip(0, 16 - size)).to_list(),
                "line": {"width": 0},
            },
            hovertext=binned["_text"].to_list(),
            hoverinfo="text",
            name=f"{name} ({frame.height:,}; 1 marker per {width:g} s per lane, size ~ count)",
            legendgroup=group,
            meta={"lmtrace": role, "events": frame.height, "binned_s": width},
        ),
        row=1,
        col=1,
    )


def _event_hover(frame: pl.DataFrame, local: ToLocal, detail: pl.Expr) -> pl.DataFrame:
    """Display time and hover text: time, machine, event id, key fields, file and record id."""
    return frame.with_columns(
        local(pl.col("timestamp_host")).alias("_t"),
        pl.concat_str(
            pl.lit("<b>"),
            escaped(pl.col("kind")),
            pl.lit("</b> · event "),
            pl.col("event_id").cast(pl.String).fill_null("?"),
            pl.lit("<br>"),
            escaped(pl.col("computer")),
            pl.lit(" · "),
            pl.col("timestamp_host").dt.strftime("%Y-%m-%d %H:%M:%S%.3f"),
            pl.lit(" UTC (host clock; logged "),
            pl.col("timestamp").dt.strftime("%H:%M:%S%.3f"),
            pl.lit(")<br>"),
            detail,
            pl.lit("<br>"),
            _where(),
        ).alias("_hover"),
    )


def add_context(
    fig: go.Figure,
    context: pl.DataFrame,
    lanes: pl.DataFrame,
    local: ToLocal,
    model: ModelParams,
    limit: int,
) -> None:
    frame = context.join(lanes, on="machine", how="inner")
    detail = pl.concat_str(
        pl.when(pl.col("vm_name").is_not_null())
        .then(pl.lit("VM ") + escaped(pl.col("vm_name")) + pl.lit(" "))
        .otherwise(pl.lit("")),
        pl.when(pl.col("nic_name").is_not_null())
        .then(pl.lit("NIC ") + escaped(pl.col("nic_name")) + pl.lit(" "))
        .otherwise(pl.lit("")),
        pl.when(pl.col("profile").is_not_null())
        .then(pl.lit("profile ") + escaped(pl.col("profile")) + pl.lit(" "))
        .otherwise(pl.lit("")),
        pl.when(pl.col("remote_address").is_not_null())
        .then(
            pl.lit("remote ")
            + escaped(pl.col("remote_address"))
            + pl.lit(" → port ")
            + pl.col("local_port").cast(pl.String).fill_null("?")
        )
        .otherwise(pl.lit("")),
    )
    frame = _event_hover(frame, local, detail)
    kind = pl.col("kind")
    layers = (
        (
            kind.is_in(model.trigger_kinds),
            "Network change (Netvsc 14)",
            "guest",
            "diamond",
            "#6a1b9a",
            11,
            -0.22,
            "trigger",
        ),
        (
            kind.is_in(model.end_kinds),
            "Network classification",
            "guest",
            "triangle-up",
            "#1b5e20",
            10,
            -0.22,
            "classification",
        ),
        (
            kind.is_in(model.allowed_kinds) & pl.col("inbound"),
            "Allowed inbound connection",
            "guest",
            "circle",
            "rgba(96,125,139,0.55)",
            5,
            0.3,
            "allowed",
        ),
        (
            kind.str.starts_with("migration.") | kind.str.starts_with("cluster."),
            "Host migration/cluster event",
            "host",
            "line-ns-open",
            "#0d47a1",
            12,
            0.38,
            "host-event",
        ),
    )
    taken = pl.lit(False)
    for condition, name, group, symbol, colour, size, offset, role in layers:
        part = frame.filter(condition & ~taken)
        taken = taken | condition
        _add_points(
            fig,
            part,
            name=name,
            group=group,
            symbol=symbol,
            colour=colour,
            size=size,
            offset=offset,
            limit=limit,
            role=role,
        )
    rest = frame.filter(~taken)
    _add_points(
        fig,
        rest,
        name="Other catalog event",
        group="other",
        symbol="x-thin-open",
        colour="#9e9e9e",
        size=6,
        offset=0.3,
        limit=limit,
        role="other",
    )


def add_blocked(
    fig: go.Figure, blocked: pl.DataFrame, lanes: pl.DataFrame, local: ToLocal, limit: int
) -> None:
    frame = blocked.join(lanes, on="machine", how="inner")
    detail = pl.concat_str(
        escaped(pl.col("remote_address")),
        pl.lit(":"),
        pl.col("remote_port").cast(pl.String).fill_null("?"),
        pl.lit(" → "),
        escaped(pl.col("local_address")),
        pl.lit(":"),
        pl.col("local_port").cast(pl.String).fill_null("?"),
        pl.lit(" · protocol "),
        pl.col("protocol").cast(pl.String).fill_null("?"),
        pl.lit(" · "),
        escaped(pl.col("migration_id")),
    )
    frame = _event_hover(frame, local, detail)
    known = list(PROTOCOLS)
    for value, (name, colour) in [*PROTOCOLS.items(), (None, OTHER_PROTOCOL)]:
        part = frame.filter(
            pl.col("protocol") == value
            if value is not None
            else ~pl.col("protocol").is_in(known).fill_null(False)
        )
        _add_points(
            fig,
            part,
            name=f"Blocked inbound {name}",
            group="blocked",
            symbol="circle",
            colour=colour,
            size=7,
            offset=0.12 if value != 17 else 0.2,
            limit=limit,
            role="blocked",
        )


def add_counts(
    fig: go.Figure, blocked: pl.DataFrame, local: ToLocal, first: datetime, last: datetime
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
    known = list(PROTOCOLS)
    for value, (name, colour) in [*PROTOCOLS.items(), (None, OTHER_PROTOCOL)]:
        part = counts.filter(
            pl.col("protocol") == value
            if value is not None
            else ~pl.col("protocol").is_in(known).fill_null(False)
        )
        if value is None:
            part = part.group_by("_t").agg(pl.col("_n").sum()).sort("_t")
        if part.is_empty():
            continue
        fig.add_trace(
            go.Bar(
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
            col=1,
        )
    return width


def legend_notes(fig: go.Figure, result: Correlation, lanes: Lanes) -> None:
    """Invisible traces whose legend entries state each guest clock offset applied."""
    offsets = guest_offsets(result).filter(pl.col("machine").is_in(list(lanes.keys)))
    computers = dict(result.machines.select("machine", "computer").iter_rows())
    for machine, offset, method in offsets.iter_rows():
        name = html.escape(str(computers.get(machine, machine)))
        text = (
            f"{name}: moved by {-offset:+.3f} s ({html.escape(str(method))})"
            if offset is not None
            else f"{name}: no offset known, own clock"
        )
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                marker={"symbol": "hourglass", "color": "#546e7a", "size": 9},
                name=text,
                legendgroup="offsets",
                legendgrouptitle_text="Guest clocks moved onto the host clock",
                hoverinfo="skip",
                meta={"lmtrace": "offset"},
            ),
            row=1,
            col=1,
        )
