"""The EVTX reader on real corpus bytes and on damaged copies of them.

Damaged copies are made in tmp_path by tests/samples.py; the expected numbers
come from an undamaged read of the same file and from the chunk headers, never
from the code under test's own constants.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest
from Evtx.Evtx import Evtx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers.engines import Engine
from parsers.evtx_layout import CHUNK_SIZE, FILE_HEADER_SIZE, scan_layout
from parsers.evtx_reader import Provenance, ReadSettings, read_evtx
from parsers.model import EVENT_SCHEMA, EventFilter, ReadReport, UnreadableFileError
from tests import samples
from tests.samples import sample_path

pytestmark = pytest.mark.corpus

MULTI_CHUNK = "dirty_chunks_beyond_header"
# Columns a damaged copy's rows differ in from the original's: the copy's path and hash,
# and the engine of rows python-evtx recovered.
COPY_COLUMNS = ["source_path", "file_sha256", "engine"]  # 11 valid chunks, 1160 records
NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"


def read(path: Path, engine: Engine = "rust", **wanted: Any) -> tuple[pl.DataFrame, ReadReport]:
    """Read ``path`` whole; ``wanted``: the EventFilter's fields (event_ids=..., since=...)."""
    settings = ReadSettings(engine, EventFilter(**wanted))
    result = read_evtx(path, settings, Provenance(str(path), None, "sha"))
    frames = list(result)
    assert frames, "a read yields at least one (possibly empty) frame"
    for frame in frames:
        assert frame.schema == pl.Schema(EVENT_SCHEMA)
    return pl.concat(frames), result.report


@pytest.fixture
def multi(corpus_dir: Path) -> Path:
    return sample_path(corpus_dir, MULTI_CHUNK)


def _declared(path: Path, index: int) -> int:
    return len(scan_layout(path).chunks[index].record_ids)


# --- damage -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "chunk", "engine"), [(MULTI_CHUNK, 3, "rust"), ("security_5156", 0, "python")]
)
def test_a_file_cut_inside_a_chunk_keeps_the_records_before_the_cut(
    corpus_dir: Path, tmp_path: Path, sample: str, chunk: int, engine: Engine
) -> None:
    """pyevtx-rs skips a chunk the end of the file cuts short, with all its records;
    the records wholly before the cut are read (python-evtx), the others counted.
    Which records lie wholly before the cut, python-evtx's record offsets on the
    whole file say. (python-evtx reads about a hundred records a second: it gets the
    one-chunk log.)"""
    src = sample_path(corpus_dir, sample)
    full, _ = read(src)
    at = samples.chunk_offset(chunk)
    cut_at = at + CHUNK_SIZE // 2
    with Evtx(str(src)) as log:
        cut_chunk = next(c for c in log.chunks() if c.offset() == at)
        before = [r.record_num() for r in cut_chunk.records() if r.offset() + r.size() <= cut_at]
    whole = [i for c in range(chunk) for i in scan_layout(src).chunks[c].record_ids]
    frame, report = read(samples.truncated(src, tmp_path, cut_at), engine=engine)
    assert sorted(frame["header_record_id"]) == sorted(whole + before)
    assert frame["header_record_id"].is_in(full["header_record_id"].implode()).all()
    assert report.chunks_skipped == 0 and report.records_missing == 0
    assert report.records_skipped == _declared(src, chunk) - len(before)
    cut = next(i for i in report.issues if i.chunk == chunk)
    assert cut.offset == at and "cut short" in cut.message


def test_zero_filled_chunk_is_counted_and_the_rest_read(multi: Path, tmp_path: Path) -> None:
    full, _ = read(multi)
    frame, report = read(samples.zero_filled_chunk(multi, tmp_path, 1))
    assert frame.height == full.height - _declared(multi, 1)
    assert report.chunks_skipped == 1
    # the wiped chunk's records, and the 262 the file itself lacks (ids 1156..1417)
    assert report.records_missing == _declared(multi, 1) + 262
    assert [(i.chunk, i.message.split(" (")[0]) for i in report.issues] == [
        (1, "chunk is all zero bytes but the file header counts it as in use"),
        (None, "record ids 132..238 are missing"),
        (None, "record ids 1156..1417 are missing"),
    ]


