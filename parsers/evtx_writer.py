"""Write genuine .evtx files: file header, 64 KiB chunks, templates, CRC32s, damage on request.

No public bundle shows a live migration cutting a VM off the network, so the
simulator writes its own evidence. Those files are only worth testing with if
every independent reader decodes them as it decodes Windows' own logs, so this
writer lays out what Windows lays out (libyal's "Windows XML Event Log (EVTX)"
description): a 4096-byte file header, 64 KiB chunks each with its
common-string and template tables, and records that are a template instance
with typed substitution values. Each template (the Event one per computer, one
per distinct payload layout) is defined once per chunk, inline in the first
record that uses it; later records in the chunk refer to it by offset.

Records are shaped as in Windows' own Security logs (checked byte by byte
against the public corpus): the templates are defined in
parsers/evtx_templates.py; this module fills the Event template's System
values in Windows' slot order (Level, Opcode, Task, EventID, Qualifiers,
Keywords, TimeCreated, ActivityID, ProcessID, ThreadID, EventRecordID,
Version, UserID, RelatedActivityID, Provider Name, Provider Guid, Channel),
NULL where Windows leaves a value out, and puts the payload in slot 17 as a
nested binary XML value: its own template instance with its own typed values.
Records are padded to 8 bytes, as Windows pads them.

Writing is streaming: one chunk is built in memory at a time, so memory stays
bounded whatever the file size. The same events always give the same bytes.

:class:`Damage` breaks a file in one named way (dirty header with chunks past
its count, truncated last chunk, bad chunk magic, wrong CRCs), so that reader
tests can check that what is broken is exactly what breaks.
"""

from __future__ import annotations

import operator
import struct
import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
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
    Token,
    Typed,
    ValueType,
    encode_guid,
    encode_sid,
    encode_substitutions,
    encode_template,
    filetime,
    infer_type,
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
from parsers.evtx_templates import (
    EVENT_NAMESPACE,
    PAYLOAD_SLOT,
    Template,
    event_root,
    new_template,
    payload_root,
)

__all__ = [
    "EVENT_NAMESPACE",
    "Damage",
    "EventSpec",
    "EvtxWriter",
    "PayloadValue",
    "UserDataSpec",
    "WriteOptions",
    "WriteStats",
    "write_evtx",
]

PayloadValue = str | int | bool | bytes | uuid.UUID | datetime | Typed
"""A payload value; plain values get a default type (:func:`parsers.binxml.infer_type`)."""

_U8, _U16, _U32, _U64 = (struct.Struct(f) for f in ("<B", "<H", "<I", "<Q"))
_BAD_CHUNK_MAGIC = b"ElfChnX\x00"
_EOF = bytes([Token.EOF])
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


_NULL = (ValueType.NULL, b"")
_first, _second = operator.itemgetter(0), operator.itemgetter(1)
_INSTANCE_SIZE = 10  # template instance token: token, 1, template id, definition offset
_SUBS_HEAD = 4 + 4 * (PAYLOAD_SLOT + 1)  # value count and the 18 descriptors, with a payload
_RECORD_ALIGN = 8  # Windows pads records to 8 bytes


def _payload_fields(event: EventSpec) -> tuple[tuple[str, PayloadValue], ...]:
    if event.event_data is not None:
        return event.event_data
    if event.user_data is not None:
        return event.user_data.fields
    return ()


