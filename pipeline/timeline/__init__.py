"""Timelines: the findings drawn as offline plotly pages (``figure`` assembles and writes
them; ``lanes``, ``spans`` and ``markers`` draw the layers; ``text`` escapes every hover)."""

from pipeline.timeline.figure import (
    TIMELINE_FILE,
    TimelineError,
    TimelineSettings,
    safe_name,
    timeline_figure,
    write_static,
    write_timeline,
)

__all__ = [
    "TIMELINE_FILE",
    "TimelineError",
    "TimelineSettings",
    "safe_name",
    "timeline_figure",
    "write_static",
    "write_timeline",
]
