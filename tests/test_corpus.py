"""Every .evtx file of the public corpus through the default engine.

For each file of MANIFEST.tsv (kind=evtx, empty and record-less ones included):
no crash, no hang (a per-file alarm), at least the manifest's rust_records rows,
and where pyevtx-rs reported errors, the report counts what was lost.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest

from parsers.evtx_reader import Provenance, ReadSettings, read_evtx
from parsers.model import EVENT_SCHEMA, UnreadableFileError
from tests.conftest import corpus_root
from tests.samples import sample_path

PER_FILE_SECONDS = 30

pytestmark = pytest.mark.corpus


@contextmanager
def time_limit(seconds: int, what: str) -> Iterator[None]:
    def _expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _manifest_rows() -> list[dict[str, str]]:
    import csv

    path = corpus_root() / "MANIFEST.tsv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f, delimiter="\t") if r["kind"] == "evtx"]


def _read_all(path: Path) -> tuple[pl.DataFrame, object]:
    read = read_evtx(path, ReadSettings(), Provenance(str(path), None, "-"))
    frames = list(read)
    return pl.concat(frames), read.report


@pytest.mark.parametrize("row", _manifest_rows(), ids=lambda r: r["file"])
def test_every_corpus_file_reads(corpus_dir: Path, row: dict[str, str]) -> None:
    path = corpus_dir / row["file"]
    with time_limit(PER_FILE_SECONDS, row["file"]):
        if "empty-file" in row["condition"]:
            with pytest.raises(UnreadableFileError, match="empty file"):
                read_evtx(path, ReadSettings(), Provenance(str(path), None, "-"))
            return
        frame, report = _read_all(path)
    assert frame.schema == pl.Schema(EVENT_SCHEMA)
    assert frame.height >= int(row["rust_records"])
    assert report.records == frame.height  # no filters: every decoded row is kept
    if int(row["rust_errors"]) > 0:
        assert report.records_skipped + report.chunks_skipped > 0
        assert report.issues and report.partial
    assert report.dirty == ("dirty-flag" in row["condition"])


def test_dirty_vss7_reads_chunks_beyond_the_header(corpus_dir: Path) -> None:
    frame, report = _read_all(sample_path(corpus_dir, "dirty_chunks_beyond_header"))
    assert frame.height == 1160
    assert frame["header_record_id"].n_unique() == 1160
    # Chunk 12 holds ids 1418..1422 after chunks holding up to 1155: the 262 records
    # between are in no chunk of the file (this VSS copy lost them), and it says so.
    assert report.dirty and report.partial and report.records_skipped == 0
    assert report.records_missing == 262
    assert [str(i) for i in report.issues] == [
        "record ids 1156..1417 are missing (262 records): no chunk holds them"
    ]
