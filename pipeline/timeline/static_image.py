"""A figure to PNG or SVG through kaleido, in a process that a deadline can stop.

Problem: kaleido renders in a Chrome it starts and talks to over a pipe, and its own
90 s timeout covers the drawing only. When the browser does not answer while it
starts (seen once in a full test run on this 2-core machine, under load), the
export waited for ever, and so did ``lmtrace timeline --image``.

How: the figure goes, as JSON on stdin, to a child Python in a session of its own
that writes the image; past the deadline the whole session (the child, its Chrome
and the Chrome's helpers) is killed and the export tried once more, then given up
with one line that says so. A file left by a stopped try is removed.

A Chrome that starts but is not ready fails instead of hanging: kaleido then raises
"ReferenceError: kaleido_scopes is not defined" (once in a fresh clone's CI run, under
load). That try is given a second one too; an export that fails twice is given up
with the last line of its error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.timeline.figure import TimelineError

DEADLINE_S = 60.0
"""Per try: a 1600 px timeline takes 3-8 s here, most of it starting Chrome."""
TRIES = 2

_CHILD = """
import sys
import plotly.io as pio
path, width, height, scale = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pio.from_json(sys.stdin.read()).write_image(path, width=width, height=height, scale=scale)
"""


def export(figure_json: str, path: Path, width: int, height: int, scale: int) -> None:
    """Write ``figure_json`` (a plotly figure) to ``path``; TimelineError when it fails."""
    for attempt in range(1, TRIES + 1):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), str(width), str(height), str(scale)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, err = child.communicate(figure_json, timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            _stop(child)
            path.unlink(missing_ok=True)
            if attempt < TRIES:
                continue
            raise TimelineError(
                f"{path}: static export did not finish in {DEADLINE_S:.0f} s, {TRIES} tries "
                "(kaleido's Chrome did not answer); the HTML timeline is written"
            ) from None
        if child.returncode == 0:
            return
        path.unlink(missing_ok=True)
        if attempt < TRIES:
            continue
        last = (err.strip().splitlines() or ["no message"])[-1]
        raise TimelineError(f"{path}: static export failed, {TRIES} tries: {last}")


def _stop(child: subprocess.Popen[str]) -> None:
    """Kill the child's whole session: the Chrome kaleido started goes with it."""
    with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
        os.killpg(child.pid, signal.SIGKILL)
    child.communicate()
