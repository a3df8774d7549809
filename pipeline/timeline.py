"""Timelines: the findings drawn as offline plotly pages a customer can open anywhere.

The problem: a verdict says "blocked for 7 s", but a customer believes it when
they see the migration, the guest's quarantine and the dropped connections
line up on one time axis. This module draws exactly what :class:`Correlation`
holds (habit 9: it never recomputes a fact): one lane per machine (hosts
above, guests below), each migration as a span on its source and destination
host lanes with the host-reported blackout at its end, the guest's quarantine
window shaded, Netvsc 14 and classification markers, blocked inbound
connections coloured by protocol, and a per-second count of blocked
connections under the lanes.

Guest events are drawn at ``timestamp_host`` (the guest clock moved by the
estimated offset), and the legend names each offset. Everything that came from
a log is HTML-escaped before it enters the figure, since plotly renders a
subset of HTML in labels and hover text. Dense markers are aggregated into
time bins once a trace would exceed ``detail_max`` points, and the legend says
so; that keeps 100,000 events under 10 MB of HTML.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import plotly.graph_objects as go
import polars as pl
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from parsers.model import LmtraceError
from pipeline.catalog import ModelParams
from pipeline.correlate import Correlation
from pipeline.machines import short_name
from pipeline.store import parse_utc

TIMELINE_FILE = "timeline.html"
PER_MIGRATION_FOLDER = "timelines"

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


class TimelineError(LmtraceError):
    """A timeline option the user can fix: an unknown zone, migration or window."""


@dataclass(frozen=True)
class TimelineSettings:
    """How to draw: zone, what to zoom on, and how many single markers a trace may hold."""

    tz: str = "UTC"
    around: str | None = None  # a migration id or an ISO 8601 time
    window_s: float = 30.0
    detail_max: int = 2000  # per trace; five dense traces stay under ~3 MB of hover text


# ----- time zones and windows


@dataclass(frozen=True)
class DisplayZone:
    """The zone times are shown in: an IANA name or a fixed offset such as +05:30."""

    name: str
    tzinfo: timezone | ZoneInfo

    def local(self, expr: pl.Expr) -> pl.Expr:
        """A UTC time column as naive wall-clock time in this zone (what plotly draws)."""
        if isinstance(self.tzinfo, ZoneInfo):
            return expr.dt.convert_time_zone(self.name).dt.replace_time_zone(None)
        offset = self.tzinfo.utcoffset(None)
        return (expr + pl.duration(seconds=offset.total_seconds())).dt.replace_time_zone(None)

    def to_local(self, value: datetime) -> datetime:
        return value.astimezone(self.tzinfo).replace(tzinfo=None)

    def label(self, at: datetime) -> str:
        """'UTC' or 'Europe/Berlin, UTC+01:00' (the offset in force at ``at``)."""
        offset = value if (value := at.astimezone(self.tzinfo).utcoffset()) else timedelta(0)
        if self.name == "UTC":
            return "UTC"
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        text = f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        return text if self.name == text[3:] else f"{self.name}, {text}"


_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def display_zone(text: str) -> DisplayZone:
    """Parse ``--tz``: 'UTC', an IANA name (Europe/Berlin) or an offset (+05:30)."""
    text = text.strip()
    if text.upper() in ("UTC", "Z"):
        return DisplayZone("UTC", timezone.utc)
    if m := _OFFSET.match(text):
        minutes = int(m[2]) * 60 + int(m[3])
        if minutes > 14 * 60:
            raise TimelineError(f"--tz: {text!r} is more than 14 hours from UTC")
        sign = -1 if m[1] == "-" else 1
        name = f"{m[1]}{m[2]}:{m[3]}"
        return DisplayZone(name, timezone(timedelta(minutes=sign * minutes)))
    try:
        return DisplayZone(text, ZoneInfo(text))
    except (ZoneInfoNotFoundError, ValueError):
        raise TimelineError(
            f"--tz: {text!r} is not a time zone; use UTC, an IANA name such as "
            "Europe/Berlin, or an offset such as +05:30"
        ) from None


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_window(text: str) -> float:
    """'30s', '2m', '500ms', '1h' or a bare number of seconds -> seconds."""
    m = _DURATION.match(text.strip().lower())
    if not m or float(m[1]) <= 0:
        raise TimelineError(f"--window: {text!r} is not a duration such as 30s, 2m or 500ms")
    return float(m[1]) * _UNIT_S[m[2]]


def view_range(result: Correlation, settings: TimelineSettings) -> tuple[datetime, datetime]:
    """The UTC interval to draw: around a migration or a time, else everything drawn."""
    margin = timedelta(seconds=settings.window_s)
    migs = result.migrations
    if settings.around:
        row = migs.filter(pl.col("migration_id") == settings.around)
        if row.height:
            first = row.select(pl.coalesce("start", "end")).item()
            last = row.select(pl.max_horizontal("start", "end", "q_end_host")).item()
            return first - margin, last + margin
        if re.match(r"^\d{4}-\d{2}-\d{2}", settings.around):
            at = parse_utc(settings.around, "--around")
            return at - margin, at + margin
        known = ", ".join(migs["migration_id"].to_list()) or "none in this bundle"
        raise TimelineError(
            f"--around: {settings.around!r} is neither a migration id ({known}) "
            "nor an ISO 8601 time"
        )
    times = pl.concat(
        [
            migs.select(pl.concat_list("start", "end", "q0_host", "q_end_host").alias("t"))
            .explode("t")
            .select("t"),
            result.blocked.select(pl.col("timestamp_host").alias("t")),
            result.context.select(pl.col("timestamp_host").alias("t")),
        ]
    ).drop_nulls()
    if times.is_empty():
        now = result.generated_at
        return now - margin, now + margin
    first, last = times["t"].min(), times["t"].max()
    pad = max((last - first) * 0.03, timedelta(seconds=1))
    return first - pad, last + pad


# ----- escaping and text


def escaped(expr: pl.Expr) -> pl.Expr:
    """Log text made inert for plotly labels and HTML: & < > " ' become entities."""
    out = expr.cast(pl.String).fill_null("")
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;")):
        out = out.str.replace_all(char, entity, literal=True)
    return out.str.replace_all("'", "&#39;", literal=True)


