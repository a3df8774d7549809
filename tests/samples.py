"""Named samples: corpus files by what is wrong with them, and damaged copies.

Each entry maps a defect name to a file of the public corpus (read in place)
with the MANIFEST.tsv note that says why it is interesting. The functions below
make damaged copies of a corpus file inside a test's ``tmp_path``; the input is
never modified.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from parsers.evtx_layout import CHUNK_SIZE, FILE_HEADER_SIZE
from parsers.evtx_writer import Damage, EventSpec, UserDataSpec, WriteOptions, write_evtx
from pipeline.simulate.layouts import LAYOUTS, VML_NAMESPACE
from pipeline.store import scan_events


@dataclass(frozen=True)
class Sample:
    file: str  # path relative to the corpus root, as in MANIFEST.tsv
    note: str  # what MANIFEST.tsv / upstream says about it


SAMPLES: dict[str, Sample] = {
    "bad_chunk_magic": Sample(
        "parsers/omerbenamram-evtx__sample_with_a_bad_chunk_magic.evtx",
        "zeroed chunk headers (bad chunk magic); expects 270 ok / 2 err",
    ),
    "dirty_chunks_beyond_header": Sample(
        "parsers/omerbenamram-evtx__2-vss_7-System.evtx",
        '"chunk past zeroes": header declares 4 chunks, 7 valid chunks lie beyond; 1160 ok',
    ),
    "bad_checksum_vss": Sample(
        "parsers/omerbenamram-evtx__2-vss_0-Microsoft-Windows-RemoteDesktopServices-RdpCoreTS%4Operational.evtx",
        "VSS-recovered, bad checksum; expects 1910 ok / 4 err",
    ),
    "no_crc32": Sample(
        "parsers/omerbenamram-evtx__Application_no_crc32.evtx",
        "file/chunk CRC32 not set; expects 17 ok",
    ),
    "zero_data_size": Sample(
        "parsers/omerbenamram-evtx__sample-with-zero-data-size-event.evtx",
        "one record with data size 0 -> 1 error; Hyper-V-Netvsc events in System",
    ),
    "garbage_chunks": Sample(
        "parsers/omerbenamram-evtx__sysmon.evtx",
        "non-zero, non-ElfChnk chunk headers past the used area; 358 ok / 8 err",
    ),
    "truncated_not_chunk_aligned": Sample(
        "parsers/plaso__System2.evtx",
        "plaso: truncated at 200000 bytes, last chunk incomplete; 194 ok",
    ),
    "empty_file": Sample("parsers/hayabusa__test2.evtx", "0-byte file"),
    "no_records": Sample(
        "network/tugix456__Microsoft-Windows-Windows_Firewall_With_Advanced_Security%4FirewallDiagnostics.evtx",
        "header-only log, no records",
    ),
    "security_5156": Sample(
        "network/EVTX-ATTACK-SAMPLES__DE_RDP_Tunnel_5156.evtx",
        "Security 5156/5158 (WFP allowed connection) and a UserData 1102",
    ),
    "unnamed_data": Sample(
        "attack/EVTX-ATTACK-SAMPLES__Zerologon_CVE-2020-1472_DFIR_System_NetLogon_Error_EventID_5805.evtx",
        "NetLogon 5805: unnamed <Data> (a string array) plus <Binary>",
    ),
    "userdata_repeated": Sample(
        "parsers/ts-evtx__Application.evtx",
        "RestartManager UserData with repeated <Application> children",
    ),
    "record_header_id_differs": Sample(
        "parsers/velocidex-evtx__Microsoft-Windows-CAPI2_Operational_EventID70.evtx",
        "single exported event: record-header id 1, System/EventRecordID 707",
    ),
}


def sample_path(corpus_dir: Path, name: str) -> Path:
    return corpus_dir / SAMPLES[name].file


def chunk_offset(index: int) -> int:
    return FILE_HEADER_SIZE + index * CHUNK_SIZE


def _copy(src: Path, tmp_path: Path, suffix: str) -> tuple[Path, bytearray]:
    dst = tmp_path / f"{src.stem}.{suffix}.evtx"
    return dst, bytearray(src.read_bytes())


def truncated(src: Path, tmp_path: Path, size: int) -> Path:
    """A copy cut to ``size`` bytes."""
    dst, data = _copy(src, tmp_path, f"cut{size}")
    dst.write_bytes(bytes(data[:size]))
    return dst


def zero_filled_chunk(src: Path, tmp_path: Path, index: int) -> Path:
    """A copy whose chunk ``index`` is all zero bytes (a wiped slot)."""
    dst, data = _copy(src, tmp_path, f"zero{index}")
    at = chunk_offset(index)
    data[at : at + CHUNK_SIZE] = bytes(len(data[at : at + CHUNK_SIZE]))
    dst.write_bytes(bytes(data))
    return dst


def chunk_header_byte(src: Path, tmp_path: Path, at: int, value: int) -> Path:
    """A copy whose first chunk header has byte ``at`` set to ``value`` (its checksum
    left as it was, as damage leaves it)."""
    dst, data = _copy(src, tmp_path, f"hdr{at}_{value}")
    data[chunk_offset(0) + at] = value
    dst.write_bytes(bytes(data))
    return dst


def flipped_chunk_magic(src: Path, tmp_path: Path, index: int) -> Path:
    """A copy whose chunk ``index`` has a damaged ElfChnk signature, data intact."""
    dst, data = _copy(src, tmp_path, f"magic{index}")
    at = chunk_offset(index)
    data[at : at + 8] = b"ElfJunk\x00"
    dst.write_bytes(bytes(data))
    return dst


def timeless_vmms_log(folder: Path) -> Path:
    """The quarantine-bug example's HV-NODE1 VMMS-Admin log (its 2 records written by the
    project's writer) in ``folder``, with one byte of the template's 'SystemTime' name
    overwritten: both records decode without a time, as a byte damaged there leaves them."""
    name = "Microsoft-Windows-Hyper-V-VMMS-Admin.evtx"
    src = Path(__file__).resolve().parents[1] / "examples/bundles/quarantine-bug/HV-NODE1" / name
    data = bytearray(src.read_bytes())
    at = data.find("SystemTime".encode("utf-16-le"))
    assert at > 0 and data.count("SystemTime".encode("utf-16-le")) == 1
    data[at] = 0x02
    out = folder / name
    out.write_bytes(bytes(data))
    return out


def corrupted_crcs(src: Path, tmp_path: Path) -> Path:
    """A copy with the file header CRC and every chunk's header and data CRCs inverted."""
    dst, data = _copy(src, tmp_path, "crc")
    data[124:128] = bytes(b ^ 0xFF for b in data[124:128])
    at = FILE_HEADER_SIZE
    while at + 128 <= len(data):
        if data[at : at + 8] == b"ElfChnk\x00":
            for lo in (at + 52, at + 124):  # records checksum, header checksum
                data[lo : lo + 4] = bytes(b ^ 0xFF for b in data[lo : lo + 4])
        at += CHUNK_SIZE
    dst.write_bytes(bytes(data))
    return dst


