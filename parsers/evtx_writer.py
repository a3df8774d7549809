"""Write genuine .evtx files: file header, 64 KiB chunks, templates, CRC32s, damage on request.

No public bundle shows a live migration cutting a VM off the network, so the
simulator writes its own evidence. Those files are only worth testing with if
every independent reader decodes them as it decodes Windows' own logs, so this
writer lays out what Windows lays out (libyal's "Windows XML Event Log (EVTX)"
description): a 4096-byte file header, 64 KiB chunks each with its
common-string and template tables, and records that are a template instance
with typed substitution values. One template is defined per distinct event
layout per chunk, inline in the first record that uses it; later records in
the chunk refer to it by offset.

The System element follows Windows' own template: Provider, EventID (with an
optional Qualifiers attribute), Version, Level, Task, Opcode, Keywords,
TimeCreated, EventRecordID, Correlation, Execution, Channel, Computer and
Security (optional UserID). Values that differ from event to event are
substitutions; provider, channel and computer are literal text of the
template, as Windows writes them.

Writing is streaming: one chunk is built in memory at a time, so memory stays
bounded whatever the file size. The same events always give the same bytes.

:class:`Damage` breaks a file in one named way (dirty header with chunks past
its count, truncated last chunk, bad chunk magic, wrong CRCs), so that reader
tests can check that what is broken is exactly what breaks.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import TracebackType

from parsers.binxml import (
    ENCODERS,
    FRAGMENT_HEADER,
    TEMPLATE_BUCKETS,
    Element,
    NameTable,
    Sub,
    Token,
    Typed,
    ValueType,
    encode_sid,
    encode_substitutions,
    encode_template,
    filetime,
    infer_type,
    template_bucket,
    template_guid,
    template_instance,
)
from parsers.evtx_layout import (
    CHUNK_HEADER_SIZE,
    CHUNK_SIZE,
    FILE_HEADER_SIZE,
    FLAG_DIRTY,
    RECORD_HEADER_SIZE,
    ChunkHeader,
    FileHeader,
    crc32,
    pack_record_header,
)

PayloadValue = str | int | bool | bytes | uuid.UUID | datetime | Typed
"""A payload value; plain values get a default type (:func:`parsers.binxml.infer_type`)."""

EVENT_NAMESPACE = "http://schemas.microsoft.com/win/2004/08/events/event"

_U8, _U16, _U32, _U64 = (struct.Struct(f) for f in ("<B", "<H", "<I", "<Q"))
_BAD_CHUNK_MAGIC = b"ElfChnX\x00"
_MAX_RECORD = CHUNK_SIZE - CHUNK_HEADER_SIZE
_CACHE_LIMIT = 65536  # encoded strings kept per writer before the cache is emptied


@dataclass(frozen=True)
class UserDataSpec:
    """A UserData payload: ``<UserData><element xmlns=namespace><field>value</field>...``."""

    element: str
    namespace: str | None
    fields: tuple[tuple[str, PayloadValue], ...]


@dataclass(frozen=True)
class EventSpec:
    """One event as the simulator means it; every field lands in the record's XML."""

    timestamp: datetime  # aware, UTC; System/TimeCreated/@SystemTime
    provider: str
    event_id: int
    channel: str
    computer: str
    provider_guid: str | None = None  # "{...}"
    level: int = 4
    task: int = 0
    opcode: int = 0
    keywords: int = 0x8000000000000000
    version: int = 0
    qualifiers: int | None = None
    process_id: int = 4
    thread_id: int = 8
    user_sid: str | None = None
    event_data: tuple[tuple[str, PayloadValue], ...] | None = None  # <Data Name="..">
    user_data: UserDataSpec | None = None


@dataclass(frozen=True)
class Damage:
    """What to break in the written file; chunk numbers count from 0 in file order.

    ``uncounted_chunks``: the last N complete chunks are left out of the file
    header's chunk count, last chunk and next record id, and the header is
    flagged dirty, as when Windows did not close the log. ``dirty`` sets the
    flag alone. ``truncate_bytes`` cuts that many bytes off the end of the file
    (into the last chunk). The other fields corrupt one part each while keeping
    every other checksum right.
    """

    dirty: bool = False
    uncounted_chunks: int = 0
    truncate_bytes: int = 0
    bad_chunk_magic: tuple[int, ...] = ()
    bad_file_header_crc: bool = False
    bad_chunk_header_crc: tuple[int, ...] = ()
    bad_records_crc: tuple[int, ...] = ()


