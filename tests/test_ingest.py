"""ingest end to end on real corpus files: counts, dedupe, appends, filters, failures."""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import zipfile
from pathlib import Path

import polars as pl
import pytest

from parsers.evtx_reader import ReadSettings
from parsers.model import EventFilter, LmtraceError
from parsers.pfirewall import PfirewallSettings
from parsers.time_values import parse_zone
from pipeline.ingest import SMALL_FILE_BYTES, FileOutcome, _Relay, ingest
from pipeline.store import StoreError, incomplete, scan_events, scan_files
from tests.samples import large_log

SYSTEM = "network/tugix456__System.evtx"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bundles" / "quarantine-bug"
FIREWALL = (
    "network/tugix456__Microsoft-Windows-Windows_Firewall_With_Advanced_Security%4Firewall.evtx"
)
SMALL = "parsers/python-evtx__issue_38.evtx"
BAD_CHUNK = "parsers/omerbenamram-evtx__sample_with_a_bad_chunk_magic.evtx"
# the same 2261 Security records, exported twice into files with different bytes
SECURITY = "parsers/omerbenamram-evtx__security.evtx"
SECURITY_AGAIN = "parsers/omerbenamram-evtx__security_bad_string_cache.evtx"


class Recorder:
    """An IngestProgress that remembers every phase and the bytes reported in it."""

    def __init__(self) -> None:
        self.phases: list[list] = []

    def phase(self, name: str, total_bytes: int) -> None:
        self.phases.append([name, total_bytes, 0])

    def advance(self, nbytes: int) -> None:
        self.phases[-1][2] += nbytes


def manifest_records(manifest, relative: str) -> int:
    [row] = [r for r in manifest if r["file"] == relative]
    return int(row["rust_records"])


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def events(store: Path) -> pl.DataFrame:
    return scan_events(store).collect().sort("file_sha256", "record_id", "timestamp")


@pytest.fixture(scope="module")
def network_stores(corpus_dir, tmp_path_factory):
    """The network/ folder ingested with 1 and with 2 reading processes."""
    stores = {}
    for jobs in (1, 2):
        progress = Recorder()
        store = tmp_path_factory.mktemp(f"jobs{jobs}") / "store"
        summary = ingest([corpus_dir / "network"], store, jobs=jobs, progress=progress)
        stores[jobs] = (store, summary, progress)
    return stores


def test_one_and_two_jobs_store_the_same_events(network_stores, manifest):
    (store1, summary1, _), (store2, summary2, _) = network_stores[1], network_stores[2]
    assert events(store1).equals(events(store2))
    assert summary1.events_stored == summary2.events_stored == events(store1).height
    assert summary1.exit_code == summary2.exit_code == 0
    files1 = scan_files(store1).collect().drop("seconds").sort("source_path")
    files2 = scan_files(store2).collect().drop("seconds").sort("source_path")
    assert files1.equals(files2)
    # every file's count is the reference count of the corpus manifest
    for row in files1.iter_rows(named=True):
        relative = "network/" + Path(row["source_path"]).name
        assert row["records"] == manifest_records(manifest, relative), relative
    wanted = sum(
        manifest_records(manifest, r["file"])
        for r in manifest
        if r["file"].startswith("network/") and r["file"].endswith(".evtx")
    )
    assert summary1.records == wanted == events(store1).height


def test_progress_counts_every_byte(network_stores, corpus_dir):
    size = sum(p.stat().st_size for p in (corpus_dir / "network").iterdir())
    for jobs in (1, 2):
        _, _, progress = network_stores[jobs]
        assert progress.phases == [["discovering", size, size], ["reading", size, size]], jobs


def test_byte_counts_that_come_after_their_file_do_not_pass_its_size() -> None:
    """A reading process's last byte counts travel on another queue than its result, and
    can come after it. The file is topped up to its size when its result comes, and its
    late counts are dropped: the progress ends at the input's size. (They were added, so
    the progress passed 100%, and test_progress_counts_every_byte failed now and then.)"""
    sink: queue.Queue[tuple[int, int]] = queue.Queue()
    progress = Recorder()
    progress.phase("reading", 300)
    relay = _Relay(sink, 2, progress)
    sink.put((0, 60))
    relay.drain()
    relay.finish(0, 100)  # file 0's result, before its last 40 bytes
    sink.put((0, 40))
    sink.put((1, 150))
    relay.drain()
    relay.finish(1, 200)
    assert progress.phases == [["reading", 300, 300]]


