"""Reject records before decoding them, from a conservative look at pyevtx-rs JSON text.

Problem: with the investigation's filters (a few event ids out of a 1 GB
Security log) most records are thrown away, yet decoding each one's System
with msgspec costs as much as pyevtx-rs took to produce it. pyevtx-rs writes
``System`` first and always in the same shape, so the few fields the filters
need can be found with ``str.find`` in its JSON text.

The rule is one-sided: :meth:`Prefilter.rejects` answers True only when the
record surely fails a filter (the same filter the reader then applies to the
decoded rows); whenever the text is unusual (no field, an escape, an odd time
format) it answers False and the record is decoded and filtered normally. So a
prefilter can make the reader faster, never change its rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parsers.model import EventFilter

_INT = re.compile(r"-?\d+")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # what pyevtx-rs writes: fixed width, so it sorts
_TIME_LEN = 27


def _time_key(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(_TIME_FORMAT)


def system_time(data: str) -> str | None:
    """``System/TimeCreated/@SystemTime`` as pyevtx-rs wrote it, when it has the usual form."""
    at = data.find('"SystemTime":"')
    if at < 0:
        return None
    text = data[at + 14 : at + 14 + _TIME_LEN]
    return text if len(text) == _TIME_LEN and text[10] == "T" and text[-1] == "Z" else None


def _event_id(data: str) -> int | None:
    at = data.find('"EventID":')
    if at < 0:
        return None
    at += 10
    if data.startswith("{", at):  # {"#attributes":{"Qualifiers":N},"#text":ID}
        at = data.find('"#text":', at)
        if at < 0:
            return None
        at += 8
    match = _INT.match(data, at)
    return int(match.group()) if match else None


def _string_after(data: str, key: str, start: int = 0, end: int | None = None) -> str | None:
    at = data.find(key, start, end)
    if at < 0:
        return None
    at += len(key)
    close = data.find('"', at)
    value = data[at:close] if close >= 0 else ""
    return None if close < 0 or "\\" in value else value


def _provider(data: str) -> str | None:
    at = data.find('"Provider":{"#attributes":{')
    if at < 0:
        return None
    end = data.find("}", at + 27)
    if end < 0:
        return None
    name = _string_after(data, '"Name":"', at, end)
    return name if name is not None else _string_after(data, '"EventSourceName":"', at, end)


@dataclass(frozen=True)
class Prefilter:
    """The reader's filters, in the form the JSON text can be checked against."""

    event_ids: frozenset[int] | None
    channels: frozenset[str] | None  # lower case
    providers: frozenset[str] | None  # lower case
    since: str | None  # as _TIME_FORMAT
    until: str | None

    @classmethod
    def build(cls, wanted: EventFilter) -> Prefilter | None:
        """None when there is nothing to filter on."""
        if wanted.predicate() is None:
            return None
        channels, providers = wanted.channels, wanted.providers
        return cls(
            wanted.event_ids,
            frozenset(c.lower() for c in channels) if channels is not None else None,
            frozenset(p.lower() for p in providers) if providers is not None else None,
            _time_key(wanted.since) if wanted.since is not None else None,
            _time_key(wanted.until) if wanted.until is not None else None,
        )

    def rejects(self, data: str) -> bool:
        """True only when the record surely fails a filter."""
        if self.event_ids is not None:
            event_id = _event_id(data)
            if event_id is not None and event_id not in self.event_ids:
                return True
        if self.channels is not None:
            channel = _string_after(data, '"Channel":"')
            if channel is not None and channel.lower() not in self.channels:
                return True
        if self.providers is not None:
            provider = _provider(data)
            if provider is not None and provider.lower() not in self.providers:
                return True
        if self.since is not None or self.until is not None:
            moment = system_time(data)
            if moment is not None:
                if self.since is not None and moment < self.since:
                    return True
                if self.until is not None and moment > self.until:
                    return True
        return False


def parse_time(text: str) -> datetime:
    """A :func:`system_time` string as an aware UTC datetime."""
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=timezone.utc)
