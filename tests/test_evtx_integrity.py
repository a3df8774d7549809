"""Chunks whose bytes changed after Windows wrote their checksums (parsers/evtx_integrity.py).

Real logs of the public corpus decide which chunks are judged: cleanly closed logs and
dirty ones that only were open must not be named (two real Operational logs carry a
stale checksum in the chunk Windows was filling), and the upstream samples recovered
from a shadow copy with bad checksums must be. The project's own writer gives logs
with one value edited, read through the whole ingest and report.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from parsers.evtx_integrity import ASIDE_CHUNKS, HEADER_ALTERED, RECORDS_ALTERED, altered_chunks
from parsers.evtx_layout import CHUNK_SIZE, FILE_HEADER_SIZE, scan_layout
from parsers.evtx_reader import Provenance, ReadSettings, read_evtx, split_slots
from parsers.evtx_writer import Damage
from pipeline.cli import app
from pipeline.ingest import ingest
from pipeline.outputs import integrity
from pipeline.report import integrity_text
from pipeline.store import scan_events, scan_files
from tests import samples

VSS = "parsers/omerbenamram-evtx__2-vss_0-Microsoft-Windows-{}%4Operational.evtx"
RDP_CORE = VSS.format("RemoteDesktopServices-RdpCoreTS")
RCM = VSS.format("TerminalServices-RemoteConnectionManager")
OPEN_WHEN_COPIED = (
    "parsers/omerbenamram-evtx__Microsoft-Windows-HelloForBusiness%4Operational.evtx",
    "parsers/omerbenamram-evtx__Microsoft-Windows-LanguagePackSetup%4Operational.evtx",
)


def _log(folder: Path, chunks: int, damage: Damage | None = None) -> Path:
    """A log of ``chunks`` chunks of 20 records each (record i names VM APP-VM<i>)."""
    return samples.numbered_log(folder / "VMMS-Admin.evtx", 20 * chunks, 20, damage)


def _edit_vm_name(path: Path, record: int, to: str) -> int:
    """Change record ``record``'s VM name in place, as an editor would (same length, every
    other byte kept); returns the chunk it lies in."""
    data = bytearray(path.read_bytes())
    before = f"APP-VM{record:04d}".encode("utf-16-le")
    at = data.index(before)
    data[at : at + len(before)] = to.encode("utf-16-le")
    path.write_bytes(bytes(data))
    return (at - FILE_HEADER_SIZE) // CHUNK_SIZE


def _read(path: Path, slots: range | None = None):
    read = read_evtx(path, ReadSettings(), Provenance(str(path), None, None), slots=slots)
    frames = list(read)
    return read.report, pl.concat(frames)


def test_an_edited_value_is_read_and_its_chunk_named(tmp_path: Path) -> None:
    path = _log(tmp_path, 3)
    chunk = _edit_vm_name(path, 25, "XYZ-VM0025")
    report, rows = _read(path)
    assert chunk == 1
    assert [(i.chunk, i.message) for i in report.altered] == [(1, RECORDS_ALTERED)]
    assert not report.partial and report.records == 60  # read, not lost
    assert rows.filter(pl.col("header_record_id") == 26)["data"].str.contains("XYZ-VM0025").all()


def test_a_chunk_header_edited_is_named(tmp_path: Path) -> None:
    path = _log(tmp_path, 3, Damage(bad_chunk_header_crc=(1,)))
    report, _ = _read(path)
    assert [(i.chunk, i.message) for i in report.altered] == [(1, HEADER_ALTERED)]


@pytest.mark.parametrize("dirty", [False, True])
def test_the_chunk_an_open_log_was_filling_is_not_judged(tmp_path: Path, dirty: bool) -> None:
    """Windows leaves the checksum of the chunk it is filling stale until it seals it:
    in a log copied while open (dirty), that chunk says nothing; closed, it does."""
    path = _log(tmp_path, 3, Damage(dirty=dirty, bad_records_crc=(2,)))
    report, _ = _read(path)
    assert [i.chunk for i in report.altered] == ([] if dirty else [2])
    path = _log(tmp_path, 3, Damage(dirty=dirty, bad_records_crc=(0,)))  # sealed: judged
    report, _ = _read(path)
    assert [i.chunk for i in report.altered] == [0]


@pytest.mark.parametrize("dirty", [False, True])
def test_parts_of_a_big_log_name_what_a_whole_read_names(tmp_path: Path, dirty: bool) -> None:
    """Each part of a big log is read on its own; the chunk an open log was filling is
    the file's, not the last of each part."""
    chunks = ASIDE_CHUNKS + 6  # checked on a thread beside the reader
    plan = split_slots(_log(tmp_path, chunks), 8 * CHUNK_SIZE)
    assert plan is not None and len(plan) > 2
    ends = (plan[0].stop - 1, chunks - 1)  # the last chunk of the first part, of the file
    path = _log(tmp_path, chunks, Damage(dirty=dirty, bad_records_crc=(3, *ends)))
    whole, _ = _read(path)
    parts = [issue for slots in plan for issue in _read(path, slots)[0].altered]
    assert [i.chunk for i in whole.altered] == [3, ends[0]] + ([] if dirty else [ends[1]])
    assert parts == whole.altered


