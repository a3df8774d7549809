"""The normalized event row, the per-file read report and the reader errors.

Every parser in this package turns bytes into rows of one shape, so that the
pipeline never needs to know which file format or which engine a row came from.
The column names and polars dtypes are declared here once; the store casts to
them on write and no other module spells a column dtype.

Raw values are kept as logged (an integer code stays an integer, a payload value
stays the text the event carried); words for them are made late, by the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import polars as pl

from parsers.engines import Engine
from parsers.errors import LmtraceError

TIMESTAMP = pl.Datetime("us", "UTC")
"""Both engines render TimeCreated with microsecond precision; times are UTC inside."""

EVENT_SCHEMA: dict[str, pl.DataType] = {
    # When and where
    "timestamp": TIMESTAMP,  # System/TimeCreated/@SystemTime
    "computer": pl.String(),  # System/Computer, as logged
    "channel": pl.String(),  # System/Channel
    "provider": pl.String(),  # System/Provider/@Name (or @EventSourceName)
    "provider_guid": pl.String(),  # System/Provider/@Guid, lower case with braces, or null
    # What
    "event_id": pl.Int32(),  # System/EventID (without qualifiers)
    "qualifiers": pl.Int32(),  # System/EventID/@Qualifiers, or null
    "version": pl.Int16(),
    "level": pl.Int16(),
    "task": pl.Int32(),
    "opcode": pl.Int16(),
    "keywords": pl.UInt64(),  # System/Keywords, the hex string as an integer
    "record_id": pl.Int64(),  # System/EventRecordID
    "header_record_id": pl.Int64(),  # the record header's identifier
    "process_id": pl.Int64(),  # System/Execution/@ProcessID
    "thread_id": pl.Int64(),  # System/Execution/@ThreadID
    "user_sid": pl.String(),  # System/Security/@UserID
    # The payload: EventData and UserData flattened to one JSON object of
    # name -> text (the value as it renders in the event's XML). The exact
    # naming rules (named and unnamed Data, UserData's wrapper element) are
    # documented and implemented once, in parsers/evtx_reader.py.
    "data": pl.String(),
    # Provenance
    "source_path": pl.String(),  # the file on disk, or the outermost archive
    "member": pl.String(),  # path inside the archive(s), "a.zip/b.evtx", or null
    "file_sha256": pl.String(),  # SHA-256 of the file's own bytes
    "engine": pl.String(),  # "rust", "python" or "pfirewall"
}
EVENT_COLUMNS: tuple[str, ...] = tuple(EVENT_SCHEMA)

FILE_SCHEMA: dict[str, pl.DataType] = {
    "source_path": pl.String(),
    "member": pl.String(),
    # source_path and member held bytes that are not UTF-8: both are written with those
    # bytes as \xHH and backslashes doubled (pipeline/names.py reads them back)
    "name_escaped": pl.Boolean(),
    "size": pl.Int64(),
    "sha256": pl.String(),
    "kind": pl.String(),  # "evtx", "pfirewall", ...
    # a file not read because its bytes repeat one already read (here or in an earlier
    # ingest): that file, as `path` or `archive!member`; its events are stored once, under it
    "same_as": pl.String(),
    "engine": pl.String(),  # engine that produced the rows
    "fallback": pl.String(),  # why the default engine was not used, or null
    "records": pl.Int64(),  # rows read from the file
    "records_kept": pl.Int64(),  # rows that passed the filters
    "records_skipped": pl.Int64(),  # records that could not be decoded
    "chunks_skipped": pl.Int64(),  # chunks that could not be read at all
    "records_missing": pl.Int64(),  # record ids absent between the file's first and last
    "chunks_duplicated": pl.Int64(),  # chunks holding the same record ids as another chunk
    "records_recovered": pl.Int64(),  # records python-evtx read that pyevtx-rs skipped
    "errors": pl.List(pl.String()),  # one line per problem, naming chunk/record/offset
    # one line per chunk that fails its checksums: read and kept, but changed after Windows
    # wrote them (parsers/evtx_integrity.py)
    "altered": pl.List(pl.String()),
    "first_ts": TIMESTAMP,
    "last_ts": TIMESTAMP,
    "channels": pl.List(pl.String()),
    "computers": pl.List(pl.String()),
    "dirty": pl.Boolean(),  # header flag "dirty" (log not closed cleanly)
    "seconds": pl.Float64(),
    "lmtrace_version": pl.String(),
}
FILE_COLUMNS: tuple[str, ...] = tuple(FILE_SCHEMA)


@dataclass(frozen=True)
class EventFilter:
    """Which events to keep: the one definition, used while reading and when scanning a store.

    Each field None means "all"; channel and provider names compare case-insensitively,
    as Windows treats them; times are inclusive, aware UTC. Readers apply it before
    storing, the store pushes it into Parquet scans, and store.json records it (a store
    keeps one filter): all three must agree, so all three use this class.
    """

    event_ids: frozenset[int] | None = None
    channels: frozenset[str] | None = None
    providers: frozenset[str] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def predicate(self) -> pl.Expr | None:
        """The filter as a polars predicate over event rows; None when nothing is filtered."""
        parts: list[pl.Expr] = []
        if self.event_ids is not None:
            parts.append(pl.col("event_id").is_in(sorted(self.event_ids)))
        if self.channels is not None:
            wanted = sorted({c.lower() for c in self.channels})
            parts.append(pl.col("channel").str.to_lowercase().is_in(wanted))
        if self.providers is not None:
            wanted = sorted({p.lower() for p in self.providers})
            parts.append(pl.col("provider").str.to_lowercase().is_in(wanted))
        if self.since is not None:
            parts.append(pl.col("timestamp") >= self.since)
        if self.until is not None:
            parts.append(pl.col("timestamp") <= self.until)
        return pl.all_horizontal(parts).fill_null(False) if parts else None

    def expr(self) -> pl.Expr:
        """The filter as one predicate that is always an expression (all rows: True)."""
        predicate = self.predicate()
        return pl.lit(True) if predicate is None else predicate

    def to_json(self) -> dict[str, object]:
        """A stable, comparable form for store.json."""
        return {
            "event_ids": sorted(self.event_ids) if self.event_ids is not None else None,
            "channels": sorted(c.lower() for c in self.channels) if self.channels else None,
            "providers": sorted(p.lower() for p in self.providers) if self.providers else None,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }


@dataclass(frozen=True)
class Provenance:
    """Where a file's bytes came from; copied onto every row it yields."""

    source_path: str  # the file on disk, or the outermost archive
    member: str | None  # path inside the archive(s), or None
    file_sha256: str  # SHA-256 of the file's own bytes


