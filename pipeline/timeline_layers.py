"""The layers of a timeline figure, gathered for :mod:`pipeline.timeline` to draw with.

Why this module exists: :func:`pipeline.timeline.timeline_figure` adds the layers in a
fixed order (lanes, migration spans, quarantine windows, event markers, blocked
markers, counts, clock notes) and reads them as ``layers.<name>``; the code is
split by what it draws so that no module mixes text, intervals and instants:

- :mod:`pipeline.timeline_lanes`: lane order and labels, the display clock, clock notes;
- :mod:`pipeline.timeline_spans`: migrations and blackouts on host lanes, quarantine windows;
- :mod:`pipeline.timeline_markers`: event and blocked-connection markers, per-second counts;
- :mod:`pipeline.timeline_text`: escaping and every hover text and label.

All of them draw on a figure whose first row holds one lane per machine (lane
``i`` at y = i) and whose second row holds the blocked-per-second bars; every
trace carries ``meta.lmtrace`` naming what it draws, so tests and readers can
find it.
"""

from pipeline.timeline_lanes import lane_layout, legend_notes
from pipeline.timeline_markers import add_blocked, add_context, add_counts
from pipeline.timeline_spans import add_migrations, add_quarantine, span_frame

__all__ = [
    "add_blocked",
    "add_context",
    "add_counts",
    "add_migrations",
    "add_quarantine",
    "lane_layout",
    "legend_notes",
    "span_frame",
]
