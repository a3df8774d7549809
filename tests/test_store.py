"""The Parquet store on rows the reader produced from real corpus files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from parsers.evtx_reader import Provenance, ReadSettings, read_evtx
from parsers.model import EVENT_SCHEMA, FILE_SCHEMA, EventFilter
from pipeline.store import (
    DEDUPE_KEY,
    EventCommitter,
    StoreError,
    append_files,
    conform,
    init_store,
    locked,
    open_store,
    scan_events,
    scan_files,
    stage_events,
)

SYSTEM = "network/tugix456__System.evtx"  # 299 records of a real System log
FIREWALL = (
    "network/tugix456__Microsoft-Windows-Windows_Firewall_With_Advanced_Security%4Firewall.evtx"
)


def read_all(path: Path) -> pl.DataFrame:
    read = read_evtx(path, ReadSettings(), Provenance(str(path), None, "0" * 64))
    return pl.concat(list(read))


@pytest.fixture(scope="module")
def system(corpus_dir: Path) -> pl.DataFrame:
    return read_all(corpus_dir / SYSTEM)


@pytest.fixture(scope="module")
def firewall(corpus_dir: Path) -> pl.DataFrame:
    return read_all(corpus_dir / FIREWALL)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return init_store(tmp_path / "store", EventFilter())


def commit_frame(store: Path, frame: pl.DataFrame, staging: Path) -> tuple[int, int]:
    staged = stage_events([(0, frame)], staging)
    assert staged.rejected == {0: 0} and staged.repeats == {0: 0} and staged.part is not None
    return EventCommitter(store).commit(staged.part)[0]


def test_conform_drops_and_counts_rows_that_do_not_fit(system):
    wide = (
        system.head(10)
        .with_columns(
            pl.when(pl.int_range(pl.len()) == 3)
            .then(pl.lit(2**40))
            .otherwise(pl.col("event_id"))
            .cast(pl.Int64)
            .alias("event_id")
        )
        .drop("engine")
    )
    kept, rejected = conform(wide, EVENT_SCHEMA)
    assert rejected == 1 and kept.height == 9
    assert kept.schema == pl.Schema(EVENT_SCHEMA)
    assert kept["engine"].null_count() == 9  # a missing column becomes null, not a reject
    assert (
        kept["record_id"].to_list()
        == system.head(10)["record_id"].to_list()[:3] + system.head(10)["record_id"].to_list()[4:]
    )
    with pytest.raises(ValueError, match="not in the schema"):
        conform(system.head(1).with_columns(pl.lit(1).alias("surprise")), EVENT_SCHEMA)


def test_overlapping_batches_store_each_event_once(store, system, tmp_path):
    n = system.height
    cut, start = n * 2 // 3, n // 3
    first, second = system.head(cut), system.slice(start)
    staged = stage_events([(0, first)], tmp_path / "staged").part
    assert staged is not None
    committer = EventCommitter(store)
    assert committer.commit(staged) == {0: (cut, 0)}
    # a part that overlaps nothing is moved into place, not rewritten
    assert (store / "events" / staged.path.name).is_file() and not staged.path.exists()
    staged2 = stage_events([(0, second)], tmp_path / "staged").part
    assert staged2 is not None
    assert committer.commit(staged2) == {0: (n - cut, cut - start)}
    stored = scan_events(store).collect()
    assert stored.height == system.height
    assert stored.sort("record_id").equals(system.sort("record_id"))


def test_a_reopened_store_still_knows_its_events(store, system, firewall, tmp_path):
    commit_frame(store, system, tmp_path / "a")
    # a new committer (a later ingest) indexes what is stored
    assert commit_frame(store, system, tmp_path / "b") == (0, system.height)
    assert commit_frame(store, firewall, tmp_path / "c") == (firewall.height, 0)
    assert scan_events(store).select(pl.len()).collect().item() == system.height + firewall.height


def test_same_record_id_with_another_time_is_another_event(store, system, tmp_path):
    commit_frame(store, system, tmp_path / "a")
    later = system.with_columns(pl.col("timestamp") + timedelta(days=1))
    assert commit_frame(store, later, tmp_path / "b") == (system.height, 0)


def test_repeats_inside_one_batch_are_counted(system, tmp_path):
    staged = stage_events([(0, pl.concat([system, system.head(50)]))], tmp_path)
    part = staged.part
    assert part is not None and part.rows == system.height
    assert (staged.rejected, staged.repeats) == ({0: 0}, {0: 50})
    assert pl.read_parquet(part.path).select(DEDUPE_KEY).is_duplicated().sum() == 0


def test_staging_drops_only_true_repeats_and_notes_each_range(system, firewall, tmp_path):
    """Batches of distinct record ids skip the search for repeats, and a part of one
    computer and channel skips the grouping of its ranges: both short ways must give what
    the long ways give (the same ids on another computer are no repeat)."""
    other = system.with_columns(pl.lit("OTHER-HOST").alias("computer"))
    cases = [
        [(0, system.head(100))],  # one computer and channel (the log has two computers)
        [(0, system), (1, other)],
        [(0, system), (1, firewall), (2, system.head(7))],
    ]
    shapes = []
    for n, batches in enumerate(cases):
        staged = stage_events(batches, tmp_path / str(n))
        combined = pl.concat([frame for _, frame in batches])
        kept = combined.unique(list(DEDUPE_KEY), keep="first", maintain_order=True)
        part = staged.part
        assert part is not None and pl.read_parquet(part.path).equals(kept)
        assert sum(staged.repeats.values()) == combined.height - kept.height
        ranges = kept.group_by("computer", "channel", maintain_order=True).agg(
            pl.col("record_id").min(), pl.col("record_id").max().alias("hi")
        )
        assert part.ranges == tuple(ranges.rows())
        shapes.append((len(part.ranges), sum(staged.repeats.values())))
    assert shapes[0] == (1, 0) and shapes[1][1] == 0 and shapes[2][1] == 7


def test_files_staged_together_are_counted_each_on_its_own(store, system, firewall, tmp_path):
    """Small logs share a part: each one's repeats, rejects and stored events are its own."""
    n = system.height
    commit_frame(store, system.head(40), tmp_path / "before")  # file 7's first 40 events
    wide = firewall.head(5).with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(2**40).otherwise("event_id").alias("event_id")
    )  # one of file 8's rows does not fit the schema
    staged = stage_events(
        [(7, system), (8, wide), (9, system.slice(n - 30)), (9, firewall.slice(5))],
        tmp_path / "staged",
    )  # file 9 repeats file 7's last 30 events and none of file 8's
    part = staged.part
    assert part is not None
    assert staged.rejected == {7: 0, 8: 1, 9: 0}
    assert staged.repeats == {7: 0, 8: 0, 9: 30}
    assert part.owners == ((7, n), (8, 4), (9, firewall.height - 5))
    assert part.rows == n + 4 + firewall.height - 5
    assert EventCommitter(store).commit(part) == {
        7: (n - 40, 40),
        8: (4, 0),
        9: (firewall.height - 5, 0),
    }
    stored = scan_events(store).collect()
    assert stored.height == n + firewall.height - 1
    assert stored.select(DEDUPE_KEY).is_duplicated().sum() == 0


