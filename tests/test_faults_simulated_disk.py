"""A full or read-only disk where the machine cannot mount a real one (tests/simulated_disk.py).

tests/test_faults.py meets these faults on a real small tmpfs, which needs root.
Where no tmpfs can be mounted (an unprivileged CI runner), these tests run in
their place, so that every machine checks them: the same assertions, the
operating system's error injected at each change lmtrace makes under the folder.
``LMTRACE_SIMULATED_DISK=1`` runs them on a machine that can mount too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.ingest import ingest
from pipeline.store import incomplete
from pipeline.writes import WriteError
from tests.simulated_disk import SimulatedDisk, can_mount_tmpfs, simulated_disk
from tests.test_faults import EXAMPLE, one_error_line, store_content

pytestmark = pytest.mark.skipif(
    os.environ.get("LMTRACE_SIMULATED_DISK") != "1" and can_mount_tmpfs(),
    reason="a real tmpfs can be mounted here: tests/test_faults.py uses one "
    "(LMTRACE_SIMULATED_DISK=1 runs these too)",
)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SimulatedDisk]:
    with simulated_disk(tmp_path / "disk") as simulated:
        yield simulated


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("clean") / "store"
    ingest([EXAMPLE], store, jobs=1)
    return store


def test_a_full_disk_at_every_change_of_an_ingest_is_one_error_and_a_store_that_says_so(
    disk: SimulatedDisk, clean_store: Path
) -> None:
    """The disk fills at each change an ingest makes in turn (folders, lock, scratch,
    staged parts, the mark, the tables): each stop is one WriteError naming a path of the
    store and "No space left on device"; the store is as it was or marked incomplete;
    with space again the same ingest completes it, equal to a clean one."""
    store = disk.root / "store"
    points = disk.count(lambda: ingest([EXAMPLE], store, jobs=1))
    assert points >= 10, points
    failed_at: set[str] = set()
    for point in range(points):
        disk.clear()
        disk.full(after=point)
        with pytest.raises(WriteError) as stop:
            ingest([EXAMPLE], store, jobs=1)
        error = stop.value
        assert "No space left on device" in str(error) and Path(error.path).is_relative_to(store)
        failed_at.add(Path(error.path).relative_to(store).as_posix().split("/")[0].split("-")[0])
        changed = any(any((store / t).glob("part-*")) for t in ("events", "files"))
        assert not changed or incomplete(store) is not None, f"unmarked at {error.path}"
        disk.healthy()
        assert ingest([EXAMPLE], store, jobs=1).exit_code == 0
        assert incomplete(store) is None
        assert sorted(p.name for p in store.iterdir()) == ["events", "files", "store.json"]
        events, files = store_content(store)
        clean_events, clean_files = store_content(clean_store)
        assert events.equals(clean_events) and files.equals(clean_files)
    assert {".", "store.json", ".ingest", "incomplete.json", "files"} <= failed_at, failed_at


WRITERS = [  # every command that writes, and where
    ["ingest", str(EXAMPLE), "--out", "{disk}/store", "--jobs", "1"],
    ["analyze", str(EXAMPLE), "--out", "{disk}/a", "--jobs", "1"],
    ["correlate", "{clean}", "--out", "{disk}/c"],
    ["timeline", "{clean}", "--out", "{disk}/t.html"],
    ["export", "{clean}", "--out", "{disk}/x.csv", "--format", "csv"],
    ["simulate", "--scenario", "healthy", "--out", "{disk}/sim"],
    ["batch", str(EXAMPLE), "--out", "{disk}/sweep", "--jobs", "1"],
]


@pytest.mark.parametrize(
    ("fault", "cause"),
    [("full", "No space left on device"), ("read_only", "Read-only file system")],
)
def test_a_full_or_read_only_disk_is_one_line_in_every_command_that_writes(
    disk: SimulatedDisk, clean_store: Path, fault: str, cause: str
) -> None:
    runner = CliRunner()
    for template in WRITERS:
        args = [a.format(disk=disk.root, clean=clean_store) for a in template]
        disk.clear()
        getattr(disk, fault)()
        line = one_error_line(runner.invoke(app, args), cause)
        assert line.startswith(f"lmtrace: error: {disk.root}/"), (args[0], line)
        disk.healthy()


def test_analyze_stopped_by_a_full_disk_while_writing_its_outputs_is_one_line(
    disk: SimulatedDisk,
) -> None:
    """The store is written whole; the disk fills at each later output in turn (tables,
    findings, timeline, report): one line naming the output and the cause, exit 2."""
    out = disk.root / "analysis"
    args = ["analyze", str(EXAMPLE), "--out", str(out), "--jobs", "1"]
    store_points = disk.count(lambda: ingest([EXAMPLE], out / "store", jobs=1))
    shutil.rmtree(out)
    runner = CliRunner()
    points = disk.count(lambda: runner.invoke(app, args))
    named: set[str] = set()
    for point in range(store_points, points, 3):
        disk.clear()
        disk.full(after=point)
        line = one_error_line(runner.invoke(app, args), "No space left on device")
        assert line.startswith(f"lmtrace: error: {out}"), line
        named.add(line.split(":")[2].strip().removeprefix(str(out)).strip("/").split(".")[0])
        disk.healthy()
    assert {"migrations", "timeline", "report"} & named, named
