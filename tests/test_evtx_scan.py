"""The compiled row scanner (parsers/_evtx_scan.c) writes exactly the Python reference rows.

The scanner may hand a record (or only its payload) back to the Python code; it must never
write a row that differs from what parsers/evtx_rows.py makes of the same record. Checked:

1. every record of the public corpus, read both ways through the real reader (frames and
   read reports equal);
2. records generated in the JSON shapes pyevtx-rs writes, with the odd values of damaged or
   hostile logs (escapes, raw control characters, repeated keys, numbers beyond 64 bits,
   nested and null payloads), scanned directly and compared row by row with the reference;
3. real corpus records cut short or altered: no crash, and rows equal where written;
4. the ordinary shapes are written by the scanner, not handed back (else the speed is lost
   without a word).
"""

from __future__ import annotations

import itertools
import json
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import evtx
import msgspec
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers.evtx_layout import is_evtx
from parsers.evtx_reader import Provenance, ReadSettings, read_evtx
from parsers.evtx_rows import DOC_DECODER, Batch, add_system, raw_frame, rust_payload
from tests.conftest import EXAMPLES, corpus_root

scanner = pytest.importorskip(
    "parsers._evtx_scan",
    reason="the compiled scanner was not built (no C compiler at install): "
    "the reader uses the Python rows, and there is nothing to compare",
)


def test_the_build_is_of_the_source_beside_it() -> None:
    """A stale build is not used by the reader: every comparison below would then compare
    the Python rows with themselves. Rebuild with `pip install -e .`."""
    from parsers.native import compiled_scanner, source_digest

    assert source_digest() == scanner.SOURCE, "parsers/_evtx_scan.c changed: pip install -e ."
    assert compiled_scanner()[0] is scanner


def _read(path: Path, native: bool) -> tuple[pl.DataFrame | None, str]:
    read = read_evtx(path, ReadSettings(native_rows=native), Provenance(str(path), None, "-"))
    frames = list(read)
    return (pl.concat(frames) if frames else None), repr(read.report)


def _corpus_files() -> list[Path]:
    root = corpus_root()
    found = sorted(root.glob("*/*.evtx")) if root.is_dir() else []
    return [p for p in found if p.stat().st_size and is_evtx(p.read_bytes()[:8])]


@pytest.mark.corpus
def test_every_corpus_record_reads_the_same_both_ways(corpus_dir: Path) -> None:
    files = _corpus_files()
    assert len(files) > 200
    differ = []
    for path in files:
        native, python = _read(path, True), _read(path, False)
        same_rows = (native[0] is None and python[0] is None) or (
            native[0] is not None and python[0] is not None and native[0].equals(python[0])
        )
        if not same_rows or native[1] != python[1]:
            differ.append(path.name)
    assert not differ


def test_the_example_bundles_are_written_by_the_scanner() -> None:
    """The simulated logs hold only ordinary shapes: no record and no payload handed back."""
    handed_back, records = 0, 0
    for path in sorted(EXAMPLES.glob("*/*/*.evtx")):
        for batch in _scan_file(path):
            records += batch.rows
            handed_back += len(batch.fallback)
    assert records > 1000 and handed_back == 0


@pytest.mark.corpus
def test_real_ordinary_records_are_written_by_the_scanner(corpus_dir: Path) -> None:
    """Security, System and Hyper-V style payloads (flat EventData, one-wrapper UserData,
    null and boolean values, 64-bit numbers) are the scanner's; at most the shapes it
    leaves to Python (unnamed Data, nested elements, repeated keys) are handed back."""
    kinds: dict[str, int] = {"record": 0, "payload": 0}
    records = 0
    for path in _corpus_files():
        for batch in _scan_file(path):
            records += batch.rows
            for _, kind, _, _ in batch.fallback:
                kinds[kind] += 1
    assert records > 40_000
    assert kinds["payload"] < 0.15 * records and kinds["record"] < 0.02 * records


