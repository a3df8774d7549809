"""Binary XML encoding for EVTX records: tokens, value types, names, templates.

No public .evtx bundle shows our incident, so lmtrace writes its own files and
they must be the real format, not a look-alike: every independent reader
(pyevtx-rs, python-evtx, libevtx) has to decode them as it decodes Windows'
own logs. This module holds the encoding half of the binary XML described in
libyal's "Windows XML Event Log (EVTX)" documentation and [MS-EVEN6]:

* :class:`Token` and :class:`ValueType` are the format's codes;
* one encoder per value type turns a Python value into the bytes of a
  substitution value (:data:`ENCODERS`, :func:`encode_value`);
* :class:`Element` / :class:`Sub` describe a template; :func:`encode_template`
  turns one into a template definition placed at a given chunk offset, with its
  element and attribute names either inline or referenced through the chunk's
  common-string table (:class:`NameTable`);
* :func:`encode_substitutions` builds the value array of a template instance.

Everything chunk-relative (name and template offsets) is passed in by the
caller, so this module has no state of its own; evtx_writer.py owns chunks.
"""

from __future__ import annotations

import functools
import itertools
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import IntEnum

FRAGMENT_HEADER = b"\x0f\x01\x01\x00"
"""Fragment header token, major 1, minor 1, flags 0: opens every record and template."""

NO_DEPENDENCY = 0xFFFF
"""Dependency identifier of an element that does not depend on a substitution."""

STRING_BUCKETS = 64
TEMPLATE_BUCKETS = 32


class ValueType(IntEnum):
    """Binary XML value types (the type byte of substitutions and value descriptors)."""

    NULL = 0x00
    STRING = 0x01
    ANSI_STRING = 0x02
    INT8 = 0x03
    UINT8 = 0x04
    INT16 = 0x05
    UINT16 = 0x06
    INT32 = 0x07
    UINT32 = 0x08
    INT64 = 0x09
    UINT64 = 0x0A
    REAL32 = 0x0B
    REAL64 = 0x0C
    BOOL = 0x0D
    BINARY = 0x0E
    GUID = 0x0F
    SIZE_T = 0x10
    FILETIME = 0x11
    SYSTEMTIME = 0x12
    SID = 0x13
    HEXINT32 = 0x14
    HEXINT64 = 0x15
    BINXML = 0x21


class Token(IntEnum):
    """Binary XML tokens. ``MORE`` (0x40) is or-ed into some of them: "another follows"."""

    EOF = 0x00
    OPEN_START_ELEMENT = 0x01
    CLOSE_START_ELEMENT = 0x02
    CLOSE_EMPTY_ELEMENT = 0x03
    END_ELEMENT = 0x04
    VALUE = 0x05
    ATTRIBUTE = 0x06
    CDATA_SECTION = 0x07
    CHAR_REF = 0x08
    ENTITY_REF = 0x09
    PI_TARGET = 0x0A
    PI_DATA = 0x0B
    TEMPLATE_INSTANCE = 0x0C
    NORMAL_SUBSTITUTION = 0x0D
    OPTIONAL_SUBSTITUTION = 0x0E
    FRAGMENT_HEADER = 0x0F
    MORE = 0x40


@dataclass(frozen=True)
class Typed:
    """A payload value with an explicit binary XML type (e.g. ``Typed(ValueType.HEXINT32, 5)``)."""

    vtype: ValueType
    value: object


# --- value encoders -----------------------------------------------------------------------

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=timezone.utc)
_U8, _I8 = struct.Struct("<B"), struct.Struct("<b")
_U16, _I16 = struct.Struct("<H"), struct.Struct("<h")
_U32, _I32 = struct.Struct("<I"), struct.Struct("<i")
_U64, _I64 = struct.Struct("<Q"), struct.Struct("<q")
_F32, _F64 = struct.Struct("<f"), struct.Struct("<d")
_SYSTEMTIME = struct.Struct("<8H")


def _packer(s: struct.Struct, name: str) -> Callable[[object], bytes]:
    """An encoder that packs one number and names the type when it does not fit."""

    def encode(value: object) -> bytes:
        try:
            return s.pack(value)
        except struct.error as e:
            raise ValueError(f"{value!r} does not fit binary XML type {name}: {e}") from None

    return encode