def _where(prefix: str = "") -> pl.Expr:
    """'file!member, record 231' from the provenance columns, escaped."""
    member = pl.col(f"{prefix}member")
    return pl.concat_str(
        escaped(pl.col(f"{prefix}source_path")),
        pl.when(member.is_not_null()).then(pl.lit("!") + escaped(member)).otherwise(pl.lit("")),
        pl.lit(", record "),
        pl.col(f"{prefix}record_id").cast(pl.String).fill_null("?"),
    )


def _protocol_name(value: int | None) -> tuple[str, str]:
    return PROTOCOLS.get(value, OTHER_PROTOCOL) if value is not None else OTHER_PROTOCOL


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


def _lanes(result: Correlation, wanted: set[str] | None) -> Lanes:
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


def _span_frame(migs: pl.DataFrame, zone: DisplayZone, lanes: pl.DataFrame) -> pl.DataFrame:
    """Each migration once per host lane it touches, with display times and hover text."""
    start = pl.coalesce("start", "end")
    frame = migs.with_columns(
        short_name(pl.col("source")).alias("_src"),
        short_name(pl.col("destination")).alias("_dst"),
    ).with_columns(
        zone.local(start).alias("_s"),
        zone.local(pl.coalesce("end", "start")).alias("_e"),
        zone.local(start + (pl.coalesce("end", "start") - start) / 2).alias("_m"),
        zone.local(
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
        ).alias("_hover"),
    )
    sides = [frame.with_columns(pl.col(side).alias("_host")) for side in ("_src", "_dst")]
    return (
        pl.concat(sides)
        .unique(subset=["migration_id", "_host"], maintain_order=True)
        .join(lanes.rename({"machine": "_host"}), on="_host", how="inner")
        .pipe(_stack)
    )


def _add_migrations(fig: go.Figure, spans: pl.DataFrame) -> None:
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