def _scan_file(path: Path) -> list[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            records = evtx.PyEvtxParser(str(path), skip_errors=True).records_json()
        except (OSError, RuntimeError):
            return []
        batches = []
        while True:
            batch = scanner.scan(records, 4096)
            batches.append(batch)
            if batch.exhausted:
                return batches


# --- records scanned directly, against the reference -------------------------


def _reference(records: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """What parsers/evtx_rows.py makes of each record (None: the typed decode refuses it;
    the reader then goes its lenient way, which the scanner must leave to Python)."""
    rows: list[dict[str, Any] | None] = []
    for record in records:
        try:
            event = DOC_DECODER.decode(record["data"]).Event
        except (msgspec.DecodeError, UnicodeEncodeError):
            rows.append(None)
            continue
        batch = Batch()
        add_system(batch, event.System, record["event_record_id"])
        frame = raw_frame(batch.columns)
        try:
            data = rust_payload((event.EventData, event.UserData, event.ProcessingErrorData))
        except (msgspec.DecodeError, ValueError, TypeError):
            data = None
        rows.append({**frame.row(0, named=True), "data": data})
    return rows


# A batch longer than this many records has its rows written by a second thread; the
# checks below scan each case both ways (0: the thread writes every row).
_INLINE, _THREADED = 2**62, 0


def _check(records: list[dict[str, Any]]) -> dict[str, int]:
    """Scan ``records`` with and without the writer thread: the same batch both ways, and
    every row written equal to the reference. Returns how many rows were written, and
    handed back by kind."""
    inline = _check_one(records, _INLINE)
    threaded = _check_one(records, _THREADED)
    assert inline == threaded
    return inline


def _check_one(records: list[dict[str, Any]], thread_after: int) -> dict[str, int]:
    scanned = scanner.scan(iter(records), len(records) + 1, None, thread_after)
    assert scanned.exhausted and scanned.error is None and scanned.rows == len(records)
    back = {row: kind for row, kind, _, _ in scanned.fallback}
    for row, _, header, data in scanned.fallback:  # handed back as it came
        assert header == records[row]["event_record_id"] and data == records[row]["data"]
    written = pl.DataFrame(scanned).rows(named=True)
    expected = _reference(records)
    for row, (got, want) in enumerate(zip(written, expected, strict=True)):
        if back.get(row) == "record":
            continue
        assert want is not None, f"row {row}: written, but the typed decode refuses it"
        if back.get(row) == "payload":
            assert got["data"] is None
            got = {**got, "data": want["data"]}
        assert got == want, f"row {row}: {records[row]['data']}"
    return {
        "written": len(records) - len(back),
        "record": sum(1 for k in back.values() if k == "record"),
        "payload": sum(1 for k in back.values() if k == "payload"),
    }


def _record(system: dict[str, Any], sections: dict[str, Any], header: int = 1) -> dict[str, Any]:
    """A record as pyevtx-rs writes it: compact JSON, non-ASCII as UTF-8, msgspec's escapes."""
    event = {"#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"}}
    event |= {"System": system, **sections}
    data = json.dumps({"Event": event}, ensure_ascii=False, separators=(",", ":"))
    return {"event_record_id": header, "data": data}


ORDINARY_SYSTEM = {
    "Provider": {
        "#attributes": {
            "Name": "Microsoft-Windows-Security-Auditing",
            "Guid": "54849625-5478-4994-A5BA-3E3B0328C30D",
        }
    },
    "EventID": 5156,
    "Version": 1,
    "Level": 0,
    "Task": 12810,
    "Opcode": 0,
    "Keywords": "0x8020000000000000",
    "TimeCreated": {"#attributes": {"SystemTime": "2025-03-04T09:35:43.591590Z"}},
    "EventRecordID": 986,
    "Correlation": None,
    "Execution": {"#attributes": {"ProcessID": 4, "ThreadID": 88}},
    "Channel": "Security",
    "Computer": "APP-VM01",
    "Security": None,
}

ORDINARY = {
    "flat EventData": {"EventData": {"ProcessID": 1104, "Application": "\\device\\x.exe"}},
    "EventData with null, bool, 64-bit": {
        "EventData": {"a": None, "b": True, "c": False, "d": 18446744073709551615, "e": -5}
    },
    "EventData with its attributes": {"EventData": {"#attributes": {"Name": "tpl"}, "x": "1"}},
    "UserData, one wrapper": {
        "UserData": {
            "VmlEventLog": {
                "#attributes": {"xmlns": "http://www.microsoft.com/Windows/Virtualization/Events"},
                "VmName": "WEB-VM01",
                "VmId": "4A1B",
                "Count": 3,
            }
        }
    },
    "unnamed Data (EventLog 6013)": {
        "EventData": {"Data": {"#text": ["", "11", "60", "-60 W. Europe"]}, "Binary": None}
    },
    "one unnamed Data": {"EventData": {"Data": {"#text": 7}}},
    "named nested element (ComplexData)": {
        "EventData": {
            "Group": 0,
            "ComplexData": {"#attributes": {"Name": "IdleState"}, "#text": "01"},
            "ComplexData_1": {"#attributes": {"Name": "PerfState", "Size": 4}},
        }
    },
    "nested UserData (RestartManager)": {
        "UserData": {
            "RmRestartEvent": {
                "#attributes": {"xmlns": "http://www.microsoft.com/2005/08/Windows/Reliability"},
                "RmSessionId": 0,
                "Applications": {"Application": [".NET Runtime", "spoolsv"]},
                "Status": {"#attributes": {"Code": 5, "xmlns:x": "u"}, "#text": None},
            }
        }
    },
    "list and element values": {"EventData": {"a": [1, None, True, "x"], "b": {"c": {"d": "e"}}}},
    "no payload": {},
    "null EventData": {"EventData": None},
    "escapes and non-ASCII": {
        "EventData": {"List": "%%1537\r\n\t%%1538", "Odd": "\x0f-\x7f", "N": "Grüße 日本 😀"}
    },
}


@pytest.mark.parametrize("sections", ORDINARY.values(), ids=ORDINARY.keys())
def test_ordinary_shapes_are_written_as_the_reference_writes_them(
    sections: dict[str, Any],
) -> None:
    counts = _check([_record(ORDINARY_SYSTEM, sections)])
    assert counts["written"] == 1


ODD = {
    "unnamed Data beside a key of its name": {
        "EventData": {"Data_1": "x", "Data": {"#text": ["a", "b"]}}
    },
    "unnamed Data with attributes": {"EventData": {"Data": {"#attributes": {}, "#text": "a"}}},
    "float": {"EventData": {"a": 1.5}},
    "float in a nested element": {"UserData": {"W": {"Stats": {"Rate": 0.5}}}},
    "nested keys that meet": {"EventData": {"A": {"#attributes": {"b": "1"}, "b": "2"}}},
    "two wrappers": {"UserData": {"A": {"x": "1"}, "B": {"y": "2"}}},
    "two sections": {"EventData": {"a": "1"}, "UserData": {"W": {"b": "2"}}},
    "processing error": {"ProcessingErrorData": {"ErrorCode": 15005}},
    "beyond 64 bits": {"EventData": {"a": 123456789012345678901234567890}},
}


@pytest.mark.parametrize("sections", ODD.values(), ids=ODD.keys())
def test_odd_payloads_are_handed_back_for_their_payload_only(sections: dict[str, Any]) -> None:
    counts = _check([_record(ORDINARY_SYSTEM, sections)])
    assert counts["payload"] == 1


ODD_TEXT = {
    "a repeated payload key": ('"ProcessID":1104,', '"ProcessID":1104,"ProcessID":7,'),
    "upper-case escape": ('"Application":"', '"Application":"\\u000F'),
    "escaped slash": ('"Application":"', '"Application":"\\/'),
    "escaped letter": ('"Application":"', '"Application":"\\u0041'),
    "surrogate pair": ('"Application":"', '"Application":"\\ud83d\\ude00'),
}


@pytest.mark.parametrize(("old", "new"), ODD_TEXT.values(), ids=ODD_TEXT.keys())
def test_escapes_msgspec_writes_otherwise_are_not_copied(old: str, new: str) -> None:
    record = _record(ORDINARY_SYSTEM, ORDINARY["flat EventData"])
    assert old in record["data"]
    record["data"] = record["data"].replace(old, new, 1)
    counts = _check([record])
    assert counts["payload"] == 1


SYSTEM_ODDITIES = {
    "EventID as text": {"EventID": "5156"},
    "EventID element with Qualifiers": {
        "EventID": {"#attributes": {"Qualifiers": 16384}, "#text": 7036}
    },
    "Computer as a number": {"Computer": 7},
    "ProcessID as text": {"Execution": {"#attributes": {"ProcessID": "4", "ThreadID": 8}}},
    "record id beyond int64": {"EventRecordID": 2**63},
    "negative zero": {"Version": "-0"},
    "Keywords odd": {"Keywords": " 0X80_00 "},
    "Keywords too big": {"Keywords": "0x1ffffffffffffffff"},
    "Keywords not hex": {"Keywords": "zz"},
    "Guid with braces and spaces": {
        "Provider": {"#attributes": {"Name": "P", "Guid": " {ABCD-EF} "}}
    },
    "Guid non-ASCII": {"Provider": {"#attributes": {"Name": "P", "Guid": "é"}}},
    "EventSourceName only": {"Provider": {"#attributes": {"EventSourceName": "Service Control"}}},
    "nulls everywhere": {k: None for k in ORDINARY_SYSTEM},
    "System missing": None,
    "escaped Computer": {"Computer": 'VM\n"01"\\ é'},
    "Security with a user": {"Security": {"#attributes": {"UserID": "S-1-5-18"}}},
    "TimeCreated odd": {"TimeCreated": {"#attributes": {"SystemTime": 5}}},
    "unknown System field": {"Extra": {"deep": [1, {"x": None}]}},
}


@pytest.mark.parametrize("change", SYSTEM_ODDITIES.values(), ids=SYSTEM_ODDITIES.keys())
def test_odd_system_fields_are_written_as_the_reference_or_handed_back(
    change: dict[str, Any] | None,
) -> None:
    system = {} if change is None else {**ORDINARY_SYSTEM, **change}
    _check([_record(system, ORDINARY["flat EventData"])])


def test_damaged_text_is_handed_back() -> None:
    good = _record(ORDINARY_SYSTEM, ORDINARY["flat EventData"])["data"]
    damaged = [
        good[:-1],  # cut short
        good + " x",  # trailing text
        good.replace('"Computer":"APP-VM01"', '"Computer":"APP\x01VM01"'),  # raw control
        good.replace('"Level":0', '"Level":0,"Level":4'),  # a System key twice
        good.replace('"Event":', '"Event":{},"Event":', 1),
        "",
        "[]",
        '{"Event":null}',
    ]
    records = [{"event_record_id": i, "data": text} for i, text in enumerate(damaged)]
    counts = _check(records)
    assert counts["written"] == 0


def _mixed(n: int) -> list[dict[str, Any]]:
    """``n`` records: mostly ordinary, every 7th handed back whole, every 11th for its
    payload only, every 13th with a header id beyond int64 (handed back unscanned)."""
    good = _record(ORDINARY_SYSTEM, ORDINARY["flat EventData"])["data"]
    odd_payload = _record(ORDINARY_SYSTEM, ODD["two sections"])["data"]
    records = []
    for i in range(n):
        data = good.replace('"EventRecordID":986', f'"EventRecordID":{i}')
        if i % 7 == 3:
            data = data[:-1]
        elif i % 11 == 5:
            data = odd_payload
        header = 2**64 - 1 if i % 13 == 6 else i
        records.append({"event_record_id": header, "data": data})
    return records


def _batches(records: list[dict[str, Any]], limit: int, thread_after: int) -> list[tuple]:
    """Each batch of a scan of ``records``: rows, handed back, exhausted, frame."""
    it, batches = iter(records), []
    while not batches or not batches[-1][2]:
        batch = scanner.scan(it, limit, None, thread_after)
        batches.append((batch.rows, batch.fallback, batch.exhausted, pl.DataFrame(batch)))
    return batches


def _same_batches(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x[:3] == y[:3] and x[3].equals(y[3])


def test_long_batches_are_the_same_with_the_writer_thread() -> None:
    """Batches longer than the ring of held records (2,048), cut at several limits, with
    records handed back throughout: the writer thread and the puller alone write the same
    rows and hand back the same records, in row order."""
    records = _mixed(9_000)
    for limit in (1, 700, 4_096, 10_000):
        inline = _batches(records, limit, _INLINE)
        _same_batches(inline, _batches(records, limit, _THREADED))
        _same_batches(inline, _batches(records, limit, 512))
    rows, fallback, _, _ = _batches(records, 10_000, 512)[0]
    kinds = Counter(kind for _, kind, _, _ in fallback)
    assert rows == 9_000 and kinds["record"] > 1_500 and kinds["payload"] > 500
    assert [row for row, *_ in fallback] == sorted(row for row, *_ in fallback)


def _failing(records: list[dict[str, Any]], at: int, error: BaseException):
    yield from records[:at]
    raise error


def test_an_iterator_failing_midway_keeps_the_rows_before_it() -> None:
    records = _mixed(5_000)
    for thread_after in (_INLINE, _THREADED):
        batch = scanner.scan(_failing(records, 3_001, RuntimeError("chunk 3")), 10_000, None,
                             thread_after)  # fmt: skip
        assert str(batch.error) == "chunk 3"
        got = (batch.rows, batch.fallback, batch.exhausted, pl.DataFrame(batch))
        _same_batches([got], _batches(records[:3_001], 10_000, _INLINE))
        assert got[0] == 3_001


def test_a_failing_progress_callback_or_a_foreign_record_raises() -> None:
    """The error stops the scan at once; the writer thread is stopped and every held
    record let go (no crash, no leak of the batch)."""

    def progress(header: int) -> None:
        if header >= 2_000:
            raise KeyboardInterrupt

    records = _mixed(5_000)
    for thread_after in (_INLINE, _THREADED):
        with pytest.raises(KeyboardInterrupt):
            scanner.scan(iter(records), 10_000, progress, thread_after)
        foreign = [*records[:2_500], ("not", "a", "record")]
        with pytest.raises(TypeError, match="records_json"):
            scanner.scan(iter(foreign), 10_000, None, thread_after)
    held = records[100]
    before = sys.getrefcount(held)
    with pytest.raises(KeyboardInterrupt):
        scanner.scan(iter(records), 10_000, progress, _THREADED)
    assert sys.getrefcount(held) == before


# --- generated records ----------------------------------------------------------

_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12
) | st.sampled_from(["", "-", "0x0", "%%1537\r\n\t%%1538", "S-1-5-18", '"', "\\"])
_SCALAR = st.one_of(
    _TEXT,
    st.integers(-(2**70), 2**70),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
_KEY = st.sampled_from(["a", "Data", "#attributes", "#text", "Name", "ProcessID"]) | _TEXT
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEY, inner, max_size=4),
    max_leaves=8,
)
_OPT_INT = st.none() | st.integers(-(2**64), 2**64) | st.sampled_from(["7", 1.0])
_OPT_TEXT = st.none() | _TEXT | st.integers(0, 9)
_ATTRS = st.fixed_dictionaries(
    {},
    optional={
        "Name": _OPT_TEXT,
        "Guid": _OPT_TEXT | st.sampled_from(["{54849625-5478-4994-a5ba-3e3b0328c30d}"]),
        "EventSourceName": _OPT_TEXT,
        "SystemTime": _OPT_TEXT,
        "UserID": _OPT_TEXT,
        "Qualifiers": _OPT_INT,
        "ProcessID": _OPT_INT,
        "ThreadID": _OPT_INT,
        "xmlns": _TEXT,
    },
)
_ELEMENT = st.none() | st.fixed_dictionaries(
    {}, optional={"#attributes": _ATTRS | st.none(), "#text": _OPT_INT}
)
_SYSTEM = st.fixed_dictionaries(
    {},
    optional={
        "Provider": _ELEMENT,
        "EventID": _OPT_INT | _ELEMENT,
        "Version": _OPT_INT,
        "Level": _OPT_INT,
        "Task": _OPT_INT,
        "Opcode": _OPT_INT,
        "Keywords": _OPT_TEXT | st.sampled_from(["0x8020000000000000", " 0xFF ", "0x", "1_0"]),
        "TimeCreated": _ELEMENT,
        "EventRecordID": _OPT_INT,
        "Execution": _ELEMENT,
        "Channel": _OPT_TEXT,
        "Computer": _OPT_TEXT,
        "Security": _ELEMENT,
        "Correlation": _VALUE,
    },
)
_SECTIONS = st.fixed_dictionaries(
    {},
    optional={
        "EventData": st.none() | st.dictionaries(_KEY, _VALUE, max_size=6),
        "UserData": st.none()
        | st.dictionaries(_KEY, st.dictionaries(_KEY, _VALUE, max_size=4) | _SCALAR, max_size=2),
        "ProcessingErrorData": _VALUE,
    },
)