def mutated(src: Path, tmp_path: Path, seed: int, count: int) -> Path:
    """A copy with ``count`` random bytes overwritten past the file header (seeded)."""
    dst, data = _copy(src, tmp_path, f"mut{seed}")
    rng = random.Random(seed)
    for _ in range(count):
        data[rng.randrange(FILE_HEADER_SIZE, len(data))] = rng.randrange(256)
    dst.write_bytes(bytes(data))
    return dst


# --- bundles with other names ---------------------------------------------------


def _renamed(text: str, names: Mapping[str, str]) -> str:
    for old, new in names.items():
        text = text.replace(old, new).replace(old.lower(), new)
    return text


def _spec(row: dict, names: Mapping[str, str]) -> EventSpec:
    """A stored event back as a writer spec, with the names replaced."""
    payload = tuple((k, _renamed(v, names)) for k, v in json.loads(row["data"] or "{}").items())
    layout = next(
        (
            lay
            for lay in LAYOUTS.values()
            if lay.provider[0] == row["provider"] and lay.event_id == row["event_id"]
        ),
        None,
    )
    wrapper = layout.user_data if layout is not None else None
    return EventSpec(
        timestamp=row["timestamp"],
        provider=row["provider"],
        provider_guid=row["provider_guid"],
        event_id=row["event_id"],
        channel=row["channel"],
        computer=_renamed(row["computer"], names),
        level=row["level"],
        task=row["task"],
        opcode=row["opcode"],
        keywords=row["keywords"],
        version=row["version"],
        qualifiers=row["qualifiers"],
        process_id=row["process_id"],
        thread_id=row["thread_id"],
        user_sid=row["user_sid"],
        event_data=None if wrapper else payload,
        user_data=UserDataSpec(wrapper, VML_NAMESPACE, payload) if wrapper else None,
    )


def renamed_bundle(bundle: Path, store: Path, out: Path, names: Mapping[str, str]) -> Path:
    """``bundle`` (ingested into ``store``) written again into ``out`` by the project's EVTX
    writer, each name of ``names`` replaced in computer names and payload values: a
    bundle whose machines carry hostile names. Text logs are copied as they are."""
    events = scan_events(store).collect().filter(pl.col("engine") != "pfirewall")
    for (source,), rows in events.group_by("source_path"):
        target = out / Path(source).relative_to(bundle)
        target.parent.mkdir(parents=True, exist_ok=True)
        specs = (_spec(r, names) for r in rows.sort("record_id").iter_rows(named=True))
        write_evtx(target, specs)
    for log in bundle.rglob("pfirewall.log"):
        shutil.copyfile(log, out / log.relative_to(bundle))
    return out