def encode_string(value: object) -> bytes:
    """UTF-16LE without terminator; characters outside the BMP become surrogate pairs."""
    if not isinstance(value, str):
        raise ValueError(f"STRING needs str, got {type(value).__name__}")
    return value.encode("utf-16-le")


def encode_ansi_string(value: object) -> bytes:
    """Single-byte text; only ASCII, because each reader assumes its own code page."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError(f"ANSI_STRING needs str, got {type(value).__name__}")
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("ANSI_STRING holds ASCII only (readers disagree on code pages)") from None


def encode_bool(value: object) -> bytes:
    """A 32-bit 0 or 1."""
    return _U32.pack(1 if value else 0)


def encode_binary(value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ValueError(f"BINARY needs bytes, got {type(value).__name__}")
    return bytes(value)


def encode_guid(value: object) -> bytes:
    """A GUID in its mixed-endian Windows layout; accepts UUID or "{...}" text."""
    if isinstance(value, str):
        value = uuid.UUID(value.strip("{}"))
    if not isinstance(value, uuid.UUID):
        raise ValueError(f"GUID needs uuid.UUID or str, got {type(value).__name__}")
    return value.bytes_le


def filetime(value: datetime) -> int:
    """100-ns intervals since 1601-01-01 UTC; naive datetimes are refused (times are UTC)."""
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    delta = value - _FILETIME_EPOCH
    return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


def encode_filetime(value: object) -> bytes:
    """A FILETIME from an aware datetime (microsecond precision) or a raw integer."""
    if isinstance(value, datetime):
        return _U64.pack(filetime(value))
    return _pack_u64(value)


def encode_systemtime(value: object) -> bytes:
    """SYSTEMTIME (year, month, weekday, day, h, m, s, ms) from an aware datetime, in UTC."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError("SYSTEMTIME needs a timezone-aware datetime")
    t = value.astimezone(timezone.utc)
    weekday = (t.weekday() + 1) % 7  # Windows counts from Sunday = 0
    return _SYSTEMTIME.pack(
        t.year, t.month, weekday, t.day, t.hour, t.minute, t.second, t.microsecond // 1000
    )


def encode_sid(value: object) -> bytes:
    """A binary SID from its "S-1-5-21-..." text form."""
    if not isinstance(value, str):
        raise ValueError(f"SID needs str, got {type(value).__name__}")
    parts = value.split("-")
    if len(parts) < 3 or parts[0].upper() != "S":
        raise ValueError(f"not a SID: {value!r}")
    try:
        revision, authority = int(parts[1]), int(parts[2], 0)
        subs = [int(p) for p in parts[3:]]
        return (
            bytes((revision, len(subs)))
            + authority.to_bytes(6, "big")
            + b"".join(_U32.pack(s) for s in subs)
        )
    except (ValueError, OverflowError, struct.error):
        raise ValueError(f"not a SID: {value!r}") from None


def encode_null(value: object) -> bytes:
    return b""


def encode_binxml(value: object) -> bytes:
    """An already encoded binary XML fragment, kept as given."""
    return encode_binary(value)


_pack_u64 = _packer(_U64, "UINT64")

ENCODERS: dict[ValueType, Callable[[object], bytes]] = {
    ValueType.NULL: encode_null,
    ValueType.STRING: encode_string,
    ValueType.ANSI_STRING: encode_ansi_string,
    ValueType.INT8: _packer(_I8, "INT8"),
    ValueType.UINT8: _packer(_U8, "UINT8"),
    ValueType.INT16: _packer(_I16, "INT16"),
    ValueType.UINT16: _packer(_U16, "UINT16"),
    ValueType.INT32: _packer(_I32, "INT32"),
    ValueType.UINT32: _packer(_U32, "UINT32"),
    ValueType.INT64: _packer(_I64, "INT64"),
    ValueType.UINT64: _pack_u64,
    ValueType.REAL32: _packer(_F32, "REAL32"),
    ValueType.REAL64: _packer(_F64, "REAL64"),
    ValueType.BOOL: encode_bool,
    ValueType.BINARY: encode_binary,
    ValueType.GUID: encode_guid,
    ValueType.SIZE_T: _packer(_U64, "SIZE_T"),
    ValueType.FILETIME: encode_filetime,
    ValueType.SYSTEMTIME: encode_systemtime,
    ValueType.SID: encode_sid,
    ValueType.HEXINT32: _packer(_U32, "HEXINT32"),
    ValueType.HEXINT64: _packer(_U64, "HEXINT64"),
    ValueType.BINXML: encode_binxml,
}
"""One encoder per value type: value -> the bytes of a substitution value."""


