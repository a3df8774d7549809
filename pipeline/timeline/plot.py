"""The timeline figure as the JSON plotly.js reads, and the page that draws it.

Why not plotly's ``graph_objects``: they validate every property of every trace and
deep-copy the whole ``plotly_white`` template on each change, and importing them costs
as much again; for a small bundle that was 0.3-0.4 s of the 1.1 s an analysis took
(issue 12: a verdict in under a second). The timeline uses a few trace types and
properties, so it writes them as plain dicts and lists, in the order plotly wrote
them (trace properties in alphabetical order, then ``type``, then the subplot axes),
and serializes them as plotly's JSON writer did. The pages are byte for byte those
plotly wrote (tests/test_same_outputs.py), and tests/test_timeline.py hands every
figure to plotly's validated ``Figure``, which refuses a property it does not know
and would have coerced any value that is not already what plotly holds.

plotly stays the drawing library: plotly.js and the ``plotly_white`` template are read
from its package (without importing it), and the static export
(:func:`pipeline.timeline.figure.write_static`) goes through its validated figure
and kaleido.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"scale": 2}}
"""plotly.js options: no plotly logo, resize with the window, PNG downloads at 2x."""


@dataclass
class Plot:
    """A figure: its traces and its layout, as plotly.js reads them."""

    data: list[dict[str, Any]] = field(default_factory=list)
    layout: dict[str, Any] = field(default_factory=dict)

    def add_trace(self, trace: dict[str, Any], row: int) -> None:
        """Draw ``trace`` (from :func:`trace`) in subplot ``row`` of the one column."""
        axes = "" if row == 1 else str(row)
        self.data.append({**trace, "xaxis": f"x{axes}", "yaxis": f"y{axes}"})

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "layout": self.layout}


def _ordered(value: Any) -> Any:
    """A property value with the keys of its nested objects in plotly's (alphabetical)
    order."""
    if isinstance(value, dict):
        return {k: _ordered(value[k]) for k in sorted(value)}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [_ordered(item) for item in value]
    return value


def trace(kind: str, **props: Any) -> dict[str, Any]:
    """A trace of type ``kind`` (``scatter``, ``bar``) with ``props``, ordered as plotly
    orders them; ``meta`` is the caller's own data and keeps its order."""
    ordered = {k: props[k] if k == "meta" else _ordered(props[k]) for k in sorted(props)}
    return {**ordered, "type": kind}


def shapes(*items: dict[str, Any]) -> list[dict[str, Any]]:
    """Layout shapes, each ordered as plotly orders a shape's properties."""
    return [_ordered(item) for item in items]


def _plotly_file(name: str) -> Path:
    """A file of plotly's package data, found without importing plotly."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("plotly is not installed: the timeline needs its plotly.js")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / name


@cache
def plotly_js() -> str:
    """plotly.js, minified, as the installed plotly ships it (about 4.6 MB)."""
    return _plotly_file("plotly.min.js").read_text(encoding="utf-8")


def _trace_type_key(name: str) -> str:
    # plotly orders a template's trace types with a longer name first when a shorter
    # one is its prefix, except before an 's' ('barpolar', 'bar'; 'scatter', 'scattersmith'):
    # as the plural names sort.
    return name + "s"


@cache
def _white_template() -> str:
    """plotly's ``plotly_white`` template as JSON, in the order plotly's validated
    template writes it; cached as text, so that no caller can change it."""
    raw = json.loads(_plotly_file("templates/plotly_white.json").read_text(encoding="utf-8"))
    data = {k: _ordered(raw["data"][k]) for k in sorted(raw["data"], key=_trace_type_key)}
    return json.dumps({"data": data, "layout": _ordered(raw["layout"])})


def white_template() -> dict[str, Any]:
    """A fresh copy of the ``plotly_white`` template, for ``layout.template``."""
    return json.loads(_white_template())


def _iso(value: object) -> str:
    if isinstance(value, date):  # datetime too: naive wall-clock times of the display zone
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _strict(value: str) -> Any:
    return None  # NaN and infinities: JSON has no such numbers, plotly.js reads null


def to_json(value: Any) -> str:
    """``value`` as plotly's JSON writer wrote it into a page: compact, ASCII, times in
    ISO 8601, NaN and infinities as null, and ``<``, ``>``, ``/`` escaped so that no
    text can close the script element it is in."""
    text = json.dumps(value, separators=(",", ":"), default=_iso)
    if "NaN" in text or "Infinity" in text:  # maybe only inside a string: then unchanged
        text = json.dumps(json.loads(text, parse_constant=_strict), separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("/", "\\u002f")


def plot_div(plot: Plot, div_id: str, script: str | None) -> str:
    """The ``<div>`` that draws ``plot``: plotly.js inlined (``script`` None) or loaded
    from the file ``script`` beside the page, then the figure's data, layout and
    :data:`CONFIG`. Spaced as plotly's ``to_html`` spaced it, so pages stay as written."""
    height = plot.layout.get("height")
    gap = " " * 8
    load = (
        f"{gap}<script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>\n{gap}"
        + (
            f"<script>{plotly_js()}</script>"
            if script is None
            else f'<script charset="utf-8" src="{script}"></script>'
        )
        + " " * 4
    )
    draw = (
        f'{" " * 16}if (document.getElementById("{div_id}")) {{'
        f"{' ' * 20}Plotly.newPlot("
        f'{" " * 24}"{div_id}",'
        f"{' ' * 24}{to_json(plot.data)},"
        f"{' ' * 24}{to_json(plot.layout)},"
        f"{' ' * 24}{json.dumps(CONFIG)}"
        f"{' ' * 20}){' ' * 16}}}"
    )
    return (
        f'<div style="height:{f"{height}px" if height else "100%"}; width:100%;">'
        f"{gap}{gap}{load}{' ' * 12}"
        f'<div id="{div_id}" class="plotly-graph-div" style="height:100%; width:100%;"></div>'
        f"{' ' * 12}<script>{' ' * 16}window.PLOTLYENV=window.PLOTLYENV || {{}};{' ' * 16}"
        f"{draw};{' ' * 12}</script>{gap}</div>"
    )