# python-evtx reads about a hundred records a second: it gets the one-chunk log
BY_ENGINE = [(MULTI_CHUNK, 2, "rust"), ("security_5156", 0, "python")]


@pytest.mark.parametrize(("sample", "chunk", "engine"), BY_ENGINE)
def test_a_chunk_behind_a_damaged_signature_is_read(
    corpus_dir: Path, tmp_path: Path, sample: str, chunk: int, engine: Engine
) -> None:
    """pyevtx-rs skips a chunk whose ElfChnk signature is damaged, and its records went
    uncounted (the gap they leave is at the edge of the file's ids, or hid a real gap
    when they were the last chunk's); python-evtx reads them."""
    src = sample_path(corpus_dir, sample)
    full, clean = read(src)
    frame, report = read(samples.flipped_chunk_magic(src, tmp_path, chunk), engine=engine)
    # recovered rows come last
    assert frame.drop(COPY_COLUMNS).sort("header_record_id").equals(full.drop(COPY_COLUMNS))
    assert report.chunks_skipped == 0 and report.records_missing == clean.records_missing
    assert report.records_recovered == (_declared(src, chunk) if engine == "rust" else 0)
    first = report.issues[0]
    assert first.chunk == chunk and first.offset == samples.chunk_offset(chunk)
    assert "no ElfChnk signature" in first.message


def test_corpus_bad_chunk_magic_sample(corpus_dir: Path) -> None:
    frame, report = read(sample_path(corpus_dir, "bad_chunk_magic"))
    assert frame.height == 270
    assert report.chunks_skipped >= 2  # the two zeroed headers over data, at least
    assert {6, 10} <= {i.chunk for i in report.issues}


def test_wrong_checksums_do_not_lose_records(multi: Path, tmp_path: Path) -> None:
    full, _ = read(multi)
    frame, report = read(samples.corrupted_crcs(multi, tmp_path))
    assert frame.drop("source_path").equals(full.drop("source_path"))
    assert report.records == full.height


def test_bad_record_is_counted_not_fatal(corpus_dir: Path) -> None:
    frame, report = read(sample_path(corpus_dir, "bad_checksum_vss"))
    assert frame.height == 1910
    assert report.records_skipped >= 4  # upstream: 1910 ok / 4 err, plus unread declared ones
    assert any(i.record_id == 6335011 for i in report.issues)


def test_records_a_chunk_declares_but_no_engine_reads_are_counted(corpus_dir: Path) -> None:
    """pyevtx-rs stops chunk 0 at the zero-size record without saying how many follow."""
    path = sample_path(corpus_dir, "zero_data_size")
    chunk0 = scan_layout(path).chunks[0]
    for engine in ("rust", "python"):
        frame, report = read(path, engine=engine)
        read_in_chunk0 = frame["header_record_id"].is_in(list(chunk0.record_ids)).sum()
        unread = [i for i in report.issues if i.chunk == 0 and "declares" in i.message]
        assert len(unread) == 1, engine
        assert f"{len(chunk0.record_ids) - read_in_chunk0} were not read" in unread[0].message


# The chunk header fields (libyal's EVTX documentation): record numbers at 8 and 16,
# record ids at 24 and 32, free space offset at 48 (all little-endian).
_LAST_ID, _FIRST_ID, _FREE_SPACE = 32, 24, 48


