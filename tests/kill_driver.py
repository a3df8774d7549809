"""Run the lmtrace command line, stopping for good at a named moment (for kill -9 tests).

Usage: ``python tests/kill_driver.py MOMENT MARKER lmtrace-args...``

A kill -9 test must hit the process at a known step, whatever the speed of the
machine: sleeping "long enough" either misses the step on a fast machine or
waits for nothing on a slow one. This driver wraps one function of the real
pipeline so that, when the run reaches that step, it writes ``MARKER`` and
blocks forever; the test waits for the marker and kills the process. Nothing
else changes: the wrapped function has done (or not yet done) its real work.

Moments (what has happened when the marker appears):

* ``reading``: the reading processes are started and working (``--jobs`` > 1);
* ``committed``: the first batch of events is in the store, the files table is not;
* ``files``: every event is committed, the files table is about to be written;
* ``reporting``: (analyze) the store is complete, the report is about to be written.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _stop_after(owner: Any, name: str, marker: Path, *, before: bool = False) -> None:
    """Wrap ``owner.name``: on its first call, write ``marker`` and block forever."""
    original: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if before:
            _block(marker)
        result = original(*args, **kwargs)
        _block(marker)
        return result

    setattr(owner, name, wrapper)


def _block(marker: Path) -> None:
    marker.write_text("reached", encoding="utf-8")
    threading.Event().wait()


def main() -> None:
    moment, marker, *args = sys.argv[1:]
    from pipeline import analyze, ingest, store
    from pipeline.cli import app

    target = Path(marker)
    if moment == "reading":
        _stop_after(ingest._Relay, "drain", target)
    elif moment == "committed":
        _stop_after(store.EventCommitter, "commit", target)
    elif moment == "files":
        _stop_after(ingest, "append_files", target, before=True)
    elif moment == "reporting":
        _stop_after(analyze, "write_report", target, before=True)
    else:
        raise SystemExit(f"unknown moment {moment!r}")
    app(args, prog_name="lmtrace")


if __name__ == "__main__":
    main()
