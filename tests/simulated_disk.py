"""A folder that fails as a full or read-only disk does, where no real one can be mounted.

tests/disks.py mounts a real small tmpfs, and the fault tests meet a full or
read-only disk in real system calls. An unprivileged machine (a CI runner that is
not root) cannot mount one; there the same faults are injected instead, at the
boundary between the program and the operating system: an audit hook
(``sys.addaudithook``) sees each call Python makes to change a file under the
folder (``open`` for writing, ``os.mkdir``, ``os.rename``, ``os.remove``...) and
raises the OSError the system would (``ENOSPC``, ``EROFS``), with its errno,
words and file name. Nothing of lmtrace is patched: every write point it has goes
through the error handling it meets on a real disk.

What it cannot do, and the real disk tests do: count bytes (a real disk fills in
the middle of a write, this one refuses the next change), and see writes polars
makes from Rust (lmtrace writes its tables with Python's file calls,
pipeline/writes.py). A full disk here still renames and removes files, as a real
one does; a read-only one refuses every change.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_CHANGES = {  # audit event -> how many of its first arguments are paths it changes
    "open": 1,
    "os.mkdir": 1,
    "os.truncate": 1,
    "os.link": 2,
    "os.symlink": 2,
    "os.rename": 2,
    "os.remove": 1,
    "os.rmdir": 1,
    "os.chmod": 1,
    "os.utime": 1,
}
_TAKES_SPACE = {"open", "os.mkdir", "os.truncate", "os.link", "os.symlink"}


@dataclass
class SimulatedDisk:
    """A folder whose changes fail from the ``after``-th one on, with errno ``code``."""

    root: Path
    code: int | None = None  # errno of the failure; None: healthy
    after: int = 0  # changes that still succeed once failing is set
    changes: int = 0  # changes seen since the last full() or count()

    def full(self, after: int = 0) -> None:
        """Full after ``after`` more changes that take space (it stays full)."""
        self.code, self.after, self.changes = errno.ENOSPC, after, 0

    def read_only(self) -> None:
        self.code, self.after, self.changes = errno.EROFS, 0, 0

    def healthy(self) -> None:
        self.code = None

    def count(self, run: Callable[[], object]) -> int:
        """How many changes that take space ``run`` makes here: the points where a full
        disk can stop it."""
        self.healthy()
        self.changes = 0
        run()
        return self.changes

    def clear(self) -> None:
        """Remove everything in the folder (as a healthy disk)."""
        code, self.code = self.code, None
        try:
            for entry in self.root.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        finally:
            self.code = code

    def check(self, event: str, paths: list[str]) -> None:
        if not any(_under(p, self.root) for p in paths):
            return
        if event not in _TAKES_SPACE and self.code != errno.EROFS:
            return
        self.changes += 1
        if self.code is not None and self.changes > self.after:
            raise OSError(self.code, os.strerror(self.code), paths[0])


_WATCHED: list[SimulatedDisk] = []


def _changed_paths(event: str, args: tuple[Any, ...]) -> list[str]:
    """The paths an audited call changes, or [] when it changes none."""
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(flags, int) and flags >= 0 and flags & _WRITE_FLAGS) or (
            isinstance(mode, str) and any(c in mode for c in "wax+")
        )
        if not writing:
            return []
        args = (path,)
    paths = []
    for value in args[: _CHANGES[event]]:
        if isinstance(value, (str, bytes, os.PathLike)):
            paths.append(os.path.abspath(os.fsdecode(value)))
    return paths


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _WATCHED or event not in _CHANGES:
        return
    paths = _changed_paths(event, args)
    if paths:
        for disk in _WATCHED:
            disk.check(event, paths)


def _under(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(f"{root}{os.sep}")


_hooked: list[bool] = []  # the hook is installed once per process (it cannot be removed)


@contextmanager
def simulated_disk(path: Path) -> Iterator[SimulatedDisk]:
    """A healthy SimulatedDisk at ``path`` for the duration."""
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked.append(True)
    path.mkdir(parents=True, exist_ok=True)
    disk = SimulatedDisk(path.resolve())
    _WATCHED.append(disk)
    try:
        yield disk
    finally:
        _WATCHED.remove(disk)


def can_mount_tmpfs() -> bool:
    """Whether this machine lets the tests mount a real tmpfs (tests/disks.py)."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as where:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "lmtrace-probe", where],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            return False
        subprocess.run(["umount", "-l", where], check=False)
    return True