@dataclass(frozen=True)
class WriteOptions:
    """How to write: deliberate damage, and a cap on records per chunk (to get many chunks)."""

    damage: Damage | None = None
    max_records_per_chunk: int | None = None


@dataclass(frozen=True)
class WriteStats:
    records: int
    chunks: int
    bytes: int


@dataclass(frozen=True)
class _Layout:
    """A template as used in any chunk: its tree, id and GUID, and its payload value types."""

    root: Element
    guid: uuid.UUID
    template_id: int
    bucket: int
    payload_types: tuple[ValueType, ...]


class _Chunk:
    """The chunk being filled: its records, names and templates so far."""

    def __init__(self) -> None:
        self.records = bytearray()
        self.names = NameTable()
        self.templates: dict[object, int] = {}
        self.template_buckets = [0] * TEMPLATE_BUCKETS
        self.first_id = 0
        self.last_id = 0
        self.last_record_offset = 0
        self.count = 0

    @property
    def free_offset(self) -> int:
        return CHUNK_HEADER_SIZE + len(self.records)


# System substitution slots, in Windows' order of its System template values.
_LEVEL, _OPCODE, _TASK, _EVENT_ID, _QUALIFIERS, _KEYWORDS, _TIME = range(7)
_ACTIVITY, _PID, _TID, _RECORD_ID, _VERSION, _USER, _RELATED = range(7, 14)
_PAYLOAD_START = 14
_NULL = (ValueType.NULL, b"")


def _system_element(event: EventSpec) -> Element:
    provider_attrs: tuple[tuple[str, str | Sub], ...] = (("Name", event.provider),)
    if event.provider_guid is not None:
        provider_attrs += (("Guid", event.provider_guid),)
    return Element(
        "System",
        children=(
            Element("Provider", provider_attrs),
            Element(
                "EventID",
                (("Qualifiers", Sub(_QUALIFIERS, ValueType.UINT16, optional=True)),),
                (Sub(_EVENT_ID, ValueType.UINT16),),
            ),
            Element("Version", children=(Sub(_VERSION, ValueType.UINT8),)),
            Element("Level", children=(Sub(_LEVEL, ValueType.UINT8),)),
            Element("Task", children=(Sub(_TASK, ValueType.UINT16),)),
            Element("Opcode", children=(Sub(_OPCODE, ValueType.UINT8),)),
            Element("Keywords", children=(Sub(_KEYWORDS, ValueType.HEXINT64),)),
            Element("TimeCreated", (("SystemTime", Sub(_TIME, ValueType.FILETIME)),)),
            Element("EventRecordID", children=(Sub(_RECORD_ID, ValueType.UINT64),)),
            Element(
                "Correlation",
                (
                    ("ActivityID", Sub(_ACTIVITY, ValueType.GUID, optional=True)),
                    ("RelatedActivityID", Sub(_RELATED, ValueType.GUID, optional=True)),
                ),
            ),
            Element(
                "Execution",
                (
                    ("ProcessID", Sub(_PID, ValueType.UINT32)),
                    ("ThreadID", Sub(_TID, ValueType.UINT32)),
                ),
            ),
            Element("Channel", children=(event.channel,)),
            Element("Computer", children=(event.computer,)),
            Element("Security", (("UserID", Sub(_USER, ValueType.SID, optional=True)),)),
        ),
    )


def _payload_element(event: EventSpec, types: tuple[ValueType, ...]) -> Element | None:
    if event.event_data is not None:
        data = tuple(
            Element("Data", (("Name", name),), (Sub(_PAYLOAD_START + i, types[i]),))
            for i, (name, _) in enumerate(event.event_data)
        )
        return Element("EventData", children=data)
    if event.user_data is not None:
        ud = event.user_data
        fields = tuple(
            Element(name, children=(Sub(_PAYLOAD_START + i, types[i]),))
            for i, (name, _) in enumerate(ud.fields)
        )
        attrs = (("xmlns", ud.namespace),) if ud.namespace is not None else ()
        return Element("UserData", children=(Element(ud.element, attrs, fields),))
    return None


def _payload_fields(event: EventSpec) -> tuple[tuple[str, PayloadValue], ...]:
    if event.event_data is not None:
        return event.event_data
    if event.user_data is not None:
        return event.user_data.fields
    return ()


