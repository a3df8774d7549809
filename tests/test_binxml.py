"""parsers/binxml.py: value encoders, names and templates, checked against Windows' bytes.

The name hash and the common-string buckets are checked against every name
Windows stored in the public corpus; value layouts against the documented
Windows structures (SID, GUID, FILETIME, SYSTEMTIME). That the encoded
templates and instances decode is shown by tests/test_evtx_writer.py, where
three independent readers read whole files.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from parsers.binxml import (
    ENCODERS,
    FRAGMENT_HEADER,
    STRING_BUCKETS,
    TEMPLATE_BUCKETS,
    Element,
    NameTable,
    Sub,
    Token,
    Typed,
    ValueType,
    encode_substitutions,
    encode_template,
    encode_value,
    infer_type,
    name_hash,
    template_bucket,
    template_guid,
)
from parsers.evtx_layout import CHUNK_HEADER_FIELDS_SIZE, CHUNK_SIZE, FILE_HEADER_SIZE, scan_layout


def _windows_chunks(corpus_dir: Path, manifest: list[dict[str, str]]) -> Iterator[bytes]:
    """First chunk of each clean corpus file whose header checksum holds."""
    for row in manifest:
        if row["condition"] != "clean":
            continue
        path = corpus_dir / row["file"]
        layout = scan_layout(path, checksums=True)
        if layout.chunks and layout.chunks[0].header_crc_ok:
            with path.open("rb") as f:
                f.seek(FILE_HEADER_SIZE)
                yield f.read(CHUNK_SIZE)


def _chain(chunk: bytes, table_at: int, buckets: int) -> Iterator[tuple[int, int]]:
    """(bucket, offset) of every entry reachable from a chunk's offset table."""
    for bucket in range(buckets):
        offset, seen = struct.unpack_from("<I", chunk, table_at + 4 * bucket)[0], 0
        while offset and seen < 1000 and offset + 24 <= len(chunk):
            yield bucket, offset
            offset, seen = struct.unpack_from("<I", chunk, offset)[0], seen + 1


@pytest.mark.corpus
def test_name_hash_and_bucket_match_every_name_windows_stored(
    corpus_dir: Path, manifest: list[dict[str, str]]
) -> None:
    checked = 0
    for chunk in _windows_chunks(corpus_dir, manifest):
        for bucket, offset in _chain(chunk, CHUNK_HEADER_FIELDS_SIZE, STRING_BUCKETS):
            _, stored_hash, count = struct.unpack_from("<IHH", chunk, offset)
            name = chunk[offset + 8 : offset + 8 + 2 * count].decode("utf-16-le")
            assert name_hash(name) == stored_hash, name
            assert stored_hash % STRING_BUCKETS == bucket, name
            checked += 1
    assert checked > 1000


@pytest.mark.corpus
def test_template_bucket_matches_most_templates_windows_stored(
    corpus_dir: Path, manifest: list[dict[str, str]]
) -> None:
    """Readers walk every bucket, so this only has to look like Windows, and mostly does."""
    table_at = CHUNK_HEADER_FIELDS_SIZE + 4 * STRING_BUCKETS
    hits = total = 0
    for chunk in _windows_chunks(corpus_dir, manifest):
        for bucket, offset in _chain(chunk, table_at, TEMPLATE_BUCKETS):
            guid = uuid.UUID(bytes_le=chunk[offset + 4 : offset + 20])
            hits += template_bucket(guid) == bucket
            total += 1
    assert total > 500 and hits / total > 0.75


def test_name_table_stores_a_name_once_then_refers_to_it() -> None:
    names = NameTable()
    first = names.reference("EventData", 1000)
    h = name_hash("EventData")
    assert first[:4] == struct.pack("<I", 1004)  # points just past itself: inline
    assert first[4:] == struct.pack("<IHH", 0, h, 9) + "EventData\x00".encode("utf-16-le")
    assert names.reference("EventData", 5000) == struct.pack("<I", 1004)
    assert names.buckets[h % STRING_BUCKETS] == 1004


def test_names_in_one_bucket_chain_to_the_previous_head() -> None:
    names = NameTable()
    # Find two names sharing a bucket, whatever the hash gives.
    pool = [f"N{i}" for i in range(200)]
    first = pool[0]
    second = next(n for n in pool[1:] if name_hash(n) % 64 == name_hash(first) % 64)
    names.reference(first, 100)
    inline = names.reference(second, 300)
    assert struct.unpack_from("<I", inline, 4)[0] == 104  # its "next" is the older name
    assert names.buckets[name_hash(second) % 64] == 304


def test_template_reuses_names_already_in_the_chunk() -> None:
    root = Element(
        "Event",
        (("xmlns", "urn:x"),),
        (Element("Data", (("Name", "A"),), (Sub(0, ValueType.STRING),)),),
    )
    guid = template_guid("t")
    names = NameTable()
    first = encode_template(root, guid, 600, 0, names)
    again = encode_template(root, guid, 5000, 600, names)
    assert "Event".encode("utf-16-le") in first
    assert "Event".encode("utf-16-le") not in again
    for definition, next_offset in ((first, 0), (again, 600)):
        assert struct.unpack_from("<I", definition)[0] == next_offset
        assert uuid.UUID(bytes_le=definition[4:20]) == guid
        assert struct.unpack_from("<I", definition, 20)[0] == len(definition) - 24
        assert definition[24:28] == FRAGMENT_HEADER
        assert definition[-1] == Token.EOF