def encode_value(vtype: ValueType, value: object) -> bytes:
    """Encode one substitution value; ValueError names the type when the value does not fit."""
    return ENCODERS[vtype](value)


def infer_type(value: object) -> Typed:
    """The default type of a payload value (Typed passes through).

    str -> STRING, bool -> BOOL, int -> UINT32 (UINT64 past 32 bits, INT64 when
    negative), bytes -> BINARY, UUID -> GUID, datetime -> FILETIME.
    """
    if isinstance(value, Typed):
        return value
    if isinstance(value, str):
        return Typed(ValueType.STRING, value)
    if isinstance(value, bool):
        return Typed(ValueType.BOOL, value)
    if isinstance(value, int):
        if value < 0:
            return Typed(ValueType.INT64, value)
        return Typed(ValueType.UINT32 if value <= 0xFFFFFFFF else ValueType.UINT64, value)
    if isinstance(value, (bytes, bytearray)):
        return Typed(ValueType.BINARY, bytes(value))
    if isinstance(value, uuid.UUID):
        return Typed(ValueType.GUID, value)
    if isinstance(value, datetime):
        return Typed(ValueType.FILETIME, value)
    raise ValueError(f"no binary XML type for {type(value).__name__}; wrap it in Typed")


# --- names and the common-string table ----------------------------------------------------


def _hash_units(data: bytes) -> int:
    """[MS-EVEN6]'s hash over 16-bit little-endian units: h = h * 65599 + unit (32 bits)."""
    h = 0
    for (unit,) in struct.iter_unpack("<H", data):
        h = (h * 65599 + unit) & 0xFFFFFFFF
    return h


def name_hash(name: str) -> int:
    """The 16-bit hash stored with a name; ``hash % 64`` is its common-string bucket."""
    return _hash_units(name.encode("utf-16-le")) & 0xFFFF


def template_bucket(guid: uuid.UUID) -> int:
    """The template-table bucket Windows uses: the same hash over the GUID's bytes, mod 32."""
    return _hash_units(guid.bytes_le) % TEMPLATE_BUCKETS