@pytest.mark.parametrize(
    ("at", "value", "engine"),
    [
        (_LAST_ID, 70, "rust"),  # declares 1..70: pyevtx-rs stops there
        (_LAST_ID, 70, "python"),
        (_LAST_ID, 255, "rust"),  # declares 1..255: 154 records that never were
        (_FIRST_ID, 5, "rust"),  # declares 5..101
    ],
)
def test_a_damaged_chunk_header_neither_hides_nor_invents_records(
    corpus_dir: Path, tmp_path: Path, at: int, value: int, engine: Engine
) -> None:
    """Found by test_random_mutations_never_crash: one byte of a chunk header's last
    record id hid 31 of the chunk's 101 records, with no word in the report."""
    src = sample_path(corpus_dir, "security_5156")
    full, clean = read(src)
    assert not clean.issues and full.height == len(scan_layout(src).chunks[0].record_ids)
    frame, report = read(samples.chunk_header_byte(src, tmp_path, at, value), engine=engine)
    assert frame.drop(COPY_COLUMNS).sort("header_record_id").equals(full.drop(COPY_COLUMNS))
    assert report.records_skipped == report.records_missing == 0
    assert "chunk header fails its checksum" in str(report.issues[0])
    assert f"its records run 1..{full.height}" in str(report.issues[0])


@pytest.mark.parametrize("sample", ["security_5156", MULTI_CHUNK])
def test_no_single_chunk_header_byte_hides_or_invents_a_record(
    corpus_dir: Path, tmp_path: Path, sample: str
) -> None:
    """Every field byte of a chunk header (the first chunk of one, the fourth of the
    other), set to 0x00, 0xff and with its low bit flipped: each record is read or
    counted as lost, and no record that is not in the file is counted."""
    src = sample_path(corpus_dir, sample)
    full, clean = read(src)
    counted_clean = clean.records_skipped + clean.records_missing  # the sample's own gaps
    chunk = 0 if sample == "security_5156" else 3
    at_chunk = FILE_HEADER_SIZE + chunk * CHUNK_SIZE
    data = src.read_bytes()
    damaged = tmp_path / "damaged.evtx"
    for at in range(8, 128):  # past the magic, up to the offset tables
        for value in {0x00, 0xFF, data[at_chunk + at] ^ 1} - {data[at_chunk + at]}:
            copy = bytearray(data)
            copy[at_chunk + at] = value
            damaged.write_bytes(bytes(copy))
            frame, report = read(damaged)
            lost = full.height - frame.height
            counted = report.records_skipped + report.records_missing - counted_clean
            assert counted == lost, (at, value, frame.height, report.issues)
            assert report.partial or lost == 0, (at, value)


def test_records_behind_a_damaged_free_space_offset_are_counted(
    corpus_dir: Path, tmp_path: Path
) -> None:
    """A free space offset cut below the header marked the chunk empty: its records
    were lost without a word. Both engines stop at that offset; the loss is counted."""
    src = sample_path(corpus_dir, "security_5156")
    declared = len(scan_layout(src).chunks[0].record_ids)
    damaged = samples.chunk_header_byte(src, tmp_path, _FREE_SPACE + 1, 0)
    for engine in ("rust", "python"):
        frame, report = read(damaged, engine=engine)
        assert frame.height + report.records_skipped == declared, engine
        assert report.partial


@settings(
    max_examples=15,
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 200))
def test_random_mutations_never_crash(
    corpus_dir: Path, tmp_path: Path, seed: int, count: int
) -> None:
    src = sample_path(corpus_dir, "security_5156")
    _assert_sane(*read(samples.mutated(src, tmp_path, seed, count)), undamaged=101)


@settings(
    max_examples=4,  # python-evtx reads ~100 records/s: each example costs seconds
    deadline=timedelta(seconds=30),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(1, 200))
def test_random_mutations_python_engine(
    corpus_dir: Path, tmp_path: Path, seed: int, count: int
) -> None:
    src = sample_path(corpus_dir, "security_5156")
    damaged = samples.mutated(src, tmp_path, seed, count)
    _assert_sane(*read(damaged, engine="python"), undamaged=101)