@dataclass(frozen=True)
class _Payload:
    """A payload ready to place: its template and its substitution array."""

    key: object
    template: Template
    subs: bytes


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
        self._templates: dict[object, Template] = {}
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
        if exc is None:
            self.close()
        elif self._stats is None:  # a failed write (a full disk): let go of the file as it is
            with suppress(OSError):
                self._file.close()

    def write(self, event: EventSpec) -> int:
        """Append one event; returns its record id (1, 2, ...). ValueError on a bad field."""
        if self._stats is not None:
            raise ValueError("write() after close()")
        if event.event_data is not None and event.user_data is not None:
            raise ValueError("an event has EventData or UserData, not both")
        record_id = self._next_id
        system = self._system_values(event, record_id)
        payload = self._payload(event)
        outer_key = ("Event", event.computer, payload is not None)
        outer = self._template(outer_key, lambda: event_root(event.computer, payload is not None))
        written = filetime(event.timestamp)
        cap = self._options.max_records_per_chunk
        if cap is not None and self._chunk.count >= cap:
            self._flush_chunk()
        if not self._record(outer_key, outer, system, payload, record_id, written):
            if self._chunk.count == 0:
                raise ValueError(f"event {event.event_id} does not fit in one 64 KiB chunk")
            self._flush_chunk()
            if not self._record(outer_key, outer, system, payload, record_id, written):
                raise ValueError(f"event {event.event_id} does not fit in one 64 KiB chunk")
        self._next_id += 1
        return record_id

    def close(self) -> WriteStats:
        """Write the last chunk and the final file header; idempotent."""
        if self._stats is not None:
            return self._stats
        with self._file:  # closed also when a write fails (a full disk)
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
            size = FILE_HEADER_SIZE + total * CHUNK_SIZE
            self._file.seek(0)
            self._file.write(header.pack())
            if damage.truncate_bytes:
                size = max(size - damage.truncate_bytes, FILE_HEADER_SIZE)
                self._file.truncate(size)
        self._stats = WriteStats(self._next_id - 1, total, size)
        return self._stats

    # --- internals ------------------------------------------------------------------------

    def _template(self, key: object, build: Callable[[], Element]) -> Template:
        """The template for ``key``, built once per writer (bounded cache)."""
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= _CACHE_LIMIT:
                self._templates.clear()
            template = new_template(key, build())
            self._templates[key] = template
        return template

    def _string(self, text: str) -> bytes:
        data = self._strings.get(text)
        if data is None:
            data = text.encode("utf-16-le")
            if len(self._strings) >= _CACHE_LIMIT:
                self._strings.clear()
            self._strings[text] = data
        return data

    def _system_values(self, event: EventSpec, record_id: int) -> list[tuple[int, bytes]]:
        """Event template values 0-16, in Windows' slot order (17, the payload, is added later)."""
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
                (ValueType.STRING, self._string(event.provider)),
                _NULL
                if event.provider_guid is None
                else (ValueType.GUID, encode_guid(event.provider_guid)),
                (ValueType.STRING, self._string(event.channel)),
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
            return ValueType.STRING, data or self._string(value)  # type: ignore[arg-type]
        if cls is int and 0 <= value <= 0xFFFFFFFF:  # type: ignore[operator]
            return ValueType.UINT32, _U32.pack(value)
        typed = infer_type(value)
        return typed.vtype, ENCODERS[typed.vtype](typed.value)

    def _payload(self, event: EventSpec) -> _Payload | None:
        """The payload's template and values, or None for an event without a payload."""
        if event.event_data is None and event.user_data is None:
            return None
        fields = _payload_fields(event)
        values = list(map(self._payload_value, map(_second, fields)))
        types = tuple(map(_first, values))
        names = tuple(map(_first, fields))
        ud = event.user_data
        key = (
            (names, None, types) if ud is None else (None, (ud.element, ud.namespace, names), types)
        )
        wrapper = None if ud is None else (ud.element, ud.namespace)
        template = self._template(key, lambda: payload_root(names, wrapper, types))
        if ValueType.SIZE_T in types:
            # Windows declares SizeT in the template and stores the value as HexInt64.
            values = [(ValueType.HEXINT64 if t == ValueType.SIZE_T else t, d) for t, d in values]
        return _Payload(key, template, encode_substitutions(values))

    def _define(
        self,
        key: object,
        template: Template,
        offset: int,
        names: NameTable,
        buckets: list[int],
        defined: dict[object, int],
    ) -> tuple[int, bytes]:
        """(definition offset, definition bytes or b"" when the chunk already has it)."""
        known = self._chunk.templates.get(key)
        if known is not None:
            return known, b""
        definition = encode_template(
            template.root, template.guid, offset, buckets[template.bucket], names
        )
        buckets[template.bucket] = offset
        defined[key] = offset
        return offset, definition

    def _record(
        self,
        outer_key: object,
        outer: Template,
        system: list[tuple[int, bytes]],
        payload: _Payload | None,
        record_id: int,
        written: int,
    ) -> bool:
        """Append the record to the current chunk; False (and no change) when it does not fit.

        Names and template definitions are tried on copies of the chunk's
        tables and kept only when the record fits.
        """
        chunk = self._chunk
        offset = chunk.free_offset
        fresh = outer_key not in chunk.templates or (
            payload is not None and payload.key not in chunk.templates
        )
        names = chunk.names.copy() if fresh else chunk.names
        buckets = list(chunk.template_buckets) if fresh else chunk.template_buckets
        defined: dict[object, int] = {}
        instance_at = offset + RECORD_HEADER_SIZE + len(FRAGMENT_HEADER)
        outer_offset, outer_definition = self._define(
            outer_key, outer, instance_at + _INSTANCE_SIZE, names, buckets, defined
        )
        values = system
        if payload is not None:
            value_at = (
                instance_at
                + _INSTANCE_SIZE
                + len(outer_definition)
                + _SUBS_HEAD
                + sum(map(len, map(_second, system)))
            )
            inner_offset, inner_definition = self._define(
                payload.key,
                payload.template,
                value_at + len(FRAGMENT_HEADER) + _INSTANCE_SIZE,
                names,
                buckets,
                defined,
            )
            nested = b"".join(
                (
                    FRAGMENT_HEADER,
                    template_instance(payload.template.template_id, inner_offset),
                    inner_definition,
                    payload.subs,
                    _EOF,
                )
            )
            values = [*system, (ValueType.BINXML, nested)]
        subs = encode_substitutions(values)
        body = RECORD_HEADER_SIZE + len(FRAGMENT_HEADER) + _INSTANCE_SIZE
        body += len(outer_definition) + len(subs) + 1
        size = -(-(body + 4) // _RECORD_ALIGN) * _RECORD_ALIGN
        if offset + size >= CHUNK_SIZE:  # libevtx drops a record that ends exactly at 64 KiB
            return False
        record = b"".join(
            (
                pack_record_header(size, record_id, written),
                FRAGMENT_HEADER,
                template_instance(outer.template_id, outer_offset),
                outer_definition,
                subs,
                _EOF,  # libevtx insists on it; Windows writes it
                bytes(size - body - 4),
                _U32.pack(size),
            )
        )
        chunk.records += record
        chunk.names = names
        chunk.template_buckets = buckets
        chunk.templates.update(defined)
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