# Header ids from 2**63 on do not fit the column: the scanner hands such records back.
_HEADER_ID = st.integers(0, 10**7) | st.integers(0, 2**64 - 1)
# Half the records are an ordinary System with one field drawn anew, so that many are written
# by the scanner and compared field by field (from _SYSTEM alone, two in three are handed back).
_ANY_SYSTEM = _SYSTEM | st.builds(
    lambda changes: {**ORDINARY_SYSTEM, **dict(list(changes.items())[:1])}, _SYSTEM
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_ANY_SYSTEM, _SECTIONS, _HEADER_ID), min_size=1, max_size=6))
def test_generated_records_are_written_as_the_reference_writes_them(records) -> None:
    _check([_record(system, sections, header) for system, sections, header in records])


@pytest.fixture(scope="module")
def real_records() -> list[dict[str, Any]]:
    root = corpus_root()
    if not root.is_dir():
        pytest.skip(f"public .evtx corpus not found at {root} (set LMTRACE_CORPUS)")
    picked: list[dict[str, Any]] = []
    for path in _corpus_files()[::9]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            records = evtx.PyEvtxParser(str(path), skip_errors=True).records_json()
            picked.extend(itertools.islice(records, 5))
    return picked


_EDIT = st.sampled_from(["cut", "drop", "insert", "repeat"])
_PIECE = st.sampled_from([*'"{}[],:\\0-e.', "\x01", "null", '"a":1,', "é", "\\u00"])