def test_filters_match_a_plain_python_selection(store, system, firewall, tmp_path):
    commit_frame(store, system, tmp_path / "a")
    commit_frame(store, firewall, tmp_path / "b")
    rows = pl.concat([system, firewall]).to_dicts()
    moment = system["timestamp"][system.height // 2]
    cases = {
        EventFilter(event_ids=frozenset({14, 7040})): lambda r: r["event_id"] in (14, 7040),
        EventFilter(channels=frozenset({"SYSTEM"})): lambda r: r["channel"] == "System",
        EventFilter(providers=frozenset({"microsoft-windows-kernel-general"})): lambda r: (
            r["provider"] == "Microsoft-Windows-Kernel-General"
        ),
        EventFilter(since=moment): lambda r: r["timestamp"] >= moment,
        EventFilter(until=moment): lambda r: r["timestamp"] <= moment,
        EventFilter(since=moment, until=moment, channels=frozenset({"system"})): lambda r: (
            r["timestamp"] == moment and r["channel"] == "System"
        ),
    }
    for event_filter, keep in cases.items():
        got = scan_events(store, event_filter).collect()
        want = sorted((r["channel"], r["record_id"]) for r in rows if keep(r))
        assert sorted(zip(got["channel"], got["record_id"], strict=True)) == want, event_filter
        assert want, event_filter  # every case selects something real
    kernel = scan_events(
        store, EventFilter(providers=frozenset({"Microsoft-Windows-Kernel-General"}))
    )
    assert "SELECTION" in kernel.explain()  # the predicate runs inside the Parquet scan


def test_empty_store_scans_to_empty_tables(store):
    assert scan_events(store).collect().schema == pl.Schema(EVENT_SCHEMA)
    assert scan_files(store).collect().height == 0


def test_store_folder_rules(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(StoreError, match="not an lmtrace store; choose a new or empty"):
        init_store(foreign, EventFilter())
    with pytest.raises(StoreError, match="not an lmtrace store"):
        open_store(foreign)
    with pytest.raises(StoreError, match="no such store folder"):
        scan_events(tmp_path / "missing")
    store = init_store(tmp_path / "s", EventFilter(event_ids=frozenset({14})))
    assert init_store(store, EventFilter(event_ids=frozenset({14}))) == store
    with pytest.raises(StoreError, match="built with filters"):
        init_store(store, EventFilter())


def test_one_writer_at_a_time(store):
    with locked(store), pytest.raises(StoreError, match="another ingest"), locked(store):
        pass
    with locked(store):  # released on exit
        pass
    assert not (store / ".lock").exists()


def test_file_rows_are_added_once(store, corpus_dir):
    row = {
        "source_path": str(corpus_dir / SYSTEM),
        "member": None,
        "size": 1118208,
        "sha256": "a" * 64,
        "kind": "evtx",
        "records": 998,
        "errors": [],
        "channels": ["System"],
        "computers": [],
    }
    rows = pl.DataFrame([row, {**row, "member": "x.zip/System.evtx"}], schema=FILE_SCHEMA)
    assert append_files(store, rows) == 2
    assert append_files(store, rows) == 0
    assert scan_files(store).collect().height == 2