@dataclass(frozen=True)
class ReadIssue:
    """One thing that could not be read, and where.

    ``chunk`` is the 0-based chunk index, ``record_id`` the record header id
    when known, ``offset`` the absolute file offset when known.
    """

    message: str
    chunk: int | None = None
    record_id: int | None = None
    offset: int | None = None

    def __str__(self) -> str:
        where = []
        if self.chunk is not None:
            where.append(f"chunk {self.chunk}")
        if self.record_id is not None:
            where.append(f"record {self.record_id}")
        if self.offset is not None:
            where.append(f"offset 0x{self.offset:x}")
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclass
class ReadReport:
    """What a reader did with one file: counts, never silent loss.

    Filled in while the rows are produced and final once the reader's
    iterator is exhausted.
    """

    engine: Engine | Literal["pfirewall"]
    records: int = 0
    records_kept: int = 0
    records_skipped: int = 0
    chunks_skipped: int = 0
    records_missing: int = 0
    chunks_duplicated: int = 0
    records_recovered: int = 0
    issues: list[ReadIssue] = field(default_factory=list)
    # chunks whose bytes changed after Windows wrote their checksums: read, not lost
    altered: list[ReadIssue] = field(default_factory=list)
    dirty: bool = False
    fallback: str | None = None
    first_ts: datetime | None = None
    last_ts: datetime | None = None

    @property
    def partial(self) -> bool:
        """True when anything in the file could not be read."""
        return bool(
            self.records_skipped
            or self.chunks_skipped
            or self.records_missing
            or self.chunks_duplicated
            or self.issues
        )


class UnreadableFileError(LmtraceError):
    """A whole file could not be read by any engine."""

    def __init__(self, path: str, reason: str, member: str | None = None) -> None:
        self.path = path
        self.member = member
        self.reason = reason
        where = f"{path}!{member}" if member else path
        super().__init__(f"{where}: {reason}")
