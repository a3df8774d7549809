"""Child processes that end when the process that started them is gone.

Problem: a kill -9 of ``lmtrace ingest``, ``analyze`` or ``batch`` cannot run any
clean-up in the killed process. Its reading processes would be re-parented to
init and go on reading, holding hundreds of MB, for nobody. Each child therefore
watches its parent itself: when its parent process id changes (the parent died
and the child was re-parented), it exits at once. Polling ``os.getppid`` once a
second works on every POSIX system without signals or platform calls (Linux's
``PR_SET_PDEATHSIG`` fires when the parent *thread* ends, and process pools start
workers from helper threads).
"""

from __future__ import annotations

import os
import signal
import threading
import time

_POLL_S = 1.0
EXIT_ORPHANED = 3
"""The exit code of a child that ended because its parent was gone."""


def exit_with_parent(parent: int | None = None) -> None:
    """Start a daemon thread that ends this process when ``parent`` (default: the
    current parent) is no longer its parent."""
    watched = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == watched:
            time.sleep(_POLL_S)
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="lmtrace-lifeline", daemon=True).start()


def reading_process_setup(parent: int) -> None:
    """Initializer of ingest's reading processes: end with ``parent``, and end at a
    Ctrl-C without a traceback of their own (the terminal sends SIGINT to the whole
    process group, and the parent reports the interruption once)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    exit_with_parent(parent)