def _assert_sane(frame: pl.DataFrame, report: ReadReport, undamaged: int) -> None:
    """Rows and report agree, payloads are JSON objects, and fewer rows are never silent."""
    assert report.records_kept == frame.height == report.records
    assert frame.height == undamaged or report.partial
    payloads = frame["data"].drop_nulls().to_list()
    assert all(isinstance(msgspec.json.decode(t), dict) for t in payloads)


@pytest.mark.parametrize(("sample", "engine"), [(s, e) for s, _, e in BY_ENGINE])
def test_a_file_header_without_its_signature_is_rebuilt_from_the_chunks(
    corpus_dir: Path, tmp_path: Path, sample: str, engine: Engine
) -> None:
    """pyevtx-rs refuses a file whose ElfFile signature is damaged, and lmtrace took
    such a file for no log at all: every record of its intact chunks was lost."""
    src = sample_path(corpus_dir, sample)
    full, clean = read(src)
    data = bytearray(src.read_bytes())
    data[:8] = bytes(8)
    damaged = tmp_path / "System.evtx"
    damaged.write_bytes(bytes(data))
    frame, report = read(damaged, engine=engine)
    assert frame.drop(COPY_COLUMNS).equals(full.drop(COPY_COLUMNS))
    assert report.records_missing == clean.records_missing  # the log's own gap, no more
    assert report.records_skipped == report.chunks_skipped == 0
    rebuilt = [i for i in report.issues if i.offset == 0]
    assert len(rebuilt) == 1 and "no ElfFile signature" in rebuilt[0].message


def test_a_record_whose_time_cannot_be_read_is_kept_and_named(tmp_path: Path) -> None:
    frame, report = read(samples.timeless_vmms_log(tmp_path))
    assert frame.height == 2 and frame["timestamp"].null_count() == 2
    timeless = [i for i in report.issues if "kept without a time" in i.message]
    assert [i.record_id for i in timeless] == [1, 2]
    assert report.partial


# --- not EVTX, fallback --------------------------------------------------------


def test_not_evtx_is_refused_by_signature_not_extension(corpus_dir: Path, tmp_path: Path) -> None:
    fake = tmp_path / "System.evtx"
    fake.write_bytes(b"#Version: 1.5\n#Software: Microsoft Windows Firewall\n")
    with pytest.raises(UnreadableFileError, match=r"System\.evtx.*ElfFile"):
        read_evtx(fake, ReadSettings(), Provenance(str(fake), None, "-"))
    renamed = tmp_path / "log.txt"
    renamed.write_bytes(sample_path(corpus_dir, "security_5156").read_bytes())
    frame, _ = read(renamed)
    assert frame.height == 101


def test_header_only_stub_is_unreadable_by_both_engines(multi: Path, tmp_path: Path) -> None:
    """pyevtx-rs cannot open a cut header; the python fallback finds no chunk: one clear error."""
    stub = samples.truncated(multi, tmp_path, 2000)  # ElfFile magic, header cut short
    with pytest.raises(UnreadableFileError, match=r"\.cut2000\.evtx: pyevtx-rs.*no complete chunk"):
        read_evtx(stub, ReadSettings(), Provenance(str(stub), None, "-"))
    with pytest.raises(UnreadableFileError, match="fallback to python-evtx is off"):
        read_evtx(stub, ReadSettings(fallback=False), Provenance(str(stub), None, "-"))


def test_a_read_is_iterated_once(multi: Path) -> None:
    result = read_evtx(multi, ReadSettings(), Provenance(str(multi), None, "-"))
    assert sum(f.height for f in result) == 1160
    with pytest.raises(RuntimeError, match="once"):
        list(result)


# --- filters --------------------------------------------------------------------


@pytest.fixture
def system_log(corpus_dir: Path) -> Path:
    return corpus_dir / "network/tugix456__System.evtx"


def test_event_id_filter(system_log: Path) -> None:
    full, _ = read(system_log)
    wanted = set(full["event_id"].value_counts(sort=True)["event_id"].head(2).to_list())
    frame, report = read(system_log, event_ids=frozenset(wanted))
    assert frame.equals(full.filter(pl.col("event_id").is_in(sorted(wanted))))
    assert report.records == full.height and report.records_kept == frame.height < full.height