def test_template_guid_is_stable_and_distinguishes_layouts() -> None:
    assert template_guid(("a", 1)) == template_guid(("a", 1))
    assert template_guid(("a", 1)) != template_guid(("a", 2))


def test_substitution_array_layout() -> None:
    data = encode_substitutions([(ValueType.UINT8, b"\x07"), (ValueType.STRING, b"a\x00b\x00")])
    assert data == struct.pack("<IHBxHBx", 2, 1, 0x04, 4, 0x01) + b"\x07a\x00b\x00"
    with pytest.raises(ValueError):
        encode_substitutions([(ValueType.BINARY, bytes(70000))])


def test_sid_uses_the_windows_binary_layout() -> None:
    # revision 1, 1 sub-authority, authority 5 (big-endian, 6 bytes), 18 little-endian
    assert encode_value(ValueType.SID, "S-1-5-18") == bytes.fromhex("010100000000000512000000")
    assert encode_value(ValueType.SID, "S-1-0-0") == bytes.fromhex("010100000000000000000000")
    with pytest.raises(ValueError):
        encode_value(ValueType.SID, "S-1-x")


def test_guid_uses_the_windows_mixed_endian_layout() -> None:
    data = encode_value(ValueType.GUID, "{00112233-4455-6677-8899-aabbccddeeff}")
    assert data == bytes.fromhex("33221100554477668899aabbccddeeff")
    assert encode_value(ValueType.GUID, uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")) == data


def test_filetime_counts_100ns_since_1601() -> None:
    unix_epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert encode_value(ValueType.FILETIME, unix_epoch) == struct.pack("<Q", 116444736000000000)
    later = unix_epoch + timedelta(seconds=1, microseconds=7)
    assert encode_value(ValueType.FILETIME, later) == struct.pack("<Q", 116444736010000070)
    with pytest.raises(ValueError):
        encode_value(ValueType.FILETIME, datetime(1970, 1, 1))  # naive: refused


def test_systemtime_fields_and_weekday() -> None:
    tuesday = datetime(2024, 3, 5, 8, 9, 10, 123999, tzinfo=timezone.utc)
    fields = struct.unpack("<8H", encode_value(ValueType.SYSTEMTIME, tuesday))
    assert fields == (2024, 3, 2, 5, 8, 9, 10, 123)


@pytest.mark.parametrize(
    ("vtype", "value", "size"),
    [
        (ValueType.INT8, -128, 1),
        (ValueType.UINT8, 255, 1),
        (ValueType.INT16, -32768, 2),
        (ValueType.UINT16, 65535, 2),
        (ValueType.INT32, -(2**31), 4),
        (ValueType.UINT32, 2**32 - 1, 4),
        (ValueType.INT64, -(2**63), 8),
        (ValueType.UINT64, 2**64 - 1, 8),
        (ValueType.HEXINT32, 2**32 - 1, 4),
        (ValueType.HEXINT64, 2**64 - 1, 8),
        (ValueType.SIZE_T, 2**64 - 1, 8),
        (ValueType.REAL32, 1.5, 4),
        (ValueType.REAL64, 1.5, 8),
        (ValueType.BOOL, True, 4),
    ],
)
def test_fixed_width_types_at_their_limits(vtype: ValueType, value: object, size: int) -> None:
    assert len(encode_value(vtype, value)) == size
    if isinstance(value, int) and not isinstance(value, bool):
        over = value + 1 if value > 0 else value - 1
        with pytest.raises(ValueError, match=vtype.name):
            encode_value(vtype, over)


def test_strings() -> None:
    assert encode_value(ValueType.STRING, "a\U0001f600") == "a\U0001f600".encode("utf-16-le")
    assert len(encode_value(ValueType.STRING, "\U0001f600")) == 4  # one surrogate pair
    assert encode_value(ValueType.ANSI_STRING, "abc") == b"abc"
    with pytest.raises(ValueError):
        encode_value(ValueType.ANSI_STRING, "é")
    with pytest.raises(ValueError):
        encode_value(ValueType.STRING, 5)


def test_every_value_type_has_an_encoder() -> None:
    assert set(ENCODERS) == set(ValueType)


@pytest.mark.parametrize(
    ("value", "vtype"),
    [
        ("x", ValueType.STRING),
        (True, ValueType.BOOL),
        (0, ValueType.UINT32),
        (2**32 - 1, ValueType.UINT32),
        (2**32, ValueType.UINT64),
        (-1, ValueType.INT64),
        (b"\x00", ValueType.BINARY),
        (uuid.UUID(int=1), ValueType.GUID),
        (datetime(2024, 1, 1, tzinfo=timezone.utc), ValueType.FILETIME),
        (Typed(ValueType.HEXINT32, 3), ValueType.HEXINT32),
    ],
)
def test_default_types(value: object, vtype: ValueType) -> None:
    assert infer_type(value).vtype == vtype


def test_values_without_a_default_type_need_typed() -> None:
    with pytest.raises(ValueError, match="Typed"):
        infer_type(1.5)
