"""Real events grafted into simulated bundles.

The problem: a simulated bundle tests the correlator only against the simulator's
idea of Windows, and the two were once written from the same guesses. Here a real
record from the public corpus (its provider, event id, channel, level, task,
keywords and every payload field with its logged value) is re-dated into a
simulated quarantine window, re-attributed to the simulated guest, and written
with lmtrace's EVTX writer into an extra log in the guest's folder, as if the
customer's export had held it. Only the time and the computer change, and where a
test changes anything else (an event id), it says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import evtx

from parsers.evtx_writer import EventSpec, EvtxWriter


def real_event(corpus: Path, file: str, record_id: int) -> dict[str, object]:
    """The decoded ``Event`` of one record of a corpus file, as pyevtx-rs reads it."""
    records = evtx.PyEvtxParser(str(corpus / file)).records_json()
    while True:
        try:
            record = next(records)
        except StopIteration:
            raise LookupError(f"{file}: no record {record_id}") from None
        except RuntimeError:  # a damaged record of a dirty sample: not the one wanted
            continue
        if record["event_record_id"] == record_id:
            return json.loads(record["data"])["Event"]


def time_created(event: dict[str, object]) -> datetime:
    system = event["System"]
    text = system["TimeCreated"]["#attributes"]["SystemTime"]  # type: ignore[index]
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def as_spec(
    event: dict[str, object], when: datetime, computer: str, event_id: int | None = None
) -> EventSpec:
    """The real event at ``when`` on ``computer`` (and, only if given, another event id)."""
    system: dict = event["System"]  # type: ignore[assignment]
    provider = system["Provider"]["#attributes"]
    raw_id = system["EventID"]
    qualifiers = raw_id["#attributes"].get("Qualifiers") if isinstance(raw_id, dict) else None
    execution = (system.get("Execution") or {}).get("#attributes", {})
    security = (system.get("Security") or {}).get("#attributes", {})
    data = event.get("EventData") or {}
    return EventSpec(
        timestamp=when,
        provider=provider["Name"],
        provider_guid="{" + provider["Guid"].lower() + "}" if provider.get("Guid") else None,
        event_id=event_id or (raw_id["#text"] if isinstance(raw_id, dict) else raw_id),
        channel=system["Channel"],
        computer=computer,
        level=system.get("Level") or 0,
        task=system.get("Task") or 0,
        opcode=system.get("Opcode") or 0,
        keywords=int(system.get("Keywords") or "0x0", 16),
        version=system.get("Version") or 0,
        qualifiers=qualifiers,
        process_id=execution.get("ProcessID", 4),
        thread_id=execution.get("ThreadID", 8),
        user_sid=security.get("UserID"),
        event_data=tuple((name, value) for name, value in data.items() if value is not None),
    )


def graft(bundle: Path, folder: str, name: str, specs: Iterable[EventSpec]) -> Path:
    """Write ``specs`` (in time order) as one extra log of ``folder`` in ``bundle``."""
    path = bundle / folder / f"grafted-{name}.evtx"
    with EvtxWriter(path) as writer:
        for spec in sorted(specs, key=lambda s: s.timestamp):
            writer.write(spec)
    return path


def at(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)