def numbered_log(path: Path, records: int, per_chunk: int, damage: Damage | None = None) -> Path:
    """A VMMS-Admin log written by the project's writer: ``records`` events a second apart,
    ``per_chunk`` to a chunk (ids 1..records); record i names VM ``APP-VM<i>`` in four
    digits, a fixed width that a test can edit in place."""
    start = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
    events = (
        EventSpec(
            timestamp=start + timedelta(seconds=i),
            provider="Microsoft-Windows-Hyper-V-VMMS",
            event_id=20417,
            channel="Microsoft-Windows-Hyper-V-VMMS-Admin",
            computer="HV-NODE1",
            event_data=(("VmName", f"APP-VM{i:04d}"), ("Index", str(i))),
        )
        for i in range(records)
    )
    write_evtx(path, events, WriteOptions(damage, max_records_per_chunk=per_chunk))
    return path


def large_log(path: Path, min_bytes: int) -> Path:
    """A Security log of at least ``min_bytes``, written by the project's writer: numbered
    WFP events (5156) a few milliseconds apart."""
    start = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
    per_event = 256  # fewer bytes than a record of this shape takes (about 315)
    specs = (
        EventSpec(
            timestamp=start + timedelta(milliseconds=7 * i),
            provider="Microsoft-Windows-Security-Auditing",
            provider_guid="{54849625-5478-4994-a5ba-3e3b0328c30d}",
            event_id=5156,
            channel="Security",
            computer="HV-NODE1.corp.contoso.com",
            event_data=(("ProcessID", 4), ("SourcePort", str(49152 + i % 16000))),
        )
        for i in range(min_bytes // per_event + 1)
    )
    write_evtx(path, specs)
    assert path.stat().st_size >= min_bytes
    return path


# --- damage that engines do not report --------------------------------------------


def copied_chunk(src: Path, tmp_path: Path, source: int, target: int) -> Path:
    """A copy whose chunk ``target`` is overwritten by the bytes of chunk ``source``:
    it reads cleanly, twice, and the records chunk ``target`` held are gone."""
    dst, data = _copy(src, tmp_path, f"copy{source}to{target}")
    at, of = chunk_offset(target), chunk_offset(source)
    data[at : at + CHUNK_SIZE] = data[of : of + CHUNK_SIZE]
    dst.write_bytes(bytes(data))
    return dst


def record_offsets(data: bytes, index: int) -> list[int]:
    """File offsets of the records of chunk ``index``, walked by their sizes."""
    at = chunk_offset(index) + 512  # records follow the 512-byte chunk header
    end = chunk_offset(index) + CHUNK_SIZE
    offsets = []
    while at + 8 <= end and data[at : at + 4] == b"\x2a\x2a\x00\x00":
        offsets.append(at)
        at += int.from_bytes(data[at + 4 : at + 8], "little")
    return offsets


def flipped_record_magic(src: Path, tmp_path: Path, index: int, nth: int) -> Path:
    """A copy with one bit flipped in the magic of the ``nth`` record of chunk ``index``:
    pyevtx-rs drops the rest of that chunk, python-evtx reads on."""
    dst, data = _copy(src, tmp_path, f"flip{index}.{nth}")
    data[record_offsets(bytes(data), index)[nth]] ^= 0x01
    dst.write_bytes(bytes(data))
    return dst


def byte_set(src: Path, tmp_path: Path, offset: int, value: int) -> Path:
    """A copy with the byte at ``offset`` set to ``value`` (one targeted mutation)."""
    dst, data = _copy(src, tmp_path, f"set{offset:x}")
    data[offset] = value
    dst.write_bytes(bytes(data))
    return dst


def flat_bundle(example: Path, bundle: Path, firewall_log: str) -> Path:
    """An example bundle (one folder per machine) as a QA engineer flattened it: every
    machine's logs in one folder, each named MACHINE-log, the guest APP-VM01's Security log
    left out (so that its pfirewall.log is the only record of what it dropped), and its
    pfirewall.log named ``firewall_log``."""
    bundle.mkdir()
    for machine in sorted(p for p in example.iterdir() if p.is_dir()):
        for log in machine.iterdir():
            shutil.copy(log, bundle / f"{machine.name}-{log.name}")
    (bundle / "APP-VM01-Security.evtx").unlink()
    (bundle / "APP-VM01-pfirewall.log").rename(bundle / firewall_log)
    return bundle