@dataclass
class NameTable:
    """The names already stored in one chunk, and the chunk's 64 string bucket heads.

    A name is written inline the first time a chunk uses it and referenced by
    offset afterwards. New names go to the head of their hash bucket (their
    "next" field points at the previous head), so nothing already written is
    ever patched. :meth:`copy` lets a caller try a template and drop it when
    the record does not fit the chunk.
    """

    offsets: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * STRING_BUCKETS)

    def copy(self) -> NameTable:
        return NameTable(dict(self.offsets), list(self.buckets))

    def reference(self, name: str, at: int) -> bytes:
        """Bytes for a name reference placed at chunk offset ``at``: offset, then name if new."""
        known = self.offsets.get(name)
        if known is not None:
            return _U32.pack(known)
        start = at + 4
        h = name_hash(name)
        bucket = h % STRING_BUCKETS
        units = name.encode("utf-16-le")
        inline = (
            _U32.pack(self.buckets[bucket])
            + struct.pack("<HH", h, len(units) // 2)
            + units
            + b"\x00\x00"
        )
        self.offsets[name] = start
        self.buckets[bucket] = start
        return _U32.pack(start) + inline

    def pack(self) -> bytes:
        """The 256-byte common-string offset array of the chunk header."""
        return struct.pack(f"<{STRING_BUCKETS}I", *self.buckets)


# --- templates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sub:
    """A substitution slot: value ``index`` of the instance array, expected of type ``vtype``.

    ``optional`` slots use the optional-substitution token: readers drop the
    attribute or element when the instance gives a NULL value there, which is
    how Windows leaves out, say, EventID/@Qualifiers.
    """

    index: int
    vtype: ValueType
    optional: bool = False

    def encode(self) -> bytes:
        token = Token.OPTIONAL_SUBSTITUTION if self.optional else Token.NORMAL_SUBSTITUTION
        return struct.pack("<BHB", token, self.index, self.vtype)


@dataclass(frozen=True)
class Element:
    """One XML element of a template: literal attribute values or substitutions, and content."""

    name: str
    attributes: tuple[tuple[str, str | Sub], ...] = ()
    children: tuple[Element | str | Sub, ...] = ()


def _value_text(text: str, more: bool = False) -> bytes:
    units = text.encode("utf-16-le")
    token = Token.VALUE | (Token.MORE if more else 0)
    return struct.pack("<BBH", token, ValueType.STRING, len(units) // 2) + units


def _encode_element(out: bytearray, base: int, element: Element, names: NameTable) -> None:
    """Append ``element`` to ``out``, whose first byte sits at chunk offset ``base``."""
    token = Token.OPEN_START_ELEMENT | (Token.MORE if element.attributes else 0)
    out += struct.pack("<BH", token, NO_DEPENDENCY)
    size_at = len(out)
    out += b"\x00\x00\x00\x00"  # data size, patched below
    out += names.reference(element.name, base + len(out))
    if element.attributes:
        list_at = len(out)
        out += b"\x00\x00\x00\x00"  # attribute list size, patched below
        last = len(element.attributes) - 1
        for i, (attr_name, value) in enumerate(element.attributes):
            out.append(Token.ATTRIBUTE | (Token.MORE if i < last else 0))
            out += names.reference(attr_name, base + len(out))
            out += value.encode() if isinstance(value, Sub) else _value_text(value)
        struct.pack_into("<I", out, list_at, len(out) - list_at - 4)
    if element.children:
        out.append(Token.CLOSE_START_ELEMENT)
        for child in element.children:
            if isinstance(child, Element):
                _encode_element(out, base, child, names)
            elif isinstance(child, Sub):
                out += child.encode()
            else:
                out += _value_text(child)
        out.append(Token.END_ELEMENT)
    else:
        out.append(Token.CLOSE_EMPTY_ELEMENT)
    struct.pack_into("<I", out, size_at, len(out) - size_at - 4)


def template_guid(key: object) -> uuid.UUID:
    """A stable GUID for a template layout, so equal inputs give byte-identical files."""
    return uuid.uuid5(uuid.NAMESPACE_OID, repr(key))


def encode_template(
    root: Element, guid: uuid.UUID, offset: int, next_offset: int, names: NameTable
) -> bytes:
    """A template definition placed at chunk ``offset``: header, fragment, element, EOF.

    ``next_offset`` chains it to the previous template in its bucket of the
    chunk's template table (0 for none). Names are resolved through ``names``,
    which is updated with the names this definition stores inline.
    """
    out = bytearray(_U32.pack(next_offset) + guid.bytes_le + b"\x00\x00\x00\x00")
    out += FRAGMENT_HEADER
    _encode_element(out, offset, root, names)
    out.append(Token.EOF)
    struct.pack_into("<I", out, 20, len(out) - 24)
    return bytes(out)


def template_instance(template_id: int, definition_offset: int) -> bytes:
    """The 10-byte template instance token that points at a definition in the chunk."""
    return struct.pack("<BBII", Token.TEMPLATE_INSTANCE, 1, template_id, definition_offset)


@functools.lru_cache(maxsize=256)
def _descriptor_struct(count: int) -> struct.Struct:
    """Value count plus ``count`` (size, type, 0) descriptors, packed in one call."""
    return struct.Struct("<I" + "HBx" * count)


def encode_substitutions(values: Sequence[tuple[int, bytes]]) -> bytes:
    """The instance data: value count, (size, type) descriptors, then the values' bytes."""
    if not values:
        return b"\x00\x00\x00\x00"
    types, datas = zip(*values, strict=True)
    sizes = list(map(len, datas))
    if max(sizes) > 0xFFFF:
        raise ValueError(f"a substitution value is {max(sizes)} bytes; the limit is 65535")
    descriptors = itertools.chain.from_iterable(zip(sizes, types, strict=True))
    return _descriptor_struct(len(sizes)).pack(len(sizes), *descriptors) + b"".join(datas)