class EvtxWriter:
    """Streams events into one .evtx file; ``close()`` (or the ``with`` block) finishes it."""

    def __init__(self, path: Path, options: WriteOptions = WriteOptions()) -> None:
        self._path = Path(path)
        self._options = options
        self._damage = options.damage or Damage()
        self._file = self._path.open("wb")
        # Placeholder header, flagged dirty as Windows does while a log is open.
        self._file.write(FileHeader(0, 0, 1, 0, flags=FLAG_DIRTY).pack())
        self._chunk = _Chunk()
        self._chunk_ends: list[int] = []  # last record id of each written chunk
        self._next_id = 1
        self._layouts: dict[object, _Layout] = {}
        self._strings: dict[str, bytes] = {}
        self._stats: WriteStats | None = None

    def __enter__(self) -> EvtxWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write(self, event: EventSpec) -> int:
        """Append one event; returns its record id (1, 2, ...). ValueError on a bad field."""
        if self._stats is not None:
            raise ValueError("write() after close()")
        if event.event_data is not None and event.user_data is not None:
            raise ValueError("an event has EventData or UserData, not both")
        payload = [self._payload_value(v) for _, v in _payload_fields(event)]
        types = tuple(t for t, _ in payload)
        key, layout = self._layout(event, types)
        if ValueType.SIZE_T in types:
            # Windows declares SizeT in the template and stores the value as HexInt64.
            payload = [(ValueType.HEXINT64 if t == ValueType.SIZE_T else t, d) for t, d in payload]
        record_id = self._next_id
        subs = encode_substitutions(self._system_values(event, record_id) + payload)
        written = filetime(event.timestamp)
        cap = self._options.max_records_per_chunk
        if cap is not None and self._chunk.count >= cap:
            self._flush_chunk()
        if not self._append(key, layout, subs, record_id, written):
            if self._chunk.count == 0:
                raise ValueError(f"event {event.event_id} does not fit in one 64 KiB chunk")
            self._flush_chunk()
            if not self._append(key, layout, subs, record_id, written):
                raise ValueError(f"event {event.event_id} does not fit in one 64 KiB chunk")
        self._next_id += 1
        return record_id

    def close(self) -> WriteStats:
        """Write the last chunk and the final file header; idempotent."""
        if self._stats is not None:
            return self._stats
        if self._chunk.count:
            self._flush_chunk()
        damage = self._damage
        total = len(self._chunk_ends)
        counted = max(total - damage.uncounted_chunks, 0)
        flags = FLAG_DIRTY if damage.dirty or damage.uncounted_chunks else 0
        next_id = self._chunk_ends[counted - 1] + 1 if counted else 1
        header = FileHeader(0, max(counted - 1, 0), next_id, counted, flags=flags)
        if damage.bad_file_header_crc:
            header = replace(header, checksum=header.computed_checksum() ^ 1)
        self._file.seek(0)
        self._file.write(header.pack())
        size = FILE_HEADER_SIZE + total * CHUNK_SIZE
        if damage.truncate_bytes:
            size = max(size - damage.truncate_bytes, FILE_HEADER_SIZE)
            self._file.truncate(size)
        self._file.close()
        self._stats = WriteStats(self._next_id - 1, total, size)
        return self._stats

    # --- internals ------------------------------------------------------------------------

    def _layout(self, event: EventSpec, types: tuple[ValueType, ...]) -> tuple[object, _Layout]:
        """The template for this event's shape, built once per writer."""
        ud = event.user_data
        key = (
            event.provider,
            event.provider_guid,
            event.channel,
            event.computer,
            tuple(n for n, _ in event.event_data) if event.event_data is not None else None,
            (ud.element, ud.namespace, tuple(n for n, _ in ud.fields)) if ud else None,
            types,
        )
        layout = self._layouts.get(key)
        if layout is None:
            payload = _payload_element(event, types)
            children: tuple[Element, ...] = (_system_element(event),)
            if payload is not None:
                children += (payload,)
            root = Element("Event", (("xmlns", EVENT_NAMESPACE),), children)
            guid = template_guid(key)
            layout = _Layout(
                root, guid, _U32.unpack(guid.bytes_le[:4])[0], template_bucket(guid), types
            )
            if len(self._layouts) >= _CACHE_LIMIT:
                self._layouts.clear()
            self._layouts[key] = layout
        return key, layout

    def _system_values(self, event: EventSpec, record_id: int) -> list[tuple[int, bytes]]:
        """The 14 System substitution values, in the slot order of :func:`_system_element`."""
        try:
            return [
                (ValueType.UINT8, _U8.pack(event.level)),
                (ValueType.UINT8, _U8.pack(event.opcode)),
                (ValueType.UINT16, _U16.pack(event.task)),
                (ValueType.UINT16, _U16.pack(event.event_id)),
                _NULL
                if event.qualifiers is None
                else (ValueType.UINT16, _U16.pack(event.qualifiers)),
                (ValueType.HEXINT64, _U64.pack(event.keywords)),
                (ValueType.FILETIME, _U64.pack(filetime(event.timestamp))),
                _NULL,
                (ValueType.UINT32, _U32.pack(event.process_id)),
                (ValueType.UINT32, _U32.pack(event.thread_id)),
                (ValueType.UINT64, _U64.pack(record_id)),
                (ValueType.UINT8, _U8.pack(event.version)),
                _NULL if event.user_sid is None else (ValueType.SID, encode_sid(event.user_sid)),
                _NULL,
            ]
        except struct.error as e:
            raise ValueError(
                f"event {event.event_id}: a System field is out of range: {e}"
            ) from None

    def _payload_value(self, value: PayloadValue) -> tuple[int, bytes]:
        """(type, bytes) of one payload value; the common str and int cases skip Typed."""
        cls = type(value)
        if cls is str:
            data = self._strings.get(value)  # type: ignore[arg-type]
            if data is None:
                data = value.encode("utf-16-le")  # type: ignore[union-attr]
                if len(self._strings) >= _CACHE_LIMIT:
                    self._strings.clear()
                self._strings[value] = data  # type: ignore[index]
            return ValueType.STRING, data
        if cls is int and 0 <= value <= 0xFFFFFFFF:  # type: ignore[operator]
            return ValueType.UINT32, _U32.pack(value)
        typed = infer_type(value)
        return typed.vtype, ENCODERS[typed.vtype](typed.value)

    def _append(
        self, key: object, layout: _Layout, subs: bytes, record_id: int, written: int
    ) -> bool:
        """Add the record to the current chunk; False when it does not fit there."""
        chunk = self._chunk
        offset = chunk.free_offset
        definition_offset = chunk.templates.get(key)
        definition = b""
        names = chunk.names
        bucket = layout.bucket
        if definition_offset is None:
            definition_offset = offset + RECORD_HEADER_SIZE + len(FRAGMENT_HEADER) + 10
            names = chunk.names.copy()
            definition = encode_template(
                layout.root,
                layout.guid,
                definition_offset,
                chunk.template_buckets[bucket],
                names,
            )
        size = RECORD_HEADER_SIZE + len(FRAGMENT_HEADER) + 10 + len(definition) + len(subs) + 5
        if offset + size > CHUNK_SIZE or size > _MAX_RECORD:
            return False
        records = chunk.records
        records += pack_record_header(size, record_id, written)
        records += FRAGMENT_HEADER
        records += template_instance(layout.template_id, definition_offset)
        if definition:
            records += definition
            chunk.names = names
            chunk.templates[key] = definition_offset
            chunk.template_buckets[bucket] = definition_offset
        records += subs
        records.append(Token.EOF)  # libevtx insists on it; Windows writes it
        records += _U32.pack(size)
        if chunk.count == 0:
            chunk.first_id = record_id
        chunk.last_id = record_id
        chunk.last_record_offset = offset
        chunk.count += 1
        return True

    def _flush_chunk(self) -> None:
        """Write the current chunk (header, tables, records, zero padding) and start a new one."""
        chunk = self._chunk
        index = len(self._chunk_ends)
        damage = self._damage
        records = bytes(chunk.records)
        records_crc = crc32(records)
        if index in damage.bad_records_crc:
            records_crc ^= 0xFFFFFFFF
        tables = chunk.names.pack() + struct.pack(f"<{TEMPLATE_BUCKETS}I", *chunk.template_buckets)
        header = ChunkHeader(
            chunk.first_id,
            chunk.last_id,
            chunk.first_id,
            chunk.last_id,
            chunk.last_record_offset,
            chunk.free_offset,
            records_crc,
        )
        if index in damage.bad_chunk_header_crc:
            header = replace(header, checksum=header.computed_checksum(tables) ^ 1)
        head = header.pack(tables)
        if index in damage.bad_chunk_magic:
            head = _BAD_CHUNK_MAGIC + head[len(_BAD_CHUNK_MAGIC) :]
        self._file.write(head)
        self._file.write(records)
        self._file.write(bytes(CHUNK_SIZE - CHUNK_HEADER_SIZE - len(records)))
        self._chunk_ends.append(chunk.last_id)
        self._chunk = _Chunk()


def write_evtx(
    path: Path,
    events: Iterable[EventSpec],
    options: WriteOptions = WriteOptions(),
) -> WriteStats:
    """Write ``events`` to ``path`` as one .evtx file and return what was written."""
    with EvtxWriter(path, options) as writer:
        for event in events:
            writer.write(event)
    return writer.close()
