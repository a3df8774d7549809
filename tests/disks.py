"""Small real disks for fault tests: a tmpfs of a chosen size, read-write or read-only.

A full disk and a read-only folder are faults of the operating system, so the
tests meet them where the program does: in real system calls on a real file
system. A tmpfs needs the right to mount (root, or CAP_SYS_ADMIN); where the
machine does not give it (an unprivileged CI runner), the tests that need one
skip and say why, rather than pretend with a mock of our own code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted at ``path`` for the duration; skips the test
    when this machine does not let it mount one."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (a real full or read-only disk)")
    done = _mount("-t", "tmpfs", "-o", f"size={size}", "lmtrace-test", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def read_only(path: Path, on: bool = True) -> None:
    """Remount the tmpfs at ``path`` read-only (or read-write again)."""
    done = _mount("-o", f"remount,{'ro' if on else 'rw'}", str(path))
    assert done.returncode == 0, done.stderr


def leave_free(disk: Path, free: int) -> Path:
    """Fill ``disk`` with one file so that about ``free`` bytes stay free (page-rounded)."""
    filler = disk / "filler"
    filler.unlink(missing_ok=True)
    size = shutil.disk_usage(disk).free - free
    if size > 0:
        with filler.open("wb") as f:
            os.posix_fallocate(f.fileno(), 0, size)
    return filler


def clear(disk: Path) -> None:
    """Remove everything on ``disk``."""
    for entry in disk.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