@pytest.mark.corpus
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_altered_real_records_are_written_as_the_reference_or_handed_back(
    real_records: list[dict[str, Any]], data: st.DataObject
) -> None:
    record = dict(data.draw(st.sampled_from(real_records)))
    text = record["data"]
    at = data.draw(st.integers(0, len(text)))
    edit = data.draw(_EDIT)
    if edit == "cut":
        text = text[:at]
    elif edit == "drop":
        text = text[:at] + text[at + 1 :]
    elif edit == "insert":
        text = text[:at] + data.draw(_PIECE) + text[at:]
    else:
        size = data.draw(st.integers(1, 40))
        text = text[:at] + text[at : at + size] + text[at:]
    record["data"] = text
    _check([record])


def test_an_iterator_that_reuses_its_dict_is_read_safely() -> None:
    """Rows are written and handed back after later records are pulled: a record's values
    must stay alive even when the iterator puts new ones into the same dict."""
    records = _mixed(3_000)

    def reusing():
        shared: dict[str, Any] = {}
        for record in records:
            shared["event_record_id"] = record["event_record_id"]
            shared["data"] = "".join(record["data"])  # a fresh string each time
            yield shared

    for thread_after in (_INLINE, _THREADED):
        batch = scanner.scan(reusing(), 10_000, None, thread_after)
        got = (batch.rows, batch.fallback, batch.exhausted, pl.DataFrame(batch))
        _same_batches([got], _batches(records, 10_000, _INLINE))
