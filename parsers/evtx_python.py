"""The python-evtx engine: every chunk slot, every record, each in its own try.

Problem: python-evtx stops at the file header's chunk count (so it misses the
valid chunks of a dirty, unclosed log) and renders values its own way (``True``,
base64 binary, rounded timestamps, padded hex), so its XML text cannot be
compared with pyevtx-rs output. This module walks python-evtx's binary-XML node
tree itself, for every chunk slot the layout scan found, and builds the same
JSON shape that pyevtx-rs produces for a record, with values rendered as
pyevtx-rs renders them. From there both engines share one code path
(parsers/evtx_payload.py and the row builder in parsers/evtx_reader.py).
"""

from __future__ import annotations

import mmap
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from Evtx import Nodes as nodes
from Evtx.Evtx import ChunkHeader

from parsers.evtx_layout import CHUNK_SIZE, ChunkInfo, FileLayout
from parsers.evtx_payload import PAYLOAD_SECTIONS, put_unique
from parsers.model import ReadIssue

_EPOCH_1601 = datetime(1601, 1, 1, tzinfo=timezone.utc)
_ATTRS = "#attributes"
_TEXT = "#text"


def filetime_text(filetime: int) -> str:
    """A FILETIME as pyevtx-rs renders it: ISO 8601, microseconds truncated, ``Z``."""
    ts = _EPOCH_1601 + timedelta(microseconds=filetime // 10)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _f32_text(raw: bytes) -> str:
    """The shortest text that round-trips as a 32-bit float (as Rust prints an f32)."""
    (value,) = struct.unpack("<f", raw)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == value:
            return repr(float(text))
    return repr(value)


def _raw(node: Any, size: int) -> bytes:
    return bytes(node._buf[node.offset() : node.offset() + size])


def _value(node: Any) -> Any:
    """A variant value as a Python value shaped like pyevtx-rs's JSON for it."""
    kind = type(node)
    if kind is nodes.NullTypeNode:
        return None
    if kind is nodes.WstringTypeNode:
        return node.string()
    if kind is nodes.StringTypeNode:
        size = node._length if node._length is not None else node.string_length()
        start = 0 if node._length is not None else 2
        raw = _raw(node, start + size)[start:]
        return raw.decode("cp1252", errors="replace").rstrip("\x00")
    if kind in _INTS:
        return int(node.string())
    if kind is nodes.FloatTypeNode:
        return float(_f32_text(_raw(node, 4)))
    if kind is nodes.DoubleTypeNode:
        return node.double()
    if kind is nodes.BooleanTypeNode:
        return bool(struct.unpack("<i", _raw(node, 4))[0])
    if kind is nodes.BinaryTypeNode:
        return node.binary().hex().upper()
    if kind is nodes.GuidTypeNode:
        return str(uuid.UUID(bytes_le=_raw(node, 16))).upper()
    if kind is nodes.SizeTypeNode:
        return f"0x{node.num():x}"
    if kind is nodes.FiletimeTypeNode:
        return filetime_text(struct.unpack("<Q", _raw(node, 8))[0])
    if kind is nodes.SystemtimeTypeNode:
        return node.systemtime().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if kind is nodes.SIDTypeNode:
        return node.string()
    if kind is nodes.Hex32TypeNode:
        return f"0x{struct.unpack('<I', _raw(node, 4))[0]:x}"
    if kind is nodes.Hex64TypeNode:
        return f"0x{struct.unpack('<Q', _raw(node, 8))[0]:x}"
    if kind is nodes.WstringArrayTypeNode:
        parts = bytes(node.binary()).decode("utf-16-le", errors="replace").split("\x00")
        return parts[:-1] if parts and parts[-1] == "" else parts  # each string is terminated
    return node.string()


_INTS = (
    nodes.SignedByteTypeNode,
    nodes.UnsignedByteTypeNode,
    nodes.SignedWordTypeNode,
    nodes.UnsignedWordTypeNode,
    nodes.SignedDwordTypeNode,
    nodes.UnsignedDwordTypeNode,
    nodes.SignedQwordTypeNode,
    nodes.UnsignedQwordTypeNode,
)

_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


@dataclass
class _Elem:
    """One XML element: the minimum needed to rebuild pyevtx-rs's JSON shape."""

    tag: str
    attrs: list[tuple[str, Any]]
    children: list[_Elem]
    text: list[Any]


def _pieces(node: Any, subs: list[Any], into: _Elem) -> None:
    """Add a content node's text or elements (from a substitution) to ``into``."""
    if isinstance(node, nodes.OpenStartElementNode):
        into.children.append(_build(node, subs))
    elif isinstance(node, nodes.ValueNode):
        into.text.append(_value(node.children()[0]))
    elif isinstance(node, nodes.NormalSubstitutionNode | nodes.ConditionalSubstitutionNode):
        sub = subs[node.index()]
        if isinstance(sub, nodes.BXmlTypeNode):
            into.children.extend(_root_elements(sub.root()))
        else:
            into.text.append(_value(sub))
    elif isinstance(node, nodes.CDataSectionNode):
        into.text.append(node.cdata())
    elif isinstance(node, nodes.EntityReferenceNode):
        name = node.entity_reference().strip("&;")
        into.text.append(_ENTITIES.get(name, f"&{name};"))
    elif isinstance(node, nodes.CharacterReferenceNode):
        into.text.append(chr(node.entity()))


def _build(node: Any, subs: list[Any]) -> _Elem:
    elem = _Elem(node.tag_name(), [], [], [])
    for child in node.children():
        if isinstance(child, nodes.AttributeNode):
            holder = _Elem("", [], [], [])
            _pieces(child.attribute_value(), subs, holder)
            elem.attrs.append((child.attribute_name().string(), _joined(holder.text)))
        else:
            _pieces(child, subs, elem)
    return elem


def _root_elements(root: Any) -> list[_Elem]:
    subs = root.substitutions()
    holder = _Elem("", [], [], [])
    for child in root.template().children():
        _pieces(child, subs, holder)
    return holder.children


def _joined(text: list[Any]) -> Any:
    """A single typed value stays typed (as pyevtx-rs keeps it); several become one string."""
    text = [t for t in text if t is not None and t != ""]
    if not text:  # pyevtx-rs renders an empty element as null
        return None
    if len(text) == 1:
        return text[0]
    return "".join(t if isinstance(t, str) else _scalar_text(t) for t in text)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def _add_child(out: dict[str, Any], key: str, value: Any) -> None:
    """pyevtx-rs repeats an element once per item of an array-typed value (an empty one: null)."""
    for item in (value or [None]) if isinstance(value, list) else [value]:
        put_unique(out, key, item)


def _json(elem: _Elem, skip_attr: str | None = None) -> Any:
    """pyevtx-rs's JSON for one element: scalar, null, or a dict of attributes/children/text."""
    attrs = {n: v for n, v in elem.attrs if v is not None and n != skip_attr}
    text = _joined(elem.text)
    if not attrs and not elem.children:
        return text
    out: dict[str, Any] = {}
    if attrs:
        out[_ATTRS] = attrs
    for child in elem.children:
        _add_child(out, child.tag, _json(child))
    if text is not None:
        out[_TEXT] = text
    return out


def _event_data_json(elem: _Elem) -> Any:
    """EventData as pyevtx-rs shapes it: named Data become keys, unnamed Data a #text list."""
    out: dict[str, Any] = {}
    unnamed: list[Any] = []
    for child in elem.children:
        name = dict(child.attrs).get("Name") if child.tag == "Data" else None
        if child.tag == "Data" and isinstance(name, str) and name:
            _add_child(out, name, _json(child, skip_attr="Name"))
        elif child.tag == "Data":
            if "Data" not in out:
                out["Data"] = {_TEXT: unnamed}
            value = _joined(child.text)
            # pyevtx-rs lists the strings of an array-typed unnamed Data one by one
            unnamed.extend(value if isinstance(value, list) else [value])
        else:
            _add_child(out, child.tag, _json(child))
    return out or None


@dataclass(frozen=True)
class PyRecord:
    """One record decoded by python-evtx, in pyevtx-rs's JSON shape."""

    header_id: int
    system: dict[str, Any]
    sections: list[tuple[str, Any]]
    chunk: int  # index of the chunk slot it was read from


def _record(record: Any, chunk: int) -> PyRecord:
    elems = _root_elements(record.root())
    event = next((e for e in elems if e.tag == "Event"), None)
    if event is None:
        raise ValueError("record has no Event element")
    system: dict[str, Any] = {}
    sections: list[tuple[str, Any]] = []
    for part in event.children:
        if part.tag == "System":
            system = _json(part) or {}
        elif part.tag == "EventData":
            sections.append((part.tag, _event_data_json(part)))
        elif part.tag in PAYLOAD_SECTIONS:
            sections.append((part.tag, _json(part)))
    return PyRecord(record.record_num(), system, sections, chunk)


def iter_records(
    path: Path,
    layout: FileLayout,
    only: set[int] | None = None,
    wanted: Callable[[int, int | None], bool] | None = None,
) -> Iterator[PyRecord | ReadIssue]:
    """Every record of every readable chunk slot (of the chunks ``only`` names, if given),
    in file order; a ReadIssue per failure. Records for which ``wanted(chunk index,
    header id)`` is false are passed over undecoded (decoding is where python-evtx
    spends its time).

    A chunk slot is tried when the layout finds it readable (complete, with a valid
    signature or records behind a damaged one); the caller counts the other slots
    from the layout. A record that fails is reported and
    skipped; when the chunk's record walk itself breaks, the rest of that chunk
    is reported as one issue.
    """
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        for info in layout.chunks:
            if not info.readable or (only is not None and info.index not in only):
                continue
            chunk, base, end = _chunk(buf, info, layout.size)
            records = chunk.records()
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except Exception as exc:  # python-evtx raises many types on bad bytes
                    yield ReadIssue(f"record walk stopped: {exc!r}", chunk=info.index)
                    break
                if record.offset() + record.size() > end:
                    break  # cut by the end of the file: the caller counts it as not read
                if wanted is not None and not wanted(info.index, _safe_id(record)):
                    continue
                try:
                    yield _record(record, info.index)
                except Exception as exc:
                    yield ReadIssue(
                        f"record could not be decoded: {exc!r}",
                        chunk=info.index,
                        record_id=_safe_id(record),
                        offset=base + record.offset(),
                    )


def _chunk(buf: mmap.mmap, info: ChunkInfo, size: int) -> tuple[Any, int, int]:
    """python-evtx's view of one chunk, what to add to its offsets to make them the
    file's, and the offset in that view where the file's bytes end.

    A chunk the end of the file cuts short is read from a copy padded with zero
    bytes to its full size: python-evtx reads every common string the chunk's header
    lists when it decodes the first record, also those of records past the cut, and
    without the padding that fails every record of the chunk. Records are decoded
    only where they end before the cut: the padding must not fill a record in."""
    if not info.truncated:
        return ChunkHeader(buf, info.offset), 0, info.offset + CHUNK_SIZE
    padded = buf[info.offset : info.offset + CHUNK_SIZE].ljust(CHUNK_SIZE, b"\x00")
    return ChunkHeader(padded, 0), info.offset, size - info.offset


def _safe_id(record: Any) -> int | None:
    try:
        return int(record.record_num())
    except Exception:
        return None