def test_identical_files_are_read_once(corpus_dir, manifest, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copyfile(corpus_dir / SMALL, inputs / "Small.evtx")
    shutil.copyfile(corpus_dir / SMALL, inputs / "Small-copy.evtx")
    with zipfile.ZipFile(inputs / "bundle.zip", "w") as zf:
        zf.write(inputs / "Small.evtx", "host/Small.evtx")
    summary = ingest([inputs], tmp_path / "store")
    assert (summary.count("read"), summary.count("repeated")) == (1, 2)
    assert summary.events_stored == manifest_records(manifest, SMALL)
    # every copy is listed, naming the file read, whose row alone counts the events
    listed = scan_files(tmp_path / "store").collect().sort("source_path", "member")
    first = str(inputs / "Small-copy.evtx")  # the first in name order
    assert listed.select("source_path", "member", "same_as", "records").rows() == [
        (first, None, None, manifest_records(manifest, SMALL)),
        (str(inputs / "Small.evtx"), None, first, None),
        (str(inputs / "bundle.zip"), "host/Small.evtx", first, None),
    ]
    assert listed["sha256"].n_unique() == 1 and listed["errors"].list.len().sum() == 0
    # a second ingest of the same inputs lists none of them twice, and stores no event twice
    again = ingest([inputs], tmp_path / "store")
    assert again.count("repeated") == 3 and again.events_stored == 0
    assert scan_files(tmp_path / "store").collect().height == 3


def test_reingest_changes_nothing(corpus_dir, tmp_path):
    store = tmp_path / "store"
    inputs = [corpus_dir / SYSTEM, corpus_dir / FIREWALL]
    first = ingest(inputs, store)
    before = tree(store)
    again = ingest(inputs, store)
    assert tree(store) == before
    assert again.count("repeated") == 2 and again.events_stored == 0 and again.exit_code == 0
    assert all("already in the store" in o.message for o in again.outcomes)
    assert first.events_stored == scan_events(store).select(pl.len()).collect().item()


def test_overlapping_exports_store_each_event_once(corpus_dir, manifest, tmp_path):
    summary = ingest([corpus_dir / SECURITY, corpus_dir / SECURITY_AGAIN], tmp_path / "store")
    records = manifest_records(manifest, SECURITY)
    assert summary.count("read") == 2 and summary.records == 2 * records
    assert (summary.events_stored, summary.events_duplicate) == (records, records)
    stored = scan_events(tmp_path / "store").collect()
    assert stored.height == records and stored["file_sha256"].n_unique() == 1


def test_a_second_input_later_adds_to_the_store(corpus_dir, manifest, tmp_path):
    store = tmp_path / "store"
    ingest([corpus_dir / SYSTEM], store)
    later = ingest([corpus_dir / FIREWALL], store)
    assert later.events_stored == manifest_records(manifest, FIREWALL)
    total = manifest_records(manifest, SYSTEM) + manifest_records(manifest, FIREWALL)
    assert scan_events(store).select(pl.len()).collect().item() == total
    assert scan_files(store).collect().height == 2


def test_filters_at_ingest_equal_filters_on_the_full_store(network_stores, corpus_dir, tmp_path):
    full, _, _ = network_stores[1]
    selected = EventFilter(
        event_ids=frozenset({14, 2004, 5156}), channels=frozenset({"system", "security"})
    )
    summary = ingest([corpus_dir / "network"], tmp_path / "store", ReadSettings(filter=selected))
    want = scan_events(full, selected).collect().sort("file_sha256", "record_id")
    assert 0 < want.height < summary.records
    assert events(tmp_path / "store").sort("file_sha256", "record_id").equals(want)
    assert summary.records_kept == want.height
    with pytest.raises(StoreError, match="built with filters"):
        ingest([corpus_dir / SMALL], tmp_path / "store")


def test_unreadable_files_are_recorded_and_the_rest_kept(corpus_dir, manifest, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "cut.evtx").write_bytes((corpus_dir / SMALL).read_bytes()[:100])  # header cut short
    shutil.copyfile(corpus_dir / BAD_CHUNK, inputs / "bad-chunk.evtx")
    shutil.copyfile(corpus_dir / SYSTEM, inputs / "System.evtx")
    summary = ingest([inputs], tmp_path / "store")
    status = {Path(o.source_path).name: o.status for o in summary.outcomes}
    assert status == {"cut.evtx": "failed", "bad-chunk.evtx": "partial", "System.evtx": "read"}
    assert summary.exit_code == 1
    files = {
        Path(r["source_path"]).name: r for r in scan_files(tmp_path / "store").collect().to_dicts()
    }
    assert files["cut.evtx"]["records"] == 0 and files["cut.evtx"]["errors"]
    assert files["bad-chunk.evtx"]["chunks_skipped"] > 0
    assert files["bad-chunk.evtx"]["records"] == manifest_records(manifest, BAD_CHUNK)
    stored = scan_events(tmp_path / "store").group_by("source_path").len().collect()
    assert sorted(Path(p).name for p in stored["source_path"]) == ["System.evtx", "bad-chunk.evtx"]


def test_archives_are_read_in_scratch_inside_the_store(corpus_dir, manifest, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    with zipfile.ZipFile(inputs / "bundle.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(corpus_dir / SYSTEM, "Guest/System.evtx")
        zf.write(corpus_dir / FIREWALL, "Guest/Firewall.evtx")
        zf.writestr("../outside.evtx", (corpus_dir / SMALL).read_bytes())
        zf.writestr("Guest/readme.txt", "collected by the customer")
    before = tree(tmp_path)
    store = tmp_path / "store"
    summary = ingest([inputs], store, jobs=2)
    assert summary.count("read") == 2 and summary.count("refused") == 1 and summary.exit_code == 1
    assert {k: v for k, v in tree(tmp_path).items() if not k.startswith("store/")} == before
    assert not list(store.glob(".ingest-*"))  # the scratch folder is gone
    stored = scan_events(store).group_by("source_path", "member").len().collect()
    assert set(stored["member"]) == {"Guest/System.evtx", "Guest/Firewall.evtx"}
    assert set(stored["source_path"]) == {str(inputs / "bundle.zip")}
    files = scan_files(store).collect()
    refused = files.filter(pl.col("member") == "../outside.evtx")
    assert refused.height == 1 and "'..'" in refused["errors"][0][0]
    readme = files.filter(pl.col("member") == "Guest/readme.txt")
    assert readme["kind"].to_list() == ["unknown"] and readme["errors"][0].to_list() == []


class CtrlCOnSecondFile(Recorder):
    """Raises KeyboardInterrupt (what Ctrl-C raises) once the reading of a second file begins."""

    def __init__(self, first_file_bytes: int) -> None:
        super().__init__()
        self.first_file_bytes = first_file_bytes

    def advance(self, nbytes: int) -> None:
        super().advance(nbytes)
        name, _, done = self.phases[-1]
        if name == "reading" and done > self.first_file_bytes:
            raise KeyboardInterrupt


def test_an_interrupted_ingest_keeps_finished_files_with_their_rows(corpus_dir, tmp_path):
    # the first log is large enough to be read alone: small logs are read and committed
    # in groups (SMALL_FILE_BYTES), and a group is kept whole or not at all
    inputs = [tmp_path / "a-System.evtx", tmp_path / "b-Small.evtx"]
    large_log(inputs[0], SMALL_FILE_BYTES)
    shutil.copyfile(corpus_dir / SMALL, inputs[1])
    store = tmp_path / "store"
    stop = CtrlCOnSecondFile(inputs[0].stat().st_size)
    with pytest.raises(KeyboardInterrupt):
        ingest(inputs, store, jobs=1, progress=stop)
    kept = scan_files(store).collect()
    assert kept["source_path"].to_list() == [str(inputs[0])]
    assert scan_events(store).select(pl.len()).collect().item() == kept["records"].sum() > 0
    mark = incomplete(store)  # the store says it lacks the rest, and which inputs
    assert mark is not None and mark.reason == "an ingest was interrupted (Ctrl-C)"
    assert mark.inputs == tuple(str(p) for p in inputs)
    again = ingest(inputs, store, jobs=1)  # the same command: only the rest is read
    assert incomplete(store) is None
    assert [(Path(o.source_path).name, o.status) for o in again.outcomes] == [
        ("b-Small.evtx", "read"),
        ("a-System.evtx", "repeated"),
    ]
    assert again.events_duplicate == 0


def test_a_store_inside_an_input_folder_is_refused(corpus_dir, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copyfile(corpus_dir / SMALL, bundle / "Small.evtx")
    with pytest.raises(LmtraceError, match="inside the input"):
        ingest([bundle], bundle / "store")  # never written into the customer's folder
    assert sorted(p.name for p in bundle.iterdir()) == ["Small.evtx"]


FIREWALL_LOG = (
    "#Version: 1.5\n#Software: Microsoft Windows Firewall\n#Time Format: Local\n"
    "#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn"
    " tcpack tcpwin icmptype icmpcode info path\n\n"
    "2024-05-01 10:00:01 DROP TCP 10.0.0.5 10.0.0.9 50123 3389 52 S 1 0 8192 - - - RECEIVE\n"
    "2024-05-01 10:00:02 ALLOW TCP 10.0.0.9 10.0.0.5 3389 50123 52 SA 1 1 8192 - - - SEND\n"
    "2024-05-01 10:00:03 DROP UDP 10.0.0.7 10.0.0.9 5353 5353 80 - - - - - - - RECEIVE\n"
)


def test_firewall_text_logs_are_recognized_and_made_utc(corpus_dir, tmp_path):
    with zipfile.ZipFile(tmp_path / "guest.zip", "w") as zf:
        zf.writestr("Firewall/pfirewall.log", FIREWALL_LOG)
        zf.write(corpus_dir / SMALL, "Logs/Security.evtx")
    firewall = PfirewallSettings(tz=parse_zone("+02:00"), computer="APP-VM01")
    drops = ReadSettings(filter=EventFilter(event_ids=frozenset({1, 4672})))  # 1: a DROP line
    summary = ingest([tmp_path / "guest.zip"], tmp_path / "store", drops, firewall=firewall)
    kinds = {o.member: (o.kind, o.status) for o in summary.outcomes}
    assert kinds["Firewall/pfirewall.log"] == ("pfirewall", "read")
    rows = scan_events(tmp_path / "store", EventFilter(providers=frozenset({"pfirewall.log"})))
    rows = rows.collect().sort("timestamp")
    assert rows["timestamp"].dt.strftime("%H:%M:%S").to_list() == ["08:00:01", "08:00:03"]
    assert set(rows["computer"]) == {"APP-VM01"} and set(rows["event_id"]) == {1}
    [row] = (
        scan_files(tmp_path / "store").filter(pl.col("kind") == "pfirewall").collect().to_dicts()
    )
    assert (row["records"], row["records_kept"]) == (3, 2)


def test_events_are_written_in_bounded_parts(corpus_dir, manifest, tmp_path):
    store = tmp_path / "store"
    summary = ingest([corpus_dir / SYSTEM], store, ReadSettings(batch_size=100))
    parts = sorted((store / "events").glob("*.parquet"))
    sizes = [pl.scan_parquet(p).select(pl.len()).collect().item() for p in parts]
    assert sum(sizes) == summary.events_stored == manifest_records(manifest, SYSTEM)
    assert len(parts) >= 3 and max(sizes) <= 100


def test_small_inputs_are_read_without_starting_processes(tmp_path):
    """jobs=None (the CLI's default) reads inputs under IN_PROCESS_BYTES in this process,
    and bigger ones with one process per CPU; a number given is used as it is."""
    from pipeline.discover import Source
    from pipeline.ingest import IN_PROCESS_BYTES, _Task, reading_processes

    def tasks(*sizes: int) -> list[_Task]:
        sources = [Source(tmp_path / f"{i}.evtx", str(i), None, s, "-", "evtx", False) for i, s in
                   enumerate(sizes)]  # fmt: skip
        return [_Task(i, s, ReadSettings(), PfirewallSettings(), tmp_path) for i, s in
                enumerate(sources)]  # fmt: skip

    assert reading_processes(tasks(1 << 20, 1 << 20), None) == 1
    assert reading_processes(tasks(IN_PROCESS_BYTES, 1), None) == (os.cpu_count() or 1)
    assert reading_processes(tasks(1 << 20), 3) == 3


def test_a_big_evtx_is_read_in_parts_as_one_reader_reads_it(tmp_path, monkeypatch):
    """With several processes, an .evtx of twice PART_BYTES or more is read in parts,
    by chunk ranges; the store's events and the files table are those of one reader.
    A part that does not read cleanly (a record's magic flipped: pyevtx-rs reads its
    chunk short) sends the file to be read again whole, and it says what a whole read
    says. (PART_BYTES is made two chunks here: the parent alone plans the parts.)"""
    import pipeline.ingest
    from parsers.evtx_layout import CHUNK_SIZE
    from parsers.evtx_reader import split_slots
    from tests import samples

    monkeypatch.setattr(pipeline.ingest, "PART_BYTES", 2 * CHUNK_SIZE)
    security = EXAMPLE / "APP-VM01" / "Security.evtx"
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(security, bundle / "clean.evtx")
    samples.flipped_record_magic(security, tmp_path, 2, 3).rename(bundle / "damaged.evtx")
    for name in ("clean.evtx", "damaged.evtx"):
        assert len(split_slots(bundle / name, 2 * CHUNK_SIZE) or []) == 3, name

    def stored(jobs: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        ingest([bundle], tmp_path / f"store{jobs}", jobs=jobs)
        events = scan_events(tmp_path / f"store{jobs}").collect()
        files = scan_files(tmp_path / f"store{jobs}").drop("seconds").collect()
        return events.sort(events.columns), files.sort("source_path")

    (events, files), (one_events, one_files) = stored(2), stored(1)
    assert events.equals(one_events) and files.equals(one_files)
    damaged = files.filter(pl.col("source_path").str.ends_with("damaged.evtx")).row(0, named=True)
    assert damaged["records_recovered"] > 0 and damaged["errors"]  # read whole, as it said


GROUPED = (
    SECURITY,
    SECURITY_AGAIN,  # repeats every event of the file before it
    BAD_CHUNK,  # partly read
    # python-evtx reads a chunk of it again
    "parsers/omerbenamram-evtx__Microsoft-Windows-HelloForBusiness%4Operational.evtx",
    "parsers/omerbenamram-evtx__sample-with-zero-data-size-event.evtx",  # a record not read
    SMALL,
)


def test_small_logs_read_as_a_group_are_stored_and_counted_as_one_by_one(corpus_dir, tmp_path):
    """Small logs are read as one group, staged into shared parts; the store, the files
    table and each file's outcome are those of ingesting the same files one at a time
    (each then a group of its own), repeats across files and unread records included."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for i, name in enumerate(GROUPED):
        shutil.copyfile(corpus_dir / name, bundle / f"{i}-{Path(name).name}")
    together = ingest([bundle], tmp_path / "together", jobs=1)
    one_by_one = [
        ingest([bundle / Path(o.source_path).name], tmp_path / "alone", jobs=1)
        for o in together.outcomes
    ]

    def outcome(o: FileOutcome) -> tuple:
        return (o.source_path, o.status, o.records, o.records_skipped, o.events_stored)

    assert [outcome(o) for o in together.outcomes] == [
        outcome(o) for s in one_by_one for o in s.outcomes
    ]
    assert together.events_stored == sum(s.events_stored for s in one_by_one)
    assert together.events_duplicate == sum(s.events_duplicate for s in one_by_one) > 0
    assert {o.status for o in together.outcomes} == {"read", "partial"}

    def stored(store: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
        events = scan_events(store).collect()
        files = scan_files(store).drop("seconds").collect()
        return events.sort(events.columns), files.sort("source_path")

    grouped, alone = stored(tmp_path / "together"), stored(tmp_path / "alone")
    assert grouped[0].equals(alone[0]) and grouped[1].equals(alone[1])
    assert len(list((tmp_path / "together" / "events").glob("*.parquet"))) < len(GROUPED)