def _add_quarantine(
    fig: go.Figure, migs: pl.DataFrame, lanes: pl.DataFrame, zone: DisplayZone
) -> None:
    """The guest's quarantine window, from q0_host to q_end_host, shaded on its lane."""
    windows = (
        migs.filter(pl.col("q0_host").is_not_null() & pl.col("q_end_host").is_not_null())
        .join(lanes, on="machine", how="inner")
        .with_columns(
            zone.local(pl.col("q0_host")).alias("_a"),
            zone.local(pl.col("q_end_host")).alias("_b"),
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


def _event_hover(frame: pl.DataFrame, zone: DisplayZone, detail: pl.Expr) -> pl.DataFrame:
    """Display time and hover text: time, machine, event id, key fields, file and record id."""
    return frame.with_columns(
        zone.local(pl.col("timestamp_host")).alias("_t"),
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


def _add_context(
    fig: go.Figure,
    context: pl.DataFrame,
    lanes: pl.DataFrame,
    zone: DisplayZone,
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
    frame = _event_hover(frame, zone, detail)
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


def _add_blocked(
    fig: go.Figure, blocked: pl.DataFrame, lanes: pl.DataFrame, zone: DisplayZone, limit: int
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
    frame = _event_hover(frame, zone, detail)
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


def _add_counts(
    fig: go.Figure, blocked: pl.DataFrame, zone: DisplayZone, first: datetime, last: datetime
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
            zone.local(
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


def _legend_notes(fig: go.Figure, result: Correlation, lanes: Lanes) -> None:
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


def timeline_figure(
    result: Correlation, model: ModelParams, settings: TimelineSettings
) -> go.Figure:
    """The timeline as a plotly figure: lanes above, blocked-per-second bars below."""
    zone = display_zone(settings.tz)
    first, last = view_range(result, settings)
    migs = result.migrations.filter(
        (pl.coalesce("start", "end") <= last)
        & (pl.max_horizontal("start", "end", "q_end_host") >= first)
    )
    wanted = None
    if settings.around:
        wanted = set(migs["machine"].drop_nulls().to_list()) | set(
            migs.select(short_name(pl.col("source"))).to_series().drop_nulls().to_list()
            + migs.select(short_name(pl.col("destination"))).to_series().drop_nulls().to_list()
        )
    lanes = _lanes(result, wanted)
    index = lanes.index()
    in_view = pl.col("timestamp_host").is_between(first, last)
    blocked = result.blocked.filter(in_view)
    context = result.context.filter(in_view)

    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.8, 0.2], vertical_spacing=0.04
    )
    _add_migrations(fig, _span_frame(migs, zone, index))
    _add_quarantine(fig, migs, index, zone)
    _add_context(fig, context, index, zone, model, settings.detail_max)
    _add_blocked(fig, blocked, index, zone, settings.detail_max)
    width = _add_counts(fig, blocked.join(index, on="machine", how="inner"), zone, first, last)
    _legend_notes(fig, result, lanes)

    zone_label = zone.label(first)
    n = len(lanes.keys)
    title = "Live migrations and guest network quarantine"
    if settings.around:
        title += f" around {html.escape(settings.around)} (±{settings.window_s:g} s)"
    focus = migs.filter(pl.col("migration_id") == (settings.around or ""))
    if focus.height:
        focused = focus.row(0, named=True)
        title += f" · {html.escape(str(focused['vm_name']))}"
    fig.update_layout(
        title={
            "text": f"<b>{title}</b><br><sup>verdict: {html.escape(result.summary.verdict)} · "
            f"times in {html.escape(zone_label)} · guest events on the host clock</sup>",
            "x": 0.01,
        },
        template="plotly_white",
        height=max(420, 140 + 70 * n + 160),
        margin={"l": 10, "r": 10, "t": 80, "b": 50},
        hovermode="closest",
        barmode="stack",
        legend={"groupclick": "toggleitem", "font": {"size": 11}, "tracegroupgap": 8},
        font={"family": "Segoe UI, Helvetica, Arial, sans-serif", "size": 12},
        meta={"lanes": list(lanes.keys), "zone": zone_label},
    )
    fig.update_yaxes(
        row=1,
        col=1,
        tickvals=list(range(n)),
        ticktext=list(lanes.labels),
        range=[n - 0.5, -0.5],
        zeroline=False,
        showgrid=False,
        fixedrange=True,
    )
    for i in range(n):
        fig.add_hrect(
            y0=i - 0.5,
            y1=i + 0.5,
            row=1,
            col=1,
            line_width=0,
            fillcolor="#f5f7fa" if i % 2 == 0 else "#ffffff",
            layer="below",
        )
    if 0 < lanes.hosts < n:
        fig.add_hline(
            y=lanes.hosts - 0.5, row=1, col=1, line={"color": "#90a4ae", "width": 1, "dash": "dot"}
        )
    if focus.height:  # the migration zoomed on, drawn over the lane stripes
        fig.add_vrect(
            x0=zone.to_local(focused["start"] or focused["end"]),
            x1=zone.to_local(
                max(t for t in (focused["end"], focused["q_end_host"], focused["start"]) if t)
            ),
            fillcolor="rgba(21,101,192,0.07)",
            line_width=0,
            layer="below",
            row="all",
            col=1,
        )
    fig.update_yaxes(
        row=2, col=1, title_text=f"blocked<br>per {width:g} s", rangemode="tozero", fixedrange=True
    )
    fig.update_xaxes(
        range=[zone.to_local(first), zone.to_local(last)], showgrid=True, gridcolor="#e0e0e0"
    )
    fig.update_xaxes(row=2, col=1, title_text=f"Time ({html.escape(zone_label)})")
    return fig


# ----- pages


def _html_page(fig: go.Figure, include: bool | str, extra_html: str = "") -> str:
    """A full page: the figure, then whatever table follows; plotly.js embedded or local."""
    body = fig.to_html(
        full_html=False,
        include_plotlyjs=include,
        config={"displaylogo": False, "responsive": True, "toImageButtonOptions": {"scale": 2}},
        div_id="timeline",
    )
    title = "lmtrace timeline"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{PAGE_CSS}</style></head><body>\n"
        f"{body}\n{extra_html}\n</body></html>\n"
    )


PAGE_CSS = """
body { font-family: "Segoe UI", Helvetica, Arial, sans-serif; margin: 16px 24px; color: #212121; }
table { border-collapse: collapse; margin-top: 12px; font-size: 13px; }
th, td { border-bottom: 1px solid #e0e0e0; padding: 6px 10px; text-align: left; }
th { background: #eceff1; }
.v-affected { color: #c62828; font-weight: 600; }
.v-likely-affected { color: #ef6c00; font-weight: 600; }
.v-not-affected { color: #2e7d32; }
.v-inconclusive { color: #616161; }
"""


def safe_name(migration_id: str) -> str:
    """A file name from an id or time the user or the logs gave: no separators, no dots."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", migration_id)[:64] or "migration"


def _overview_table(result: Correlation, folder: str) -> str:
    rows = []
    for m in result.migrations.sort("start", nulls_last=True).iter_rows(named=True):
        link = f"{folder}/{safe_name(m['migration_id'])}.html"
        start = m["start"].strftime("%Y-%m-%d %H:%M:%S UTC") if m["start"] else "not logged"
        q = f"{m['quarantine_class'] or '—'}" + (
            f" ({m['q_duration_s']:.1f} s)" if m["q_duration_s"] is not None else ""
        )
        cells = [
            f'<a href="{html.escape(link)}">{html.escape(m["migration_id"])}</a>',
            html.escape(str(m["vm_name"])),
            f"{html.escape(str(m['source']))} → {html.escape(str(m['destination']))}",
            start,
            html.escape(q),
            str(m["blocked_inbound"]),
            f'<span class="v-{html.escape(m["verdict"])}">{html.escape(m["verdict"])}</span>',
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "Migration",
            "VM",
            "Source → destination",
            "Start",
            "Quarantine",
            "Blocked inbound",
            "Verdict",
        )
    )
    return (
        "<h2>Migrations</h2><p>Each row links to a timeline zoomed on that migration.</p>"
        f'<table id="migrations"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def write_timeline(
    result: Correlation,
    model: ModelParams,
    page: Path,
    settings: TimelineSettings = TimelineSettings(),
) -> list[Path]:
    """Write the timeline page ``page`` (self-contained, plotly.js embedded).

    Without ``around`` and with several migrations, also write one zoomed page per
    migration into ``timelines/`` beside it, sharing one local plotly.min.js, and
    list them in a table under the overview. Returns the written paths, page first.
    """
    if page.is_dir() or page.suffix.lower() not in (".html", ".htm"):
        raise TimelineError(f"{page}: the timeline is an .html file; give its file name")
    page.parent.mkdir(parents=True, exist_ok=True)
    many = result.migrations.height > 1 and not settings.around
    table = _overview_table(result, PER_MIGRATION_FOLDER) if many else ""
    figure = timeline_figure(result, model, settings)
    page.write_text(_html_page(figure, True, table), encoding="utf-8")
    written = [page]
    if many:
        folder = page.parent / PER_MIGRATION_FOLDER
        folder.mkdir(exist_ok=True)
        back = f'<p><a href="../{html.escape(page.name)}">← all migrations</a></p>'
        for mid in result.migrations["migration_id"].to_list():
            zoom = TimelineSettings(settings.tz, mid, settings.window_s, settings.detail_max)
            zoomed = folder / f"{safe_name(mid)}.html"
            zoomed.write_text(
                _html_page(timeline_figure(result, model, zoom), "directory", back),
                encoding="utf-8",
            )
            written.append(zoomed)
        script = folder / "plotly.min.js"
        script.write_text(get_plotlyjs(), encoding="utf-8")
        written.append(script)
    return written


def write_static(fig: go.Figure, path: Path) -> Path:
    """PNG or SVG (by suffix) through kaleido; a clear error when kaleido is not installed."""
    if path.suffix.lower() not in (".png", ".svg"):
        raise TimelineError(f"{path}: static export writes .png or .svg")
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise TimelineError(
            f"{path}: static PNG/SVG export needs the kaleido package (pip install kaleido) "
            "and a Chrome it can drive; the HTML timeline was written without it"
        ) from None
    try:
        fig.write_image(path, width=1600, height=max(600, int(fig.layout.height or 600)), scale=2)
    except Exception as e:  # kaleido reports a missing browser in many ways
        raise TimelineError(f"{path}: static export failed: {e}") from None
    return path
