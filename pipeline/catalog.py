"""The event catalog: which logged event means what, loaded from TOML and checked on load.

Domain knowledge changes more often than code (a field is named differently on a
customer's build, an event id turns out to mean something else), and most of it is
inferred rather than seen (docs/domain.md labels every fact). So it lives in
``catalog.toml`` shipped in this package, a user's ``--catalog extra.toml`` can add or
replace entries, and the correlator reads *kinds* and named *columns* produced by
:func:`tag`, never raw event ids.

Validation is strict because a silently ignored typo in a catalog would make the
tool report "not affected" for the wrong reason: unknown keys, duplicate entries,
unknown kinds or columns fail with the file and line.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import polars as pl

from parsers.model import LmtraceError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

T = TypeVar("T")
CONFIDENCES = ("stated", "seen", "inferred")
CONDITION_OPS = ("in", "not_in", "matches", "not_matches")
SIDES = ("source", "target")
NUMERIC_COLUMNS = {"blackout_s": pl.Float64, "seconds": pl.Float64, "brownout_s": pl.Float64}
INTEGER_COLUMNS = {"protocol": pl.Int32, "local_port": pl.Int32, "remote_port": pl.Int32}


class CatalogError(LmtraceError):
    """A catalog file is malformed; the message names the file and line."""


class ModelParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Timing facts of the incident model, in seconds, and the kinds that play each part
    (catalog ``[model]``). No defaults here: the shipped catalog.toml states every one,
    with its source, and a user's ``--catalog`` may override some."""

    safety_timeout_s: float
    normal_quarantine_max_s: float
    netvsc_lag_max_s: float
    max_clock_offset_s: float
    tolerance_s: float
    clock_jump_max_s: float
    window_max_s: float
    migration_max_s: float
    terminal_merge_s: float
    trigger_kinds: tuple[str, ...]
    end_kinds: tuple[str, ...]
    blocked_kinds: tuple[str, ...]
    allowed_kinds: tuple[str, ...]
    fallback_kinds: tuple[str, ...]
    end_evidence_protocols: tuple[int, ...]
    packet_pair_s: float

    def kinds_named(self) -> tuple[str, ...]:
        """Every kind the model refers to, for validation against ``[kinds]``."""
        return (
            self.trigger_kinds
            + self.end_kinds
            + self.blocked_kinds
            + self.allowed_kinds
            + self.fallback_kinds
        )


