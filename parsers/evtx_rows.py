"""pyevtx-rs JSON / python-evtx records -> normalized, filtered polars frames.

Problem: turning a record into a row is where ingest time goes. With pyevtx-rs
the compiled scanner (parsers/_evtx_scan.c) does it for ordinary records; this
module is the reference, for both engines and for every record the scanner
hands back, and normalizes and filters every batch (:func:`rows_frame`).
``System`` is decoded with typed
msgspec Structs (``gc=False``: no cycles, less collector work) while the
payload sections stay raw bytes; per batch, the System fields are appended to
one list per column, normalized and filtered with eager polars, and the
payload is flattened only for the rows that pass: a flat ``EventData`` of text and
integers (most events) by one typed decode and one encode (:func:`flat_payload`),
anything else by parsers/evtx_payload.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import polars as pl

from parsers.engines import Engine
from parsers.evtx_payload import PAYLOAD_SECTIONS, decode_section, payload_json
from parsers.model import EVENT_COLUMNS, Provenance, ReadIssue, ReadReport

# --- System, decoded typed; the payload kept raw -------------------------------


class _Attrs(msgspec.Struct, gc=False):
    Name: str | None = None
    Guid: str | None = None
    EventSourceName: str | None = None
    Qualifiers: int | None = None
    SystemTime: str | None = None
    ProcessID: int | None = None
    ThreadID: int | None = None
    UserID: str | None = None


class _Element(msgspec.Struct, gc=False):
    attrs: _Attrs = msgspec.field(name="#attributes", default_factory=_Attrs)
    text: int | None = msgspec.field(name="#text", default=None)


class System(msgspec.Struct, gc=False):
    """The System fields a row needs, as pyevtx-rs writes them (missing ones: None)."""

    Provider: _Element | None = None
    EventID: int | _Element | None = None
    Version: int | None = None
    Level: int | None = None
    Task: int | None = None
    Opcode: int | None = None
    Keywords: str | None = None
    TimeCreated: _Element | None = None
    EventRecordID: int | None = None
    Execution: _Element | None = None
    Channel: str | None = None
    Computer: str | None = None
    Security: _Element | None = None


class Event(msgspec.Struct, gc=False):
    System: System = msgspec.field(default_factory=System)
    # Raw: the bytes are kept and decoded only for rows that pass the filters.
    # An absent section is an empty Raw (msgspec cannot express ``Raw | None``).
    EventData: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    UserData: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    ProcessingErrorData: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class _Doc(msgspec.Struct, gc=False):
    Event: Event


DOC_DECODER = msgspec.json.Decoder(_Doc, strict=False)
_NO_ATTRS = _Attrs()


# --- records the typed decode refuses, kept with their odd fields as they were -------


class _LooseEvent(msgspec.Struct, gc=False):
    System: Any = None
    EventData: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    UserData: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    ProcessingErrorData: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class _LooseDoc(msgspec.Struct, gc=False):
    Event: _LooseEvent


_LOOSE_DECODER = msgspec.json.Decoder(_LooseDoc, strict=False)
_RAW_CONTROL = re.compile(r"[\x00-\x1f]")
_MISFIT = re.compile(
    r"Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)` - at `\$(?P<path>[^`]*)`"
)
_PATH_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_MAX_MISFITS = 8  # a record with more odd fields than this is damage, not a quirk


def lenient_event(text: str) -> tuple[Event, list[str]] | None:
    """A record's JSON that the typed decode refused, decoded as far as it goes.

    pyevtx-rs writes element names and values with raw control characters into
    its JSON (invalid JSON: "JSON is malformed"), and damaged records carry a
    System field of another type (an integer UserID, a text ProcessID). The
    record was decoded by the engine and must be kept: control characters are
    escaped (pyevtx-rs writes compact JSON, so a raw control character can only be
    inside a string), and each misfit field is kept as text when its column is
    text, else left null, with a note saying what it was. None when it still
    cannot be decoded.
    """
    try:
        loose = _LOOSE_DECODER.decode(_RAW_CONTROL.sub(_escaped_control, text))
    except msgspec.DecodeError:
        return None
    fitted = fit_system(loose.Event.System or {})
    if fitted is None:
        return None
    system, notes = fitted
    event = Event(
        system, loose.Event.EventData, loose.Event.UserData, loose.Event.ProcessingErrorData
    )
    return event, notes


def _escaped_control(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def fit_system(system: Any) -> tuple[System, list[str]] | None:
    """``system`` (a record's System as plain JSON values) as a :class:`System`, each field
    of the wrong type kept as text where the column is text, else null; with one note
    per such field. None when it is no System at all."""
    notes: list[str] = []
    for _ in range(_MAX_MISFITS):
        try:
            return msgspec.convert(system, System, strict=False), notes
        except msgspec.ValidationError as exc:
            note = _refit(system, str(exc))
            if note is None:
                return None
            notes.append(note)
    return None


def _refit(system: Any, error: str) -> str | None:
    """Replace the misfit value the error names; say what it was and what it became."""
    found = _MISFIT.search(error)
    if found is None:
        return None
    steps = [
        name if index == "" else int(index) for name, index in _PATH_STEP.findall(found["path"])
    ]
    if not steps:
        return None
    holder = system
    try:
        for step in steps[:-1]:
            holder = holder[step]
        old = holder[steps[-1]]
    except (KeyError, IndexError, TypeError):
        return None
    expected = found["expected"]
    new = _as_text(old) if "str" in expected.split(" | ") else None
    holder[steps[-1]] = new
    where = ".".join(str(s) for s in steps if s != "#attributes")
    kept = f"kept as {new!r}" if new is not None else "left null"
    return f"System {where} was {old!r}, not {expected}: {kept}"


def _as_text(value: Any) -> str:
    """A JSON value as the text it would have in the event's XML."""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return msgspec.json.encode(value).decode()
    return str(value)


def add_system(batch: Batch, s: System, header_id: int) -> None:
    """Append one record's System fields to the batch's columns (in ``_RAW_SCHEMA`` order)."""
    (
        time,
        computer,
        channel,
        provider,
        guid,
        event_id,
        qualifiers,
        version,
        level,
        task,
        opcode,
        keywords,
        record_id,
        header,
        process_id,
        thread_id,
        user_sid,
    ) = batch.appends
    p = s.Provider.attrs if s.Provider is not None else _NO_ATTRS
    eid = s.EventID
    if isinstance(eid, _Element):
        event_id(eid.text)
        qualifiers(eid.attrs.Qualifiers)
    else:
        event_id(eid)
        qualifiers(None)
    ex = s.Execution.attrs if s.Execution is not None else _NO_ATTRS
    time(s.TimeCreated.attrs.SystemTime if s.TimeCreated is not None else None)
    computer(s.Computer)
    channel(s.Channel)
    provider(p.Name if p.Name is not None else p.EventSourceName)
    guid(p.Guid)
    version(s.Version)
    level(s.Level)
    task(s.Task)
    opcode(s.Opcode)
    keywords(s.Keywords)
    record_id(s.EventRecordID)
    header(header_id)
    process_id(ex.ProcessID)
    thread_id(ex.ThreadID)
    user_sid(s.Security.attrs.UserID if s.Security is not None else None)


# --- batches: System columns -> normalized, filtered frame --------------------


_RAW_SCHEMA = {
    "time": pl.String,
    "computer": pl.String,
    "channel": pl.String,
    "provider": pl.String,
    "guid": pl.String,
    "event_id": pl.Int64,
    "qualifiers": pl.Int64,
    "version": pl.Int64,
    "level": pl.Int64,
    "task": pl.Int64,
    "opcode": pl.Int64,
    "keywords": pl.UInt64,
    "record_id": pl.Int64,
    "header_record_id": pl.Int64,
    "process_id": pl.Int64,
    "thread_id": pl.Int64,
    "user_sid": pl.String,
}

# System/TimeCreated/@SystemTime as pyevtx-rs writes it: six digits of fraction. polars
# parses a fixed-width format three times faster (1 ms against 3 ms for 10,000 records,
# the most of normalizing); a time in another form is parsed again by the general one.
_TIME_FIXED = "%Y-%m-%dT%H:%M:%S.%6fZ"
_TIME_ANY = "%Y-%m-%dT%H:%M:%S%.fZ"


def _time_expr(texts: pl.Expr, time_format: str) -> pl.Expr:
    return texts.str.to_datetime(
        time_format, time_unit="us", time_zone="UTC", strict=False, cache=False
    )


def event_times(texts: pl.Series, fast: pl.Series | None = None) -> pl.Series:
    """SystemTime texts as UTC datetimes (null where unreadable). ``fast`` is the fixed-
    width parse of ``texts`` when already made: every time it leaves null but
    ``texts`` holds is parsed by the general format (which gives what the fixed one
    gives, where that one reads a time at all: tests/test_evtx_rows.py)."""
    if fast is None:
        fast = texts.to_frame().select(_time_expr(pl.first(), _TIME_FIXED)).to_series()
    if fast.null_count() == texts.null_count():
        return fast.alias(texts.name)
    general = texts.to_frame().select(_time_expr(pl.first(), _TIME_ANY)).to_series()
    return fast.fill_null(general).alias(texts.name)


_NORMALIZE = [
    _time_expr(pl.col("time"), _TIME_FIXED).alias("timestamp"),
    pl.col("computer"),
    pl.col("channel"),
    pl.col("provider"),
    pl.col("guid").alias("provider_guid"),
    pl.col("event_id").cast(pl.Int32, strict=False),
    pl.col("qualifiers").cast(pl.Int32, strict=False),
    pl.col("version").cast(pl.Int16, strict=False),
    pl.col("level").cast(pl.Int16, strict=False),
    pl.col("task").cast(pl.Int32, strict=False),
    pl.col("opcode").cast(pl.Int16, strict=False),
    pl.col("keywords"),
    pl.col("record_id"),
    pl.col("header_record_id"),
    pl.col("process_id"),
    pl.col("thread_id"),
    pl.col("user_sid"),
]


# Each row's place in its batch, the key of a batch's pending payloads.
ROW_INDEX = pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row")


@dataclass
class Batch:
    """One batch: a list per System column plus each row's undecoded payload sections."""

    columns: list[list[Any]] = field(default_factory=lambda: [[] for _ in _RAW_SCHEMA])
    payloads: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.appends = tuple(column.append for column in self.columns)

    def __len__(self) -> int:
        return len(self.payloads)

    def header_ids(self) -> list[int]:
        return self.columns[_HEADER_ID]

    def pending(self) -> zip[tuple[Any, int]]:
        """Each row's undecoded payload with its header id, in row order."""
        return zip(self.payloads, self.columns[_HEADER_ID], strict=True)


@dataclass(frozen=True)
class Framing:
    """What turns one read's batches into rows: its engine and that engine's payload
    flattener, the filter, where the records come from, and the report that counts them."""

    engine: Engine
    payload: Callable[[Any], str]
    keep: pl.Expr | None
    provenance: Provenance
    report: ReadReport


def to_frame(batch: Batch, seen: MutableSequence[int], framing: Framing) -> pl.DataFrame:
    """One batch of decoded records as a normalized, filtered frame (see :func:`rows_frame`)."""
    seen.extend(batch.columns[_HEADER_ID])
    raw = raw_frame(batch.columns).with_columns(pl.lit(None, pl.String).alias("data"), ROW_INDEX)
    pending = {i: (sections, header) for i, (sections, header) in enumerate(batch.pending())}
    return rows_frame(raw, pending, framing)


def rows_frame(
    raw: pl.DataFrame, pending: dict[int, tuple[Any, int]], framing: Framing
) -> pl.DataFrame:
    """Normalize, count and filter one batch; flatten the survivors' payloads.

    ``raw``: the System columns (``_RAW_SCHEMA``), ``data`` (null where ``pending``) and,
    when anything is pending, ``_row``, the record's place in its batch. ``pending`` maps
    ``_row`` to the record's undecoded payload and header id: its ``data`` is made only if
    the row passes ``keep``.
    """
    provenance, report = framing.provenance, framing.report
    # Eager, not one lazy query: planning a query costs more than running it on the
    # small batches of the many small logs a real bundle holds (0.5 ms against 0.2 ms
    # for a 20-record batch), and a big batch computes the same columns either way.
    # where the rows come from, in the same select: normalizing a 20-record batch took
    # 0.26 ms with a second query for them, 0.18 ms so (the filters never read them)
    norm = raw.select(
        *_NORMALIZE,
        "data",
        *(["_row"] if pending else []),
        pl.lit(provenance.source_path, pl.String).alias("source_path"),
        pl.lit(provenance.member, pl.String).alias("member"),
        pl.lit(provenance.file_sha256, pl.String).alias("file_sha256"),
        pl.lit(framing.engine, pl.String).alias("engine"),
    )
    fast = norm.get_column("timestamp")
    times = event_times(raw.get_column("time"), fast)
    if times.null_count() < fast.null_count():  # times in another form than pyevtx-rs's
        norm = norm.with_columns(times.alias("timestamp"))
    if times.null_count():
        report.issues.extend(_timeless(raw, times))
    frame = norm if framing.keep is None else norm.filter(framing.keep)
    lo, hi = times.min(), times.max()
    report.records += norm.height
    report.records_kept += frame.height
    if lo is not None and (report.first_ts is None or lo < report.first_ts):
        report.first_ts = lo
    if hi is not None and (report.last_ts is None or hi > report.last_ts):
        report.last_ts = hi
    data = frame.drop_in_place("data")
    if pending:
        rows = frame.drop_in_place("_row")
        wanted = [(at, row) for at, row in enumerate(rows.to_list()) if row in pending]
        if wanted:
            texts = [_payload_or_issue(framing.payload, *pending[row], report) for _, row in wanted]
            data = data.scatter([at for at, _ in wanted], pl.Series(texts, dtype=pl.String))
    frame.insert_column(EVENT_COLUMNS.index("data"), data)
    return frame


_TIMELESS_NAMED = 20  # issues per batch naming a record without a readable time


def _timeless(raw: pl.DataFrame, times: pl.Series) -> list[ReadIssue]:
    """Issues for the records whose TimeCreated cannot be read (damaged bytes): they are
    kept, without a time, so that they count, but nothing can place them."""
    lost = raw.select("header_record_id", "time").filter(times.is_null())
    issues = [
        ReadIssue(
            "record kept without a time: "
            + (
                "no TimeCreated SystemTime was decoded"
                if text is None
                else f"its TimeCreated {text!r:.60} is no time"
            ),
            record_id=header_id,
        )
        for header_id, text in lost.head(_TIMELESS_NAMED).iter_rows()
    ]
    if lost.height > _TIMELESS_NAMED:
        issues.append(
            ReadIssue(f"{lost.height - _TIMELESS_NAMED} more records kept without a time")
        )
    return issues


_INT_FIELDS = [i for i, name in enumerate(_RAW_SCHEMA) if _RAW_SCHEMA[name] == pl.Int64]
_INT64 = range(-(2**63), 2**63)
_GUID = list(_RAW_SCHEMA).index("guid")
_KEYWORDS = list(_RAW_SCHEMA).index("keywords")
_HEADER_ID = list(_RAW_SCHEMA).index("header_record_id")


def _guid(text: str | None) -> str | None:
    """``54849625-...-3E3B0328C30D`` or ``{...}`` -> ``{54849625-...-3e3b0328c30d}``."""
    core = (text or "").strip().strip("{}").strip().lower()
    return f"{{{core}}}" if core else None


def _keywords(text: str | None) -> int | None:
    """``0x8020000000000000`` -> the integer; anything unparseable or out of range -> null."""
    try:
        value = int((text or "").strip(), 16)
    except ValueError:
        return None
    return value if 0 <= value < 2**64 else None


def _by_value(column: list[Any], normalize: Callable[[Any], Any]) -> list[Any]:
    """Normalize a column that repeats few distinct values: each value once, then look up."""
    done = {value: normalize(value) for value in set(column)}
    return [done[value] for value in column]


def raw_frame(columns: list[list[Any]]) -> pl.DataFrame:
    """Columns -> frame. Damaged records can carry integers beyond Int64: those become null."""
    columns = list(columns)
    columns[_GUID] = _by_value(columns[_GUID], _guid)
    columns[_KEYWORDS] = _by_value(columns[_KEYWORDS], _keywords)
    try:
        return pl.DataFrame(dict(zip(_RAW_SCHEMA, columns, strict=True)), schema=_RAW_SCHEMA)
    except (OverflowError, TypeError, pl.exceptions.PolarsError):
        for i in _INT_FIELDS:
            columns[i] = [v if not isinstance(v, int) or v in _INT64 else None for v in columns[i]]
        return pl.DataFrame(dict(zip(_RAW_SCHEMA, columns, strict=True)), schema=_RAW_SCHEMA)


def _payload_or_issue(
    payload: Callable[[Any], str], sections: Any, header_id: int, report: ReadReport
) -> str | None:
    """The flat payload, or null with an issue when its bytes do not decode (row kept)."""
    try:
        return payload(sections)
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        report.issues.append(
            ReadIssue(f"payload not decoded, data left null: {exc}", record_id=header_id)
        )
        return None


_FLAT = msgspec.json.Decoder(dict[str, str | int])
_ENCODER = msgspec.json.Encoder()


def flat_payload(event_data: msgspec.Raw) -> str | None:
    """The ``data`` text of a flat ``EventData`` (text and integer values, each key
    once), or None when it is anything else: most events, at a third of the cost.

    What parsers/evtx_payload.py makes of such a section, without its walk: integers
    become their decimal text, strings stay, keys keep their order; msgspec decodes
    and encodes the strings exactly as the general path does. A key pyevtx-rs wrote
    twice would be lost in the dict: that shows as an encoding shorter than the
    section plus two quotes per integer (msgspec never writes an escape longer than
    pyevtx-rs's valid JSON did) and sends the section the general way, as does an
    escape msgspec writes shorter.
    """
    try:
        flat = _FLAT.decode(event_data)
    except msgspec.DecodeError:  # a ValidationError too: nested, null, float, bool
        return None
    quoted = 0
    for key, value in flat.items():
        if type(value) is int:
            flat[key] = str(value)
            quoted += 2
    text = _ENCODER.encode(flat)
    return text.decode() if len(text) == len(event_data) + quoted else None


def rust_payload(raw: tuple[Any, Any, Any]) -> str:
    """The ``data`` text of a pyevtx-rs record from its raw payload sections."""
    event_data, user_data, errors = raw
    if event_data and not user_data and not errors:
        flat = flat_payload(event_data)
        if flat is not None:
            return flat
    sections = [
        (name, decode_section(part))
        for name, part in zip(PAYLOAD_SECTIONS, raw, strict=True)
        if len(part)
    ]
    return payload_json(sections)


def python_payload(sections: list[tuple[str, Any]]) -> str:
    """The ``data`` text of a python-evtx record (its sections are already decoded)."""
    return payload_json(sections)