def test_channel_and_provider_filters_ignore_case(system_log: Path, corpus_dir: Path) -> None:
    full, _ = read(system_log)
    provider = full["provider"].mode().item(0)
    frame, _ = read(system_log, providers=frozenset({provider.upper()}))
    assert frame.equals(full.filter(pl.col("provider") == provider))
    frame, _ = read(system_log, channels=frozenset({"SYSTEM"}))
    assert frame.equals(full)
    frame, _ = read(system_log, channels=frozenset({"security"}))
    assert frame.height == 0


def test_time_filters_are_inclusive(system_log: Path) -> None:
    full, _ = read(system_log)
    ts = full["timestamp"].sort()
    since, until = ts[len(ts) // 4], ts[len(ts) // 2]
    frame, report = read(system_log, since=since, until=until)
    expected = full.filter(pl.col("timestamp").is_between(since, until, closed="both"))
    assert frame.equals(expected)
    assert frame["timestamp"].min() == since and frame["timestamp"].max() == until
    assert report.first_ts == ts[0] and report.last_ts == ts[-1]


FILTER_FILES = [
    "network/tugix456__System.evtx",  # EventID with Qualifiers, many providers
    "network/EVTX-ATTACK-SAMPLES__DE_RDP_Tunnel_5156.evtx",  # UserData with a Channel key
    "parsers/omerbenamram-evtx__2-vss_7-System.evtx",  # dirty, chunks beyond the header
    "parsers/python-evtx__dns_log_malformed.evtx",
]


@pytest.mark.parametrize("name", FILTER_FILES)
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_filter_selects_exactly_the_matching_rows(
    corpus_dir: Path, name: str, data: st.DataObject
) -> None:
    """Filtered reads (which skip undecoded records early) == unfiltered read + polars filter."""
    path = corpus_dir / name
    full, full_report = read(path)
    ids = sorted(set(full["event_id"].drop_nulls().to_list()))
    times = full["timestamp"].drop_nulls().sort().to_list()
    kw: dict[str, object] = {}
    expr = pl.lit(True)
    if data.draw(st.booleans(), "by id"):
        wanted = frozenset(data.draw(st.lists(st.sampled_from(ids), max_size=3), "ids"))
        kw["event_ids"] = wanted
        expr &= pl.col("event_id").is_in(sorted(wanted))
    if data.draw(st.booleans(), "by provider"):
        provider = data.draw(st.sampled_from(sorted(set(full["provider"].drop_nulls()))), "p")
        kw["providers"] = frozenset({provider.swapcase()})
        expr &= pl.col("provider").str.to_lowercase() == provider.lower()
    if data.draw(st.booleans(), "by channel"):
        channel = data.draw(st.sampled_from(["system", "Security", "nope"]), "channel")
        kw["channels"] = frozenset({channel})
        expr &= pl.col("channel").str.to_lowercase() == channel.lower()
    if data.draw(st.booleans(), "by time"):
        lo, hi = sorted(data.draw(st.lists(st.sampled_from(times), min_size=2, max_size=2), "t"))
        kw["since"], kw["until"] = lo, hi
        expr &= pl.col("timestamp").is_between(lo, hi, closed="both")
    frame, report = read(path, **kw)
    assert frame.equals(full.filter(expr.fill_null(False)))
    assert report.records == full_report.records
    assert (report.first_ts, report.last_ts) == (full_report.first_ts, full_report.last_ts)
    assert report.records_skipped == full_report.records_skipped


# --- progress -------------------------------------------------------------------


def test_progress_adds_up_to_file_size_and_advances(multi: Path) -> None:
    steps: list[int] = []
    result = read_evtx(multi, ReadSettings(), Provenance(str(multi), None, "-"), steps.append)
    for _ in result:
        pass
    assert sum(steps) == multi.stat().st_size
    assert len(steps) >= 4 and all(s > 0 for s in steps)  # it moves within the file


# --- normalization and payload, against python-evtx's own XML -------------------


def _xml_of(path: Path, header_id: int) -> ET.Element:
    with Evtx(str(path)) as log:
        for record in log.records():
            if record.record_num() == header_id:
                return ET.fromstring(record.xml())
    raise AssertionError(f"record {header_id} not found")


def test_security_5156_named_data_matches_the_xml(corpus_dir: Path) -> None:
    path = sample_path(corpus_dir, "security_5156")
    frame, _ = read(path, event_ids=frozenset({5156}))
    row = frame.row(0, named=True)
    root = _xml_of(path, row["header_record_id"])
    xml_data = {d.get("Name"): d.text or "" for d in root.iter(f"{NS}Data")}
    data = msgspec.json.decode(row["data"])
    assert list(data) == list(xml_data)  # every name, in document order
    for name in ("Application", "Direction", "SourceAddress", "DestPort", "ProcessID", "Protocol"):
        assert data[name] == xml_data[name]
    system = root.find(f"{NS}System")
    assert row["event_id"] == int(system.find(f"{NS}EventID").text)
    assert row["record_id"] == int(system.find(f"{NS}EventRecordID").text)
    guid = system.find(f"{NS}Provider").get("Guid")
    assert row["provider_guid"] == guid.lower() and guid.startswith("{")
    assert row["keywords"] == int(system.find(f"{NS}Keywords").text, 16)


def test_userdata_children_of_the_wrapper(corpus_dir: Path) -> None:
    path = sample_path(corpus_dir, "security_5156")
    frame, _ = read(path, event_ids=frozenset({1102}))
    row = frame.row(0, named=True)
    root = _xml_of(path, row["header_record_id"])
    wrapper = next(iter(root.find(f"{NS}UserData")))
    expected = {child.tag.split("}")[-1]: child.text or "" for child in wrapper}
    data = msgspec.json.decode(row["data"])
    assert list(data) == list(expected)
    for name, text in expected.items():  # python-evtx pads hex values with zeros
        same = int(text, 16) == int(data[name], 16) if text.startswith("0x") else text == data[name]
        assert same, name


def test_unnamed_data_get_positional_names(corpus_dir: Path) -> None:
    path = sample_path(corpus_dir, "unnamed_data")
    frame, _ = read(path, event_ids=frozenset({5805}))
    data = msgspec.json.decode(frame["data"][0])
    assert list(data) == ["Data_0", "Data_1", "Binary"]
    assert data["Data_1"].startswith("%%")
    assert data["Binary"] == data["Binary"].upper() and bytes.fromhex(data["Binary"])


def test_repeated_userdata_elements_are_numbered(corpus_dir: Path) -> None:
    frame, _ = read(sample_path(corpus_dir, "userdata_repeated"))
    keys = [list(msgspec.json.decode(t)) for t in frame["data"]]
    nested = next(k for k in keys if "Applications.Application_1" in k)
    assert nested.index("Applications.Application") < nested.index("Applications.Application_1")


def test_record_id_and_header_id_are_both_kept(corpus_dir: Path) -> None:
    frame, _ = read(sample_path(corpus_dir, "record_header_id_differs"))
    assert frame.select("record_id", "header_record_id").row(0) == (707, 1)


def test_qualifiers_are_split_from_event_id(corpus_dir: Path) -> None:
    path = corpus_dir / "network/tugix456__System.evtx"
    frame, _ = read(path)
    with_q = frame.filter(pl.col("qualifiers").is_not_null()).row(0, named=True)
    system = _xml_of(path, with_q["header_record_id"]).find(f"{NS}System")
    event_id = system.find(f"{NS}EventID")
    assert with_q["event_id"] == int(event_id.text)
    assert with_q["qualifiers"] == int(event_id.get("Qualifiers"))