def test_real_logs_whole_or_copied_open_are_not_named(corpus_dir: Path, manifest) -> None:
    """Every real log the corpus lists as clean or only dirty: none is named, the two
    whose open chunk carries a stale checksum included."""
    plain = [row["file"] for row in manifest if row["condition"] in ("clean", "dirty-flag")]
    assert len(plain) > 200 and set(OPEN_WHEN_COPIED) <= set(plain)
    for name in OPEN_WHEN_COPIED:  # the stale checksum this rule is for is there
        assert scan_layout(corpus_dir / name, checksums=True).chunks[0].records_crc_ok is False
    named = {
        name: altered
        for name in plain
        if (altered := altered_chunks(corpus_dir / name, scan_layout(corpus_dir / name)))
    }
    assert named == {}


def test_logs_recovered_from_a_shadow_copy_name_their_changed_chunks(corpus_dir: Path) -> None:
    """Upstream's samples "with a bad checksum (VSS-recovered)": their stale file headers
    name an older chunk as the last; the chunk really being filled is not judged."""
    for name, chunks in ((RDP_CORE, [0, 13]), (RCM, [1, 15])):
        path = corpus_dir / name
        assert [i.chunk for i in altered_chunks(path, scan_layout(path))] == chunks


def test_ingest_and_report_name_the_changed_chunk_and_keep_its_records(tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    folder.mkdir()
    path = _log(folder, 3)
    _edit_vm_name(path, 45, "XYZ-VM0045")
    store = tmp_path / "store"
    summary = ingest([folder], store)
    assert summary.exit_code == 0 and [o.status for o in summary.outcomes] == ["read"]
    files = scan_files(store).collect()
    assert files["altered"].to_list() == [[f"chunk 2, offset 0x21000: {RECORDS_ALTERED}"]]
    assert files["errors"].to_list() == [[]]
    assert scan_events(store).collect().height == 60
    integ = integrity(files)
    assert integ["chunks_altered"] == 1 and integ["files_with_problems"] == 0
    assert [a["altered"] for a in integ["altered"]] == files["altered"].to_list()
    assert "1 chunk read in full does not match its checksums" in integrity_text(integ)


def test_the_command_line_says_which_file_changed(tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    folder.mkdir()
    _edit_vm_name(_log(folder, 3), 5, "XYZ-VM0005")
    result = CliRunner().invoke(app, ["ingest", str(folder), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"lmtrace: altered: {folder / 'VMMS-Admin.evtx'}: 1 chunk changed after Windows wrote"
        " its checksums; read and used (named in `lmtrace files` and the report)"
    ]


@pytest.mark.parametrize("engine", ["rust", "python"])
def test_a_chunk_whose_links_loop_is_named_and_not_read(tmp_path: Path, engine: str) -> None:
    """Two common strings whose links point at each other kept both EVTX engines busy for
    ever (a fuzzed corpus log found it: one byte made an entry's link point into the
    chunk header's table, whose slot points back at the entry). The chunk is left unread
    and named; the others are read. Run in a process of its own, so that a hang fails
    instead of stalling the suite."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    path = _log(folder, 3)
    data = bytearray(path.read_bytes())
    chunk = FILE_HEADER_SIZE + CHUNK_SIZE  # chunk 1
    first, second, *_ = [o for o in struct.unpack_from("<64I", data, chunk + 128) if o]
    struct.pack_into("<I", data, chunk + first, second)  # each entry's next link: the other
    struct.pack_into("<I", data, chunk + second, first)
    path.write_bytes(bytes(data))
    store = tmp_path / "store"
    command = ["ingest", str(folder), "--out", str(store), "--engine", engine]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    [row] = scan_files(store).collect().rows(named=True)
    assert row["chunks_skipped"] == 1 and row["records"] == 40
    assert row["errors"][0].startswith(
        "chunk 1, offset 0x11000: chunk's string or template table links loop back"
    )
    assert row["altered"] == []  # not read, so not 'read and used'
