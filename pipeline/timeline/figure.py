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
so; that keeps 100,000 events under 10 MB of HTML. The layers themselves are
drawn by :mod:`pipeline.timeline.lanes` (lanes, display clock, clock notes),
:mod:`pipeline.timeline.spans` (migrations, blackouts, quarantine windows) and
:mod:`pipeline.timeline.markers` (event and blocked markers, per-second counts),
with every text escaped in :mod:`pipeline.timeline.text`; this module holds the
options (zone, window, zoom), assembles the figure and writes the pages. The figure
is built as the plain JSON plotly.js reads (:mod:`pipeline.timeline.plot` says why),
and handed to plotly's validated Figure only for a static image.
"""

from __future__ import annotations

import html
import re
import textwrap
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from parsers.model import LmtraceError
from parsers.time_values import UTC, Zone, parse_utc
from pipeline import __version__
from pipeline.correlate import Correlation
from pipeline.machines import machine_of
from pipeline.printable import printable
from pipeline.timeline.lanes import lane_layout, legend_notes
from pipeline.timeline.markers import add_blocked, add_context, add_counts
from pipeline.timeline.plot import Plot, plot_div, plotly_js, shapes, trace, white_template
from pipeline.timeline.spans import add_migrations, add_quarantine, span_frame
from pipeline.timeline.text import escaped_text
from pipeline.wording import UNSEEN_DROPS, generated_by, verdict_css

if TYPE_CHECKING:
    import plotly.graph_objects as go

TIMELINE_FILE = "timeline.html"
PER_MIGRATION_FOLDER = "timelines"
SCRIPT = "plotly.min.js"  # the per-migration pages' shared copy of plotly.js


class TimelineError(LmtraceError):
    """A timeline option the user can fix: an unknown migration, a page name."""


@dataclass(frozen=True)
class TimelineSettings:
    """How to draw: zone, what to zoom on, and how many single markers a trace may hold."""

    zone: Zone = UTC
    around: str | None = None  # a migration id or an ISO 8601 time
    window_s: float = 30.0
    detail_max: int = 2000  # per trace; five dense traces stay under ~3 MB of hover text
    warning: str | None = None  # said above the figure on every page (a store left incomplete)


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
    if times.is_empty():  # nothing near a migration: show what the logs cover
        times = (
            result.machines.select(pl.concat_list("first_ts", "last_ts").alias("t"))
            .explode("t")
            .drop_nulls()
        )
    if times.is_empty():
        now = result.generated_at
        return now - margin, now + margin
    first, last = times["t"].min(), times["t"].max()
    pad = max((last - first) * 0.03, timedelta(seconds=1))
    return first - pad, last + pad


def timeline_plot(result: Correlation, settings: TimelineSettings) -> Plot:
    """The timeline as plotly.js reads it: lanes above, blocked-per-second bars below."""
    zone = settings.zone
    first, last = view_range(result, settings)
    migs = result.migrations.filter(
        (pl.coalesce("start", "end") <= last)
        & (pl.max_horizontal("start", "end", "q_end_host") >= first)
    )
    wanted = None
    if settings.around:
        hosts = pl.concat([migs["logged_by"].explode(), migs["destination"]]).drop_nulls()
        wanted = set(migs["machine"].drop_nulls().to_list()) | set(
            hosts.to_frame("name").select(machine_of(pl.col("name"), result.aliases))["name"]
        )
    lanes = lane_layout(result, wanted)
    index = lanes.index()
    in_view = pl.col("timestamp_host").is_between(first, last)
    blocked = result.blocked.filter(in_view)
    context = result.context.filter(in_view)
    # Two rows sharing the time axis: the lanes (80 %) above the counts, 0.04 apart.
    fig = Plot(
        layout={
            "template": white_template(),
            "xaxis": {
                "anchor": "y",
                "domain": [0.0, 1.0],
                "matches": "x2",
                "showticklabels": False,
            },
            "yaxis": {"anchor": "x", "domain": [0.232, 1.0]},
            "xaxis2": {"anchor": "y2", "domain": [0.0, 1.0]},
            "yaxis2": {"anchor": "x2", "domain": [0.0, 0.192]},
        }
    )
    local = zone.local
    for row in (1, 2):  # plotly draws a subplot's axes only when a trace uses them
        fig.add_trace(
            trace(
                "scatter", x=[zone.to_local(first), zone.to_local(last)], y=[0, 0],
                mode="markers", marker={"opacity": 0}, hoverinfo="skip", showlegend=False,
                meta={"lmtrace": "axis"},
            ),
            row=row,
        )  # fmt: skip
    add_migrations(fig, span_frame(migs, local, index, result.aliases))
    add_quarantine(fig, migs, index, local)
    add_context(fig, context, index, local, result.model, settings.detail_max)
    add_blocked(fig, blocked, index, local, settings.detail_max)
    shown = blocked.join(index, on="machine", how="inner")
    width = add_counts(fig, shown, local, first, last)
    legend_notes(fig, result, lanes)
    if result.migrations.is_empty():
        fig.layout["annotations"] = shapes(
            {
                "text": "No live migration was found in these logs: nothing to draw.<br>"
                "report.html says which logs to collect.",
                "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.6, "showarrow": False,
                "font": {"size": 15, "color": "#616161"},
            }
        )  # fmt: skip

    zone_label = zone.label(first)
    n = len(lanes.keys)
    title = "Live migrations and guest network quarantine"
    if settings.around:
        title += f" around {escaped_text(settings.around)} (±{settings.window_s:g} s)"
    focus = migs.filter(pl.col("migration_id") == (settings.around or ""))
    if focus.height:
        focused = focus.row(0, named=True)
        title += f" · {escaped_text(focused['vm_name'])}"
    fig.layout |= {
        "title": {
            "text": f"<b>{title}</b><br><sup>verdict: {escaped_text(result.summary.verdict)} · "
            f"times in {escaped_text(zone_label)} · guest events on the host clock</sup>",
            "x": 0.01,
        },
        "margin": {"l": 10, "r": 10, "t": 80, "b": 50},
        "legend": {"font": {"size": 11}, "groupclick": "toggleitem", "tracegroupgap": 8},
        "font": {"family": "Segoe UI, Helvetica, Arial, sans-serif", "size": 12},
        "height": max(420, 140 + 70 * n + 160),
        "hovermode": "closest",
        "barmode": "stack",
        "meta": {"lanes": list(lanes.keys), "zone": zone_label},
    }
    fig.layout["yaxis"] |= {
        "tickvals": list(range(n)),
        "ticktext": list(lanes.labels),
        "range": [n - 0.5, -0.5],
        "zeroline": False,
        "showgrid": False,
        "fixedrange": True,
    }
    stripes = [
        {
            "type": "rect", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1,
            "y0": i - 0.5, "y1": i + 0.5, "layer": "below", "line": {"width": 0},
            "fillcolor": "#f5f7fa" if i % 2 == 0 else "#ffffff",
        }
        for i in range(n)
    ]  # fmt: skip
    if 0 < lanes.hosts < n:
        stripes.append(
            {
                "type": "line", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1,
                "y0": lanes.hosts - 0.5, "y1": lanes.hosts - 0.5,
                "line": {"color": "#90a4ae", "width": 1, "dash": "dot"},
            }
        )  # fmt: skip
    if focus.height:  # the migration zoomed on, drawn over the lane stripes
        ends = [t for t in (focused["end"], focused["q_end_host"], focused["start"]) if t]
        stripes += [
            {
                "type": "rect", "xref": "x", "yref": f"{axis} domain", "y0": 0, "y1": 1,
                "x0": zone.to_local(focused["start"] or focused["end"]),
                "x1": zone.to_local(max(ends)), "layer": "below", "line": {"width": 0},
                "fillcolor": "rgba(21,101,192,0.07)",
            }
            for axis in ("y", "y2")
        ]  # fmt: skip
    fig.layout["shapes"] = shapes(*stripes)
    fig.layout["yaxis2"] |= {
        "title": {"text": f"blocked<br>per {width:g} s"},
        "rangemode": "tozero",
        "fixedrange": True,
    }
    shown_range = {
        "range": [zone.to_local(first), zone.to_local(last)],
        "showgrid": True,
        "gridcolor": "#e0e0e0",
    }
    fig.layout["xaxis"] |= shown_range
    fig.layout["xaxis2"] |= {
        **shown_range,
        "title": {"text": f"Time ({escaped_text(zone_label)})"},
    }
    return fig


def timeline_figure(result: Correlation, settings: TimelineSettings) -> go.Figure:
    """The same figure as plotly's validated Figure (plotly refuses a property it does not
    know), for the static export and for a notebook to change and show."""
    import plotly.graph_objects as go

    return go.Figure(timeline_plot(result, settings).to_dict())


# ----- pages


def _html_page(
    fig: Plot, script: str | None, extra_html: str = "", warning: str | None = None
) -> str:
    """A full page: the warning if any, the figure, then whatever table follows; plotly.js
    embedded (``script`` None) or loaded from the file ``script`` beside the page."""
    body = plot_div(fig, "timeline", script)
    title = "lmtrace timeline"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{PAGE_CSS}{verdict_css()}\n</style></head><body>\n"
        f'<p class="meta">Generated by {html.escape(generated_by(__version__))}.</p>\n'
        + (
            f'<p class="warning"><b>Warning:</b> {html.escape(printable(warning))}.</p>\n'
            if warning
            else ""
        )
        + f"{body}\n{extra_html}\n</body></html>\n"
    )


PAGE_CSS = """
body { font-family: "Segoe UI", Helvetica, Arial, sans-serif; margin: 16px 24px; color: #212121; }
table { border-collapse: collapse; margin-top: 12px; font-size: 13px; }
th, td { border-bottom: 1px solid #e0e0e0; padding: 6px 10px; text-align: left; }
th { background: #eceff1; }
.meta { color: #616161; font-size: 13px; margin: 0 0 8px; }
.warning { background: #fff3e0; border-left: 4px solid #ef6c00; padding: 8px 12px; }
"""


def safe_name(migration_id: str) -> str:
    """A file name from an id or time the user or the logs gave: no separators, no dots."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", migration_id)[:64] or "migration"


def _cell(value: object) -> str:
    """A logged value for the overview table, escaped; a dash where none was logged."""
    return "—" if value is None else html.escape(printable(value))


def _overview_table(result: Correlation, folder: str) -> str:
    rows = []
    for m in result.migrations.sort("start", nulls_last=True).iter_rows(named=True):
        link = f"{folder}/{safe_name(m['migration_id'])}.html"
        start = m["start"].strftime("%Y-%m-%d %H:%M:%S UTC") if m["start"] else "not logged"
        q = f"{m['window_words'] or '—'}" + (
            f" ({m['q_duration_s']:.1f} s)" if m["q_duration_s"] is not None else ""
        )
        cells = [
            f'<a href="{html.escape(link)}">{html.escape(m["migration_id"])}</a>',
            _cell(m["vm_name"]),
            f"{_cell(m['source'])} → {_cell(m['destination'])}",
            start,
            html.escape(q),
            # no guest, nothing counted: a dash; no drops logged: no count (as the reports)
            _cell(
                None
                if not m["machine"]
                else m["blocked_inbound"]
                if m["drops_observable"] is not False
                else UNSEEN_DROPS
            ),
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
    page: Path,
    settings: TimelineSettings = TimelineSettings(),
) -> list[Path]:
    """Write the timeline page ``page`` (self-contained, plotly.js embedded), headed by
    ``settings.warning`` when there is one.

    Without ``around`` and with several migrations, also write one zoomed page per
    migration into ``timelines/`` beside it, sharing one local plotly.min.js, and
    list them in a table under the overview. Returns the written paths, page first.
    """
    if page.is_dir() or page.suffix.lower() not in (".html", ".htm"):
        raise TimelineError(f"{page}: the timeline is an .html file; give its file name")
    page.parent.mkdir(parents=True, exist_ok=True)
    many = result.migrations.height > 1 and not settings.around
    table = _overview_table(result, PER_MIGRATION_FOLDER) if many else ""
    figure = timeline_plot(result, settings)
    page.write_text(_html_page(figure, None, table, settings.warning), encoding="utf-8")
    written = [page]
    if many:
        folder = page.parent / PER_MIGRATION_FOLDER
        folder.mkdir(exist_ok=True)
        back = f'<p><a href="../{html.escape(page.name)}">← all migrations</a></p>'
        for mid in result.migrations["migration_id"].to_list():
            zoom = replace(settings, around=mid)
            zoomed = folder / f"{safe_name(mid)}.html"
            zoomed.write_text(
                _html_page(timeline_plot(result, zoom), SCRIPT, back, settings.warning),
                encoding="utf-8",
            )
            written.append(zoomed)
        script = folder / SCRIPT
        script.write_text(plotly_js(), encoding="utf-8")
        written.append(script)
    return written


def write_static(fig: go.Figure, path: Path, warning: str | None = None) -> Path:
    """PNG or SVG (by suffix) through kaleido; a clear error when kaleido is not installed.

    ``warning`` (a store left incomplete) is drawn under the title: an image leaves the
    page, and the page's warning with it."""
    if path.suffix.lower() not in (".png", ".svg"):
        raise TimelineError(f"{path}: static export writes .png or .svg")
    if warning:
        lines = textwrap.wrap(f"Warning: {printable(warning)}.", 150)
        import plotly.graph_objects as go

        fig = go.Figure(fig)  # the caller's figure stays as it was
        fig.add_annotation(
            text="<br>".join(escaped_text(line) for line in lines),
            xref="paper", yref="paper", x=0, y=1, yanchor="bottom", align="left",
            showarrow=False, font={"color": "#b71c1c", "size": 13},
        )  # fmt: skip
        fig.update_layout(margin={"t": int(fig.layout.margin.t or 80) + 20 * len(lines)})
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise TimelineError(
            f"{path}: static PNG/SVG export needs the kaleido package (pip install kaleido) "
            "and a Chrome it can drive; the HTML timeline was written without it"
        ) from None
    from pipeline.timeline.static_image import export  # it imports TimelineError from here

    export(fig.to_json(), path, 1600, max(600, int(fig.layout.height or 600)), 2)
    return path