class FixFacts(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The incident's host fix and the guest versions the bug is known on (catalog ``[fix]``).

    Facts with public sources, kept as data so that a later source (a fix for 2012 R2
    hosts, another affected version) is a ``--catalog`` change, not a code change.
    """

    bug_versions: dict[str, str]  # OS version (6013's major.minor.build) -> product
    kb: str  # the update that carries the fix, as remediation names it
    build: int  # ... and the OS build and revision it brings: a boot at or above shows it
    revision: int
    registry: str  # the value that must be set to 0 as well
    kbs: tuple[str, ...]  # installed updates that carry the fix
    later_updates: str  # regex over an update's title: group 1 its month (yyyy-mm)
    later_since: str  # a later update of this month or after carries the fix

    @property
    def fixed_version(self) -> str | None:
        """The OS version the fix is for: the bug version of its build (None: none is)."""
        return next((v for v in self.bug_versions if v.endswith(f".{self.build}")), None)


Condition = str | int | list[str | int]
"""A ``when`` value as written: text, a number, or a list of them (loaded: a list of text)."""


class EventEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One (provider, event id[, channel]) -> kind mapping with its payload columns."""

    provider: str
    event_id: int
    kind: str
    confidence: str
    source: str
    channel: str | None = None
    side: str | None = None
    fields: dict[str, str] = {}
    optional: tuple[str, ...] = ()
    sample: str | None = None
    note: str | None = None
    # Value conditions: the entry's kind holds only when every condition holds for the
    # event's named columns (e.g. a firewall 2010 whose new profile is a real one);
    # otherwise the event gets ``else_kind``. Real logs log the same event id for
    # "classified" and "lost the network", and only the values tell them apart.
    when: dict[str, dict[str, Condition]] = {}
    else_kind: str | None = None
    origin: str = ""  # "file:line", set on load, for error messages and the catalog check

    @property
    def key(self) -> tuple[str, int, str | None]:
        return (self.provider.lower(), self.event_id, (self.channel or "").lower() or None)


@dataclass(frozen=True)
class Scopes:
    """Traffic the quarantine does not govern, recognised by the addresses on either side.

    Each scope is a list of regular expressions over an address as logged. A drop
    of such traffic is not a quarantine's impact, and such traffic allowed is no
    sign that a quarantine ended (catalog ``[scopes]``).
    """

    patterns: dict[str, tuple[str, ...]] = field(default_factory=dict)


class Remediation(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A fix or workaround the report recommends."""

    id: str
    where: str
    permanent: bool
    title: str
    steps: tuple[str, ...]
    effect: str
    confidence: str
    source: str
    tradeoff: str | None = None


class CollectHint(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How to collect a log the bundle lacks."""

    id: str
    when: str
    how: str


class CatalogFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One catalog file as written: the tables it may hold and their types. The
    ``[[event]]``, ``[[remediation]]`` and ``[[collect]]`` tables are checked one by one
    (each error then names its own line)."""

    schema_version: int | None = None
    model: dict[str, Any] = {}  # typed as ModelParams once merged over the shipped one
    fix: dict[str, Any] = {}  # typed as FixFacts once merged over the shipped one
    kinds: dict[str, str] = {}
    columns: dict[str, str] = {}
    directions: dict[str, str] = {}
    protocols: dict[str, int] = {}
    scopes: dict[str, list[str]] = {}
    event: list[dict[str, Any]] = []
    remediation: list[dict[str, Any]] = []
    collect: list[dict[str, Any]] = []


@dataclass(frozen=True)
class Catalog:
    """The merged, validated catalog."""

    model: ModelParams
    fix: FixFacts
    kinds: dict[str, str]
    columns: dict[str, str]
    directions: dict[str, str]
    protocols: dict[str, int]
    scopes: Scopes
    events: tuple[EventEntry, ...]
    remediation: tuple[Remediation, ...]
    collect: tuple[CollectHint, ...]
    files: tuple[str, ...]

    def entries_of(self, *kinds: str) -> tuple[EventEntry, ...]:
        """The entries that can give an event one of ``kinds`` (as kind or ``else_kind``)."""
        return tuple(e for e in self.events if e.kind in kinds or e.else_kind in kinds)

    def split(self, kinds: Sequence[str]) -> tuple[Catalog, Catalog]:
        """(a catalog of the events that can be one of ``kinds``, one of all the others).

        Entries go by (provider, event id), so the candidate entries of one event stay
        together and the channel-specific-wins rule of :func:`tag` still holds in each.
        """
        keys = {(e.provider.lower(), e.event_id) for e in self.entries_of(*kinds)}
        inside = tuple(e for e in self.events if (e.provider.lower(), e.event_id) in keys)
        outside = tuple(e for e in self.events if (e.provider.lower(), e.event_id) not in keys)
        return replace(self, events=inside), replace(self, events=outside)


SCHEMA_VERSION = 1
"""The catalog file format this lmtrace reads (``schema_version`` in a file)."""


def _array_lines(text: str, name: str) -> list[int]:
    """1-based line numbers of each ``[[name]]`` header, in order (tomllib gives none)."""
    pattern = re.compile(rf"^\s*\[\[\s*{re.escape(name)}\s*\]\]", re.MULTILINE)
    return [text.count("\n", 0, m.start()) + 1 for m in pattern.finditer(text)]


def _typed(table: object, kind: type[T], where: str, text: str | None = None) -> T:
    """``table`` as ``kind``, or a CatalogError naming the place and what is wrong: ``where``
    (``file:line`` of the table), or, given the file's ``text``, the line of the key."""
    try:
        return msgspec.convert(table, kind)
    except msgspec.ValidationError as exc:
        message = _in_words(str(exc))
        place = _line_of(where, text, message) if text is not None else where
        raise CatalogError(f"{place}: {message}") from None


def _in_words(message: str) -> str:
    """msgspec's message in the catalog's words: TOML keys, not JSON paths."""
    text, _, path = message.partition(" - at `$")
    key = path.rstrip("`").lstrip(".").replace("[...]", "")
    for pattern, words in (
        (r"Object contains unknown field `(.+)`", r"unknown key \1"),
        (r"Object missing required field `(.+)`", r"missing key \1"),
        (r"Expected `(.+)`, got `(.+)`", r"expected \1, got \2"),
    ):
        text = re.sub(pattern, words, text)
    return f"{key}: {text}" if key else text


def _line_of(path: str, text: str, message: str) -> str:
    """``file:line`` of the key or table a message of :func:`_in_words` names (its first use)."""
    named = re.search(r"(?:unknown|missing) key (\S+)", message)
    key = named.group(1) if named else message.split(":", 1)[0].split(".")[-1].split("[")[0]
    found = (
        re.search(
            rf'^\s*(?:"?{re.escape(key)}"?\s*=|\[+\s*{re.escape(key)}\s*\]+)', text, re.MULTILINE
        )
        if key
        else None
    )
    return f"{path}:{text.count(chr(10), 0, found.start()) + 1}" if found else path


def _parse_file(path: str, text: str) -> CatalogFile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: {exc}") from None
    try:
        parsed = msgspec.convert(data, CatalogFile)
    except msgspec.ValidationError as exc:
        message = _in_words(str(exc))
        raise CatalogError(f"{_line_of(path, text, message)}: {message}") from None
    if parsed.schema_version not in (None, SCHEMA_VERSION):
        raise CatalogError(
            f"{_line_of(path, text, 'schema_version')}: schema_version {parsed.schema_version}"
            f" is not one this lmtrace reads (it reads {SCHEMA_VERSION})"
        )
    return parsed


def _located(
    path: str, text: str, raw: list[dict[str, Any]], name: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each ``[[name]]`` table with its ``file:line``, for error messages."""
    lines = _array_lines(text, name)
    for i, table in enumerate(raw):
        yield f"{path}:{lines[i] if i < len(lines) else '?'}", table


def _events(path: str, text: str, raw: list[dict[str, Any]]) -> list[EventEntry]:
    entries = []
    for where, table in _located(path, text, raw, "event"):
        entry = _typed(table, EventEntry, where)
        entries.append(
            msgspec.structs.replace(entry, when=_conditions(entry.when, where), origin=where)
        )
    return entries


def _conditions(
    raw: dict[str, dict[str, Condition]], where: str
) -> dict[str, dict[str, Condition]]:
    """``when = { column = { op = value or [values] } }``, as lists of text: values are
    compared with the payload as logged, which is text."""
    out: dict[str, dict[str, Condition]] = {}
    for column, ops in raw.items():
        unknown = sorted(set(ops) - set(CONDITION_OPS))
        if unknown or not ops:
            raise CatalogError(
                f"{where}: when.{column}: unknown op(s) {', '.join(unknown) or '(none given)'};"
                f" valid: {', '.join(CONDITION_OPS)}"
            )
        values: dict[str, Condition] = {
            op: [str(v) for v in (v if isinstance(v, list) else [v])] for op, v in ops.items()
        }
        for op, texts in values.items():
            if not texts:
                raise CatalogError(f"{where}: when.{column}.{op}: no value given")
            for text in texts if op.endswith("matches") else ():  # type: ignore[union-attr]
                try:
                    re.compile(str(text))
                except re.error as exc:
                    raise CatalogError(f"{where}: when.{column}.{op}: {exc}") from None
        out[column] = values
    return out


def _remediations(path: str, text: str, raw: list[dict[str, Any]]) -> list[Remediation]:
    return [_typed(t, Remediation, where) for where, t in _located(path, text, raw, "remediation")]


def _collects(path: str, text: str, raw: list[dict[str, Any]]) -> list[CollectHint]:
    return [_typed(t, CollectHint, where) for where, t in _located(path, text, raw, "collect")]


def _merge_by(
    base: Iterable[Any], extra: Iterable[Any], key: Any, path: str, what: str
) -> list[Any]:
    """Entries of ``extra`` replace those of ``base`` with the same key.

    The same key twice within one file is an error: one of them is a typo.
    """
    merged = {key(item): item for item in base}
    seen: dict[Any, Any] = {}
    for item in extra:
        k = key(item)
        if k in seen:
            origin = getattr(item, "origin", path)
            raise CatalogError(f"{origin}: duplicate {what} {k} (also at {seen[k]})")
        seen[k] = getattr(item, "origin", path)
        merged[k] = item
    return list(merged.values())


def _validate(catalog: Catalog) -> None:
    unknown_model_kinds = sorted(set(catalog.model.kinds_named()) - set(catalog.kinds))
    if unknown_model_kinds:
        raise CatalogError(
            f"{catalog.files[-1]}: [model] names unknown kind(s) {', '.join(unknown_model_kinds)}"
        )
    for entry in catalog.events:
        for kind in (entry.kind, entry.else_kind):
            if kind is not None and kind not in catalog.kinds:
                raise CatalogError(f"{entry.origin}: unknown kind {kind!r}")
        if bool(entry.when) != (entry.else_kind is not None):
            raise CatalogError(f"{entry.origin}: when and else_kind go together")
        unmapped = sorted(set(entry.when) - set(entry.fields))
        if unmapped:
            raise CatalogError(
                f"{entry.origin}: when names column(s) the entry does not map:"
                f" {', '.join(unmapped)}"
            )
        if entry.confidence not in CONFIDENCES:
            raise CatalogError(
                f"{entry.origin}: confidence must be one of {', '.join(CONFIDENCES)}"
            )
        if entry.side is not None and entry.side not in SIDES:
            raise CatalogError(f"{entry.origin}: side must be one of {', '.join(SIDES)}")
        unknown = sorted((set(entry.fields) | set(entry.optional)) - set(catalog.columns))
        if unknown:
            raise CatalogError(f"{entry.origin}: unknown column(s) {', '.join(unknown)}")


def _load_texts(sources: Sequence[tuple[str, str]]) -> Catalog:
    model: dict[str, Any] = {}
    fix: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    columns: dict[str, str] = {}
    directions: dict[str, str] = {}
    protocols: dict[str, int] = {}
    scopes: dict[str, tuple[str, ...]] = {}
    events: list[EventEntry] = []
    remediation: list[Remediation] = []
    collect: list[CollectHint] = []
    params: ModelParams | None = None
    fix_facts: FixFacts | None = None
    for path, text in sources:
        data = _parse_file(path, text)
        model.update(data.model)
        # A table in [fix] (bug_versions) adds to the shipped one; other keys replace.
        fix.update(
            {k: {**fix.get(k, {}), **v} if isinstance(v, dict) else v for k, v in data.fix.items()}
        )
        # Each file's [model] and [fix] must leave the merged tables whole and well typed.
        params = _typed(model, ModelParams, path, text)
        fix_facts = _typed(fix, FixFacts, path, text)
        _check_pattern(path, "[fix] later_updates", fix_facts.later_updates)
        if fix_facts.fixed_version is None:
            raise CatalogError(
                f"{path}: [fix] bug_versions names no version of build {fix_facts.build}"
            )
        kinds.update(data.kinds)
        columns.update(data.columns)
        directions.update(data.directions)
        protocols.update(data.protocols)
        scopes.update(_scopes(path, data.scopes))
        events = _merge_by(events, _events(path, text, data.event), lambda e: e.key, path, "event")
        remediation = _merge_by(
            remediation,
            _remediations(path, text, data.remediation),
            lambda r: r.id,
            path,
            "remediation",
        )
        collect = _merge_by(
            collect,
            _collects(path, text, data.collect),
            lambda c: c.id,
            path,
            "collect hint",
        )
    assert params is not None and fix_facts is not None  # the shipped catalog comes first
    catalog = Catalog(
        model=params,
        fix=fix_facts,
        kinds=kinds,
        columns=columns,
        directions=directions,
        protocols=protocols,
        scopes=Scopes(scopes),
        events=tuple(events),
        remediation=tuple(remediation),
        collect=tuple(collect),
        files=tuple(p for p, _ in sources),
    )
    _validate(catalog)
    return catalog


def _check_pattern(path: str, where: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise CatalogError(f"{path}: {where}: {pattern!r}: {exc}") from None


def _scopes(path: str, raw: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    for name, patterns in raw.items():
        for pattern in patterns:
            _check_pattern(path, f"[scopes] {name}", pattern)
    return {name: tuple(patterns) for name, patterns in raw.items()}


def load_catalog(extra: Sequence[Path] = ()) -> Catalog:
    """The shipped catalog, then each ``extra`` file in order (later entries win)."""
    shipped = resources.files("pipeline").joinpath("catalog.toml")
    sources = [("catalog.toml (shipped)", shipped.read_text(encoding="utf-8"))]
    for path in extra:
        try:
            sources.append((str(path), Path(path).read_text(encoding="utf-8")))
        except OSError as exc:
            raise CatalogError(f"{path}: cannot read catalog ({exc.strerror})") from None
    return _load_texts(sources)


# ----------------------------------------------------------------------------- tagging


def _payload_value(key: str) -> pl.Expr:
    """Extract one payload value, still JSON-escaped, from the ``data`` JSON text.

    A regular expression over the JSON text is several times faster than a JSON
    decoder here (measured: ~0.2 s per field per million rows, against 1.4 s for
    ``json_path_match`` and 6 s for ``json_decode``), and is exact because
    ``data`` is a flat object of string values written by our readers: a key is
    always preceded by ``{`` or ``,`` and a quote inside a value is escaped.
    :func:`_unescape` decodes the few values that hold an escape.
    """
    quoted = re.escape(f'"{key}"')
    return pl.col("data").str.extract(rf'[{{,]\s*{quoted}\s*:\s*"((?:[^"\\]|\\.)*)"')


def _unescape(frame: pl.DataFrame, columns: Iterable[str]) -> pl.DataFrame:
    """Decode JSON escapes (backslash sequences) in extracted string columns.

    Escaped values are rare and repeat (application paths), so each distinct one
    is decoded once and mapped back, instead of running a JSON decoder on every row;
    the escaped values of every column are found in one query.
    """
    text = [c for c in columns if frame.schema[c] == pl.String]
    if not text:
        return frame
    escaped = frame.select(
        pl.col(c).filter(pl.col(c).str.contains("\\", literal=True)).unique().implode()
        for c in text
    ).row(0, named=True)
    decoded = {
        column: {v: json.loads(f'"{v}"') for v in values}
        for column, values in escaped.items()
        if values
    }
    if not decoded:
        return frame
    return frame.with_columns(pl.col(c).replace(d) for c, d in decoded.items())


def _entries_frame(catalog: Catalog) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "_prov": [e.provider.lower() for e in catalog.events],
            "event_id": [e.event_id for e in catalog.events],
            "_entry_channel": [(e.channel or "").lower() or None for e in catalog.events],
            "kind": [e.kind for e in catalog.events],
            "side": [e.side for e in catalog.events],
            "_entry": list(range(len(catalog.events))),
        },
        schema={
            "_prov": pl.String,
            "event_id": pl.Int32,
            "_entry_channel": pl.String,
            "kind": pl.String,
            "side": pl.String,
            "_entry": pl.Int32,
        },
    )


TAGGED_EVENT_COLUMNS = (
    "timestamp",
    "computer",
    "channel",
    "provider",
    "event_id",
    "record_id",
    "header_record_id",
    "source_path",
    "member",
    "file_sha256",
)
"""The event columns a tagged row keeps: when, where, what, and the evidence pointer.

The payload text is dropped once its named values are extracted: on a busy
server it is most of the bytes, and nothing after tagging reads it.
"""


def known(events: pl.LazyFrame, catalog: Catalog) -> pl.LazyFrame:
    """The events some catalog entry knows, once per entry that knows them (a generic and a
    channel-specific entry can both): enough to tell which machines logged such events, in
    a query that streams (:func:`matched` picks one entry per event, which needs them all
    in memory: 170 MB more for a 1 GB bundle's firewall events)."""
    return (
        events.select(*TAGGED_EVENT_COLUMNS, "data")
        # Known event ids first: pushed into the scan, so payloads of the other events
        # (most of a busy server's log) are never held in memory.
        .filter(pl.col("event_id").is_in(sorted({e.event_id for e in catalog.events})))
        .with_columns(pl.col("provider").str.to_lowercase().alias("_prov"))
        .join(_entries_frame(catalog).lazy(), on=["_prov", "event_id"], how="inner")
        .filter(
            pl.col("_entry_channel").is_null()
            | (pl.col("channel").str.to_lowercase() == pl.col("_entry_channel"))
        )
    )


def matched(events: pl.LazyFrame, catalog: Catalog) -> pl.LazyFrame:
    """The events the catalog knows, each with its one entry (``_entry``, ``kind``,
    ``side``): a lazy query, so a caller that needs no payload never reads one."""
    joined = known(events, catalog)
    # A channel-specific entry wins over a generic one for the same row.
    return joined.filter(
        pl.col("_entry_channel").is_not_null().cast(pl.Int8)
        == pl.col("_entry_channel")
        .is_not_null()
        .cast(pl.Int8)
        .max()
        .over(["file_sha256", "header_record_id", "record_id", "_prov", "event_id"])
    )


def _condition(column: str, ops: dict[str, Condition]) -> pl.Expr:
    """One ``when`` condition over a payload column as logged (text, before any cast)."""
    value = pl.col(column).cast(pl.String)
    parts = []
    for op, condition in ops.items():
        values = [str(v) for v in (condition if isinstance(condition, list) else [condition])]
        if op in ("in", "not_in"):
            test = value.str.to_lowercase().is_in([v.lower() for v in values])
        else:
            test = pl.any_horizontal(value.str.contains(v) for v in values)
        parts.append(~test if op.startswith("not_") else test)
    # A value the event does not carry cannot satisfy a condition: the entry's kind is
    # then not established, and the event takes ``else_kind``.
    return pl.all_horizontal(parts).fill_null(False)


def _conditional_kind(catalog: Catalog) -> pl.Expr:
    """``kind``, with ``else_kind`` for events of an entry whose ``when`` does not hold."""
    kind = pl.col("kind")
    for i, entry in enumerate(catalog.events):
        if entry.else_kind is None:
            continue
        holds = pl.all_horizontal(_condition(c, ops) for c, ops in entry.when.items())
        kind = (
            pl.when((pl.col("_entry") == i) & ~holds).then(pl.lit(entry.else_kind)).otherwise(kind)
        )
    return kind.alias("kind")


def tag(events: pl.LazyFrame, catalog: Catalog) -> pl.DataFrame:
    """Keep the events the catalog knows, with their ``kind``, ``side`` and named columns.

    Rows keep ``TAGGED_EVENT_COLUMNS``; every column declared in the catalog is
    present (null where an entry does not map it), plus ``inbound`` (bool, from the
    ``[directions]`` table), ``confidence`` and ``entry`` (``file:line`` of the catalog entry
    that tagged it, for :mod:`pipeline.catalog_check`). Rows are partitioned by
    field mapping so that each row's payload is searched only for the names its own
    entry maps.
    """
    joined = matched(events, catalog)
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for i, entry in enumerate(catalog.events):
        groups.setdefault(tuple(sorted(entry.fields.items())), []).append(i)
    mappings = list(groups)
    group_of = {i: g for g, ids in enumerate(groups.values()) for i in ids}
    # Materialize the join once; each partition then searches only its own payload names.
    joined_rows = joined.with_columns(
        pl.col("_entry").replace_strict(group_of, return_dtype=pl.Int32).alias("_group")
    ).collect(engine="streaming")
    groups_present = joined_rows["_group"].unique().sort().to_list()
    # One group at a time, dropping its payload text as soon as its values are out.
    parts = [
        joined_rows.filter(pl.col("_group") == group)
        .with_columns([_payload_value(key).alias(column) for column, key in mappings[group]])
        .drop("data")
        .lazy()
        for group in groups_present
    ] or [joined_rows.drop("data").lazy()]
    del joined_rows
    present = {column for group in groups_present for column, _ in mappings[group]}
    confidence = pl.DataFrame(
        {
            "_entry": list(range(len(catalog.events))),
            "confidence": [e.confidence for e in catalog.events],
        },
        schema={"_entry": pl.Int32, "confidence": pl.String},
    )
    all_columns = [
        pl.col(c) if c in present else pl.lit(None, pl.String).alias(c) for c in catalog.columns
    ]
    tagged = (
        pl.concat(parts, how="diagonal_relaxed")
        .with_columns(all_columns)
        .with_columns(_conditional_kind(catalog))
        .with_columns(pl.col("protocol").replace({k: str(v) for k, v in catalog.protocols.items()}))
        .with_columns(
            [
                pl.col(c).cast(t, strict=False)
                for c, t in NUMERIC_COLUMNS.items()
                if c in catalog.columns
            ]
            + [
                pl.col(c).cast(t, strict=False)
                for c, t in INTEGER_COLUMNS.items()
                if c in catalog.columns
            ]
        )
        .with_columns(
            (
                pl.col("direction").replace_strict(
                    catalog.directions, default=None, return_dtype=pl.String
                )
                == "inbound"
            )
            .fill_null(False)
            .alias("inbound")
        )
        .join(confidence.lazy(), on="_entry", how="left")
        .with_columns(
            pl.col("_entry")
            .replace_strict(
                dict(enumerate(e.origin for e in catalog.events)), return_dtype=pl.String
            )
            .alias("entry")
        )
        .drop("_prov", "_entry_channel", "_entry", "_group")
        .collect()
    )
    return _unescape(tagged, catalog.columns)
