"""Files and folders lmtrace may not read or write (EACCES): named, counted, one line.

A permission is denied by the kernel to a process that lacks it; root is never
denied (CAP_DAC_OVERRIDE). So these tests run lmtrace as a real process without
that right: as the user running the tests when that is not root, or, as root,
under ``setpriv`` with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped, so that
mode bits bind it as they bind anyone. Where neither is possible they skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from pipeline.store import scan_files
from tests.test_faults import EXAMPLE

LMTRACE = str(Path(sys.executable).with_name("lmtrace"))
_NO_OVERRIDE = "-dac_override,-dac_read_search"


def _as_anyone() -> list[str]:
    """The command prefix that makes the kernel check mode bits for lmtrace."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be denied")
    return ["setpriv", f"--bounding-set={_NO_OVERRIDE}", f"--inh-caps={_NO_OVERRIDE}"]


@pytest.fixture(scope="module")
def as_anyone(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    prefix = _as_anyone()
    probe = tmp_path_factory.mktemp("probe") / "secret"
    probe.write_text("x")
    probe.chmod(0)
    tried = subprocess.run([*prefix, sys.executable, "-c", f"open({str(probe)!r})"], check=False)
    if tried.returncode == 0:
        pytest.skip("this machine does not deny a file with mode 000 (no permission checks)")
    return prefix


def lmtrace(prefix: list[str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, LMTRACE, *map(str, args)], capture_output=True, text=True, timeout=300
    )


def one_line(done: subprocess.CompletedProcess[str], *said: str) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmtrace: error: "), done.stderr
    assert all(s in lines[0] for s in said), lines[0]
    return lines[0]


@pytest.fixture
def bundle(tmp_path: Path) -> Iterator[Path]:
    """The example bundle with one log (mode 000) and one machine's folder (mode 000) that
    lmtrace may not read; modes restored afterwards so that pytest can remove them."""
    copy = tmp_path / "bundle"
    shutil.copytree(EXAMPLE, copy)
    locked = [copy / "APP-VM01" / "Security.evtx", copy / "HV-NODE2"]
    for path in locked:
        path.chmod(0)
    yield copy
    for path in locked:
        path.chmod(0o755)


def test_unreadable_inputs_among_others_are_named_and_counted_not_a_crash(
    as_anyone: list[str], bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = lmtrace(as_anyone, "analyze", bundle, "--out", out, "--jobs", "1")
    assert done.returncode == 1, done.stderr  # partial: the rest was analysed
    assert "Traceback" not in done.stderr
    security, node2 = bundle / "APP-VM01" / "Security.evtx", bundle / "HV-NODE2"
    assert f"lmtrace: refused: {security}: cannot open: Permission denied" in done.stderr
    assert f"lmtrace: refused: {node2}: cannot list folder: Permission denied" in done.stderr
    assert "verdict: " in done.stdout and (out / "report.html").is_file()
    files = scan_files(out / "store").collect()
    refused = files.filter(pl.col("source_path").is_in([str(security), str(node2)]))
    assert refused.height == 2 and refused["errors"].list.len().min() == 1

    # batch: the bundle that cannot be listed fails alone, the partly readable one is read
    sweep = tmp_path / "sweep"
    done = lmtrace(as_anyone, "batch", bundle, node2, "--out", sweep, "--jobs", "1")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "2 bundles: 0 ok, 1 partial, 1 failed" in done.stdout
    summary = pl.read_parquet(sweep / "summary.parquet")
    failed = summary.filter(pl.col("status") == "failed").row(0, named=True)
    assert failed["input"] == str(node2) and "Permission denied" in failed["error"]


def test_an_unreadable_input_alone_is_one_error_line(
    as_anyone: list[str], bundle: Path, tmp_path: Path
) -> None:
    for locked, why in (
        (bundle / "APP-VM01" / "Security.evtx", "cannot open: Permission denied"),
        (bundle / "HV-NODE2", "cannot list folder: Permission denied"),
    ):
        done = lmtrace(as_anyone, "ingest", locked, "--out", tmp_path / "store")
        one_line(done, str(locked), why)


def test_an_unwritable_out_or_unreadable_store_is_one_error_line(
    as_anyone: list[str], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    assert lmtrace([], "ingest", EXAMPLE, "--out", store, "-q").returncode == 0
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    for args in (
        ["ingest", EXAMPLE / "HV-NODE1", "--out", locked],
        ["analyze", EXAMPLE, "--out", locked / "a", "--jobs", "1"],
        ["export", store, "--out", locked / "x.csv", "--format", "csv"],
    ):
        line = one_line(lmtrace(as_anyone, *args), "Permission denied")
        assert line.startswith(f"lmtrace: error: {locked}"), line

    # a table's folder that cannot be listed read as an empty table: no event, exit 0
    for table, args in (
        ("events", ["correlate", store, "--out", tmp_path / "c"]),
        ("files", ["files", store]),
    ):
        (store / table).chmod(0)
        try:
            one_line(lmtrace(as_anyone, *args), f"{store / table}: Permission denied")
        finally:
            (store / table).chmod(0o755)
    (store / "store.json").chmod(0)
    one_line(lmtrace(as_anyone, "events", store), f"{store}/store.json: Permission denied")
