"""A guest clock that steps and logs it (Kernel-General 1), made continuous (issue 9, item 6)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from pipeline.guest_clock import continuous, offsets_at, steps

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


STEPS = steps(
    pl.DataFrame(
        {
            "machine": ["g", "g"],
            "timestamp": [at(100 + 300), at(1000 + 600)],  # the new time, on the guest clock
            "old_time": [at(100), at(1000 + 300)],
            "delta_s": [300.0, 300.0],
            "source_path": ["System.evtx"] * 2,
            "member": [None, None],
            "record_id": [7, 9],
        },
        schema_overrides={"member": pl.String},
    )
)


def test_events_after_each_step_move_back_by_every_step_so_far() -> None:
    events = pl.DataFrame({"machine": ["g", "g", "g"], "timestamp": [at(50), at(450), at(1650)]})
    moved = continuous(events, STEPS).sort("timestamp")["timestamp"].to_list()
    assert moved == [at(50), at(150), at(1050)]


def test_each_migration_gets_the_steps_logged_up_to_its_resume() -> None:
    pairs = pl.DataFrame(
        {
            "migration_id": ["M001", "M002", "M003"],
            "machine": ["g"] * 3,
            "end": [at(0), at(99.5), at(999.5)],  # host clock; base offset 0
            "clock_offset_s": [0.0] * 3,
        }
    )
    out = offsets_at(pairs, STEPS, reach_s=13.0).sort("migration_id")
    assert out["clock_offset_s"].to_list() == pytest.approx([0.0, 300.0, 600.0])
    assert out["clock_step_ref"].struct.field("record_id").to_list() == [None, 7, 9]
