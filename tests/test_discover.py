"""discover on real .evtx bytes and on hostile archives built here from them.

Every archive test snapshots the whole tmp tree before and after, so "nothing
was written outside the output folder" and "the input was not modified" are
checked on the file system, not inferred from the code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from pipeline.discover import InputError, Limits, discover, input_bytes

SMALL = "parsers/python-evtx__issue_38.evtx"  # 1 record, one chunk
OTHER = "parsers/dissect.eventlog__TestLogX.evtx"  # 5 records


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (relative path -> SHA-256) and every folder."""
    tree: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            tree[rel] = "link"
        elif path.is_dir():
            tree[rel] = "dir"
        else:
            tree[rel] = sha256(path)
    return tree


def outside(tree: dict[str, str], folder: str) -> dict[str, str]:
    return {k: v for k, v in tree.items() if k != folder and not k.startswith(folder + "/")}


@pytest.fixture
def layout(tmp_path: Path, corpus_dir: Path) -> tuple[Path, Path, Path]:
    """(inputs folder, output folder, scratch inside it) with two real logs copied in."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copyfile(corpus_dir / SMALL, inputs / "Small.evtx")
    shutil.copyfile(corpus_dir / OTHER, inputs / "Other.evtx")
    out = tmp_path / "out"
    return inputs, out, out / "scratch"


def run(inputs: list[Path], out: Path, scratch: Path, limits: Limits | None = None):
    out.mkdir(exist_ok=True)
    return discover(inputs, scratch, limits, exclude=out)


# ----- ordinary inputs


def test_a_folder_is_classified_in_walk_order_with_each_oddity_named(
    layout: tuple[Path, Path, Path],
) -> None:
    """Files are hashed ahead by threads but judged in walk order: the first of two equal
    logs is read, links and other non-files are named, and progress counts each byte."""
    inputs, _, scratch = layout
    (inputs / "a").mkdir()
    shutil.copyfile(inputs / "Small.evtx", inputs / "a" / "Copy.evtx")  # read once
    (inputs / "a" / "Link.evtx").symlink_to(inputs / "Other.evtx")
    os.mkfifo(inputs / "a" / "Pipe")
    (inputs / "a" / "notes.txt").write_text("collected by the customer")
    (inputs / "b").mkdir()
    shutil.copyfile(inputs / "Other.evtx", inputs / "b" / "Other.evtx")  # after the first
    counted: list[int] = []
    found = discover([inputs], scratch, progress=counted.append)
    assert [Path(s.source_path).relative_to(inputs).as_posix() for s in found.sources] == [
        "Other.evtx",
        "Small.evtx",
    ]
    skipped = [
        (Path(s.source_path).relative_to(inputs).as_posix(), s.reason) for s in found.skipped
    ]
    assert skipped == [
        ("a/Copy.evtx", f"same bytes as {inputs / 'Small.evtx'}: read once"),
        ("a/Link.evtx", "symbolic link inside a folder: not followed"),
        ("a/Pipe", "not a regular file"),
        ("a/notes.txt", "not a recognized log (neither EVTX nor a known text log)"),
        ("b/Other.evtx", f"same bytes as {inputs / 'Other.evtx'}: read once"),
    ]
    assert sum(counted) == input_bytes([inputs])
    assert all(s.sha256 == sha256(Path(s.source_path)) for s in found.sources)


def test_folders_and_nested_archives_name_each_member(layout):
    inputs, out, scratch = layout
    (inputs / "notes.txt").write_text("not a log")
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        tar.add(inputs / "Other.evtx", arcname="Guest/System.evtx")
    with zipfile.ZipFile(inputs / "logs.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inner.tar.gz", inner.getvalue())
        zf.write(inputs / "Small.evtx", "Host/Small.evtx")
    expected = {
        "Small.evtx": sha256(inputs / "Small.evtx"),
        "Other.evtx": sha256(inputs / "Other.evtx"),
    }
    found = run([inputs / "logs.zip"], out, scratch)
    members = {s.member: s for s in found.sources}
    assert set(members) == {"inner.tar.gz/Guest/System.evtx", "Host/Small.evtx"}
    for source in found.sources:
        assert source.source_path == str((inputs / "logs.zip").absolute())
        assert source.kind == "evtx" and source.extracted
        assert source.path.parent == scratch  # the copy lives in scratch, under a generated name
        assert sha256(source.path) == source.sha256
    assert members["Host/Small.evtx"].sha256 == expected["Small.evtx"]
    assert members["inner.tar.gz/Guest/System.evtx"].sha256 == expected["Other.evtx"]
    assert not found.skipped


def test_kind_comes_from_the_bytes_not_the_extension(layout):
    inputs, out, scratch = layout
    (inputs / "Other.evtx").rename(inputs / "export.dat")
    (inputs / "System.evtx").write_text("<Events>an XML export, not EVTX</Events>")
    (inputs / "empty.evtx").write_bytes(b"")
    found = run([inputs], out, scratch)
    kinds = {Path(s.source_path).name: s.kind for s in found.sources}
    assert kinds == {"export.dat": "evtx", "Small.evtx": "evtx"}
    skipped = {Path(s.source_path).name: s for s in found.skipped}
    assert set(skipped) == {"System.evtx", "empty.evtx"}
    assert all(s.kind == "unknown" and not s.problem for s in skipped.values())
    assert skipped["empty.evtx"].reason == "empty file"
    # loose files are read in place, never copied
    assert all(not s.extracted and s.path.parent == inputs.absolute() for s in found.sources)
    assert not scratch.exists() or not any(scratch.iterdir())


def test_an_evtx_whose_file_header_lost_its_signature_is_still_evtx(layout):
    """A first chunk's ElfChnk, 4096 bytes in, tells an EVTX file whose own ElfFile
    signature is damaged; a file with neither stays unknown."""
    inputs, out, scratch = layout
    damaged = bytearray((inputs / "Other.evtx").read_bytes())
    damaged[:8] = bytes(8)
    (inputs / "Other.evtx").write_bytes(bytes(damaged))
    damaged[4096:4104] = bytes(8)
    (inputs / "Neither.evtx").write_bytes(bytes(damaged))
    found = run([inputs], out, scratch)
    assert {Path(s.source_path).name: s.kind for s in found.sources} == {
        "Other.evtx": "evtx",
        "Small.evtx": "evtx",
    }
    assert [Path(s.source_path).name for s in found.skipped] == ["Neither.evtx"]


def test_event_logs_in_forms_lmtrace_does_not_read_are_named(layout, corpus_dir):
    """Exports customers send instead of .evtx are refused, as problems (the verdict
    stands without their events), with what they are and what to ask for; a note beside
    them is not a log, and stays quiet."""
    inputs, out, scratch = layout
    xml = (
        '<?xml version="1.0" encoding="UTF-16"?>\r\n<Events><Event xmlns="http://schemas.'
        'microsoft.com/win/2004/08/events/event"><System><EventID>14</EventID></System>'
    )
    (inputs / "System.xml").write_bytes(b"\xff\xfe" + xml.encode("utf-16-le"))
    (inputs / "System.csv").write_text(
        "Level,Date and Time,Source,Event ID,Task Category\n"
        'Information,3/4/2025 9:11:18 AM,Microsoft-Windows-Hyper-V-Netvsc,14,None,"x"\n'
    )
    (inputs / "events.csv").write_text(
        '#TYPE System.Diagnostics.Eventing.Reader.EventLogRecord\n"Id","Version"\n'
    )
    (inputs / "SysEvent.Evt").write_bytes(struct.pack("<I", 0x30) + b"LfLe" + bytes(40))
    (inputs / "notes.txt").write_text("VM lost network after migration\n")
    real = corpus_dir / "parsers/ts-evtx__System.xml"  # an XML rendering of a real System log
    shutil.copyfile(real, inputs / "real.xml")
    found = run([inputs], out, scratch)
    reasons = {Path(s.source_path).name: s.reason for s in found.skipped}
    refused = {Path(s.source_path).name for s in found.skipped if s.status == "refused"}
    assert refused == {"System.xml", "real.xml", "System.csv", "events.csv", "SysEvent.Evt"}
    assert reasons["System.xml"].startswith("an event log exported as XML, not EVTX")
    assert reasons["real.xml"] == reasons["System.xml"]
    assert reasons["System.csv"].startswith("an event list exported as CSV or text")
    assert reasons["events.csv"].startswith("events exported by PowerShell's Export-Csv")
    assert reasons["SysEvent.Evt"].startswith("a legacy .evt event log")
    assert all("wevtutil epl" in reasons[n] for n in ("System.xml", "System.csv", "events.csv"))
    assert reasons["notes.txt"] == "not a recognized log (neither EVTX nor a known text log)"


def test_identical_bytes_are_read_once(layout):
    inputs, out, scratch = layout
    with zipfile.ZipFile(inputs / "again.zip", "w") as zf:
        zf.write(inputs / "Small.evtx", "copy/Small.evtx")
    shutil.copyfile(inputs / "Small.evtx", inputs / "Small-copy.evtx")
    found = run([inputs], out, scratch)
    small = sha256(inputs / "Small.evtx")
    assert [s.sha256 for s in found.sources].count(small) == 1
    repeats = [s for s in found.skipped if s.sha256 == small]
    assert len(repeats) == 2
    assert all("same bytes as" in s.reason and not s.problem for s in repeats)
    assert list(scratch.iterdir()) == []  # the extracted duplicate was removed at once


def test_missing_input_is_a_user_error(tmp_path):
    with pytest.raises(InputError, match=r"nope\.evtx: no such file"):
        discover([tmp_path / "nope.evtx"], tmp_path / "scratch")


# ----- hostile archives


def refused(found, member: str):
    matches = [s for s in found.skipped if s.member == member]
    assert len(matches) == 1, found.skipped
    assert matches[0].problem
    return matches[0].reason


def test_traversal_and_absolute_members_are_refused(layout, tmp_path):
    inputs, out, scratch = layout
    payload = (inputs / "Small.evtx").read_bytes()
    with zipfile.ZipFile(inputs / "evil.zip", "w") as zf:
        zf.writestr("../../escaped.evtx", payload)
        zf.writestr("/tmp/absolute.evtx", payload)
        zf.writestr("C:\\Windows\\drive.evtx", payload)
        zf.writestr("ok/Small.evtx", payload)
    before = snapshot(tmp_path)
    found = run([inputs / "evil.zip"], out, scratch)
    assert "'..'" in refused(found, "../../escaped.evtx")
    # named as stored: a rewritten name would look like a harmless member's
    assert "absolute" in refused(found, "/tmp/absolute.evtx")
    assert "absolute" in refused(found, "C:\\Windows\\drive.evtx")
    assert [s.member for s in found.sources] == ["ok/Small.evtx"]
    after = snapshot(tmp_path)
    assert outside(after, "out") == outside(before, "out")  # inputs unchanged, nothing new
    assert not list(tmp_path.parent.glob("escaped.evtx"))


def test_links_and_devices_in_a_tar_are_never_extracted(layout, tmp_path):
    inputs, out, scratch = layout
    with tarfile.open(inputs / "links.tar", "w") as tar:
        tar.add(inputs / "Small.evtx", arcname="real/Small.evtx")
        for name, kind, target in (
            ("sym.evtx", tarfile.SYMTYPE, "/etc/passwd"),
            ("hard.evtx", tarfile.LNKTYPE, "real/Small.evtx"),
            ("tty.evtx", tarfile.CHRTYPE, ""),
            ("pipe.evtx", tarfile.FIFOTYPE, ""),
        ):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tar.addfile(info)
    before = snapshot(tmp_path)
    found = run([inputs / "links.tar"], out, scratch)
    assert "link member" in refused(found, "sym.evtx")
    assert "link member" in refused(found, "hard.evtx")
    assert "device or special file" in refused(found, "tty.evtx")
    assert "device or special file" in refused(found, "pipe.evtx")
    assert [s.member for s in found.sources] == ["real/Small.evtx"]
    assert outside(snapshot(tmp_path), "out") == outside(before, "out")
    assert not [p for p in out.rglob("*") if p.is_symlink()]


def test_symlink_member_of_a_zip_is_refused(layout):
    inputs, out, scratch = layout
    with zipfile.ZipFile(inputs / "link.zip", "w") as zf:
        info = zipfile.ZipInfo("System.evtx")
        info.create_system = 3  # Unix: the high 16 bits of external_attr are st_mode
        info.external_attr = 0o120777 << 16  # S_IFLNK
        zf.writestr(info, "/etc/passwd")
    found = run([inputs / "link.zip"], out, scratch)
    assert "symbolic link" in refused(found, "System.evtx")
    assert not found.sources


def deflated_zeros(size: int, prefix: bytes = b"", suffix: bytes = b"") -> tuple[bytes, int]:
    """Raw deflate of prefix + `size` zero bytes + suffix, built without inflating it.

    After a full flush the compressor starts afresh, so the compressed form of
    one 16 MiB zero segment repeats exactly; the CRC32 is computed over the
    real bytes, so the stream is valid.
    """
    segment = 16 << 20
    assert size % segment == 0
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    zeros = comp.compress(bytes(segment)) + comp.flush(zlib.Z_FULL_FLUSH)
    assert comp.compress(bytes(segment)) + comp.flush(zlib.Z_FULL_FLUSH) == zeros
    stream = head + zeros * (size // segment) + comp.compress(suffix) + comp.flush()
    crc = zlib.crc32(prefix)
    block = bytes(64 << 20)
    for _ in range(size // len(block)):
        crc = zlib.crc32(block, crc)
    return stream, zlib.crc32(suffix, crc)


def zip_with_raw_member(name: str, deflated: bytes, size: int, crc: int, copies: int = 1) -> bytes:
    """A zip whose central directory lists `copies` entries for one local member."""
    encoded = name.encode()
    local = struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(deflated), size, len(encoded), 0
    )
    central = b"".join(
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            8,
            0,
            0x21,
            crc,
            len(deflated),
            size,
            len(encoded),
            0,
            0,
            0,
            0,
            0,
            0,
        )
        + encoded
        for _ in range(copies)
    )
    start = len(local) + len(encoded) + len(deflated)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, copies, copies, len(central), start, 0)
    return local + encoded + deflated + central + end


BOMB_SIZE = 2 << 30  # 2 GiB of zeros


def test_zip_bomb_is_refused_before_anything_is_written(layout, tmp_path):
    inputs, out, scratch = layout
    deflated, crc = deflated_zeros(BOMB_SIZE)
    bomb = inputs / "bomb.zip"
    bomb.write_bytes(zip_with_raw_member("System.evtx", deflated, BOMB_SIZE, crc))
    assert bomb.stat().st_size < 3 << 20  # a few MiB on disk...
    with zipfile.ZipFile(bomb) as zf, zf.open("System.evtx") as member:
        assert zf.getinfo("System.evtx").file_size == BOMB_SIZE  # ...2 GiB when inflated
        assert member.read(1 << 20) == bytes(1 << 20)
    before = snapshot(tmp_path)
    found = run([bomb], out, scratch)
    reason = refused(found, "System.evtx")
    assert "compression ratio" in reason and "--max-ratio" in reason
    assert list(scratch.iterdir()) == []
    assert outside(snapshot(tmp_path), "out") == outside(before, "out")


def test_tar_gz_bomb_is_stopped_while_streaming(layout, tmp_path):
    inputs, out, scratch = layout
    info = tarfile.TarInfo("Security.evtx")
    info.size = BOMB_SIZE
    deflated, crc = deflated_zeros(BOMB_SIZE, prefix=info.tobuf(), suffix=bytes(1024))
    total = 512 + BOMB_SIZE + 1024
    gz = (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        + deflated
        + struct.pack("<II", crc, total & 0xFFFFFFFF)
    )
    bomb = inputs / "bundle.tar.gz"
    bomb.write_bytes(gz)
    with tarfile.open(bomb, "r:gz") as tar:  # a real tar.gz: its member is 2 GiB
        member = tar.next()
        assert member is not None and member.size == BOMB_SIZE
    before = snapshot(tmp_path)
    found = run([bomb], out, scratch)
    reason = refused(found, "Security.evtx")
    assert "while streaming" in reason and "--max-ratio" in reason
    [rest] = [s for s in found.skipped if s.member is None]
    assert rest.kind == "tar" and "members after 'Security.evtx' not read" in rest.reason
    stopped_after = int(reason.split("stopped after ")[1].split(" bytes")[0].replace(",", ""))
    assert stopped_after < 64 << 20  # a few MiB reached the disk, then were removed
    assert list(scratch.iterdir()) == []
    assert outside(snapshot(tmp_path), "out") == outside(before, "out")


def test_overlapping_zip_members_are_refused(layout):
    inputs, out, scratch = layout
    data = (inputs / "Small.evtx").read_bytes()
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = comp.compress(data) + comp.flush()
    (inputs / "overlap.zip").write_bytes(
        zip_with_raw_member("a.evtx", deflated, len(data), zlib.crc32(data), copies=3)
    )
    found = run([inputs / "overlap.zip"], out, scratch)
    assert len(found.skipped) == 3
    assert all("overlaps another member" in s.reason and s.problem for s in found.skipped)
    assert not found.sources


class _Unseekable(io.RawIOBase):
    """A file zipfile cannot seek in: it then writes each member's sizes and CRC-32 in
    a descriptor after its data (flag bit 3), as streaming zip tools do."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[no-untyped-def]
        self.data += b
        return len(b)


@pytest.mark.parametrize("streamed", [False, True], ids=["sizes-first", "descriptors"])
def test_a_zip_cut_short_gives_the_members_before_the_cut(layout, corpus_dir, streamed):
    """zipfile refuses a zip without its central directory (an upload cut short): every
    log in it was lost. The members are read from their local headers; the one the cut
    reaches is read as far as it goes, and the archive is named as a problem."""
    inputs, out, scratch = layout
    big = (corpus_dir / "parsers/omerbenamram-evtx__2-vss_7-System.evtx").read_bytes()
    members = {
        "a/Small.evtx": (inputs / "Small.evtx").read_bytes(),
        "a/": b"",
        "b/Other.evtx": (inputs / "Other.evtx").read_bytes(),
        "c/System.evtx": big,
    }
    sink = _Unseekable() if streamed else io.BytesIO()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    whole = bytes(sink.data if streamed else sink.getvalue())
    assert bool(struct.unpack_from("<H", whole, 6)[0] & 0x8) is streamed
    cut_at = whole.index(b"PK\x03\x04c/System.evtx"[:4], whole.index(b"c/System.evtx") - 30)
    cut_at += 30 + len("c/System.evtx") + 20_000  # inside the last member's data
    (inputs / "bundle.zip").write_bytes(whole[:cut_at])
    for name in ("Small.evtx", "Other.evtx"):
        (inputs / name).unlink()
    found = run([inputs / "bundle.zip"], out, scratch)
    got = {s.member: s for s in found.sources}
    assert set(got) == {"a/Small.evtx", "b/Other.evtx", "c/System.evtx"}
    for name in ("a/Small.evtx", "b/Other.evtx"):
        assert got[name].sha256 == hashlib.sha256(members[name]).hexdigest()
    cut = got["c/System.evtx"]
    assert 0 < cut.size < len(big)
    (problem,) = [s for s in found.skipped if s.problem]
    assert problem.member is None and "3 member(s) read from local headers" in problem.reason
    assert "c/System.evtx is cut short" in problem.reason


def test_a_bomb_in_a_zip_without_its_directory_is_refused_by_its_declared_sizes(layout):
    """The salvage of a cut zip goes through the same guards: a member of zeros whose
    local header declares a ratio past the limit is refused before a byte is written,
    and nothing after it is read (a header that lies: the next test)."""
    inputs, out, scratch = layout
    limits = Limits()
    zeros = bytes(limits.ratio_grace_bytes * 2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.evtx", zeros)
        zf.write(inputs / "Small.evtx", "after.evtx")
    whole = buffer.getvalue()
    (inputs / "cut.zip").write_bytes(whole[: whole.index(b"PK\x01\x02")])  # no directory
    found = run([inputs / "cut.zip"], out, scratch, limits)
    assert not found.sources
    assert "exceeds 200:1 (a zip bomb?)" in refused(found, "bomb.evtx")
    assert list(scratch.iterdir()) == []


def test_a_bomb_in_a_cut_zip_does_not_fill_memory(tmp_path):
    """1 GiB of zeros deflates to 1 MiB; inflated a megabyte of input at a time it
    filled a gibibyte of memory before the ratio limit could see it. In a process of
    its own, the discovery of such a cut zip stays far below that."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1 << 20)
    deflated = b"".join(squeeze.compress(block) for _ in range(1024)) + squeeze.flush()
    # its header lies (it declares the compressed size as the size), as a bomb's does,
    # so that only the ratio limit while streaming can stop it
    local = zip_with_raw_member("bomb.evtx", deflated, len(deflated), 0)
    (tmp_path / "cut.zip").write_bytes(local[: local.index(b"PK\x01\x02")])
    probe = (
        "import resource, sys; from pathlib import Path; from pipeline.discover import discover;"
        "found = discover([Path(sys.argv[1])], Path(sys.argv[2]), None, exclude=None);"
        "assert not found.sources;"
        "assert any('inflates more than' in s.reason for s in found.skipped);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "cut.zip"), str(tmp_path / "scratch")],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert int(out.stdout.split()[-1]) < 400, out.stdout  # MB; the bomb alone is 1,024


def test_total_extraction_cap(layout):
    inputs, out, scratch = layout
    with zipfile.ZipFile(inputs / "two.zip", "w") as zf:
        zf.write(inputs / "Small.evtx", "a.evtx")
        zf.write(inputs / "Other.evtx", "b.evtx")
    size = (inputs / "Small.evtx").stat().st_size
    found = run([inputs / "two.zip"], out, scratch, Limits(max_total_bytes=size + 10))
    assert [s.member for s in found.sources] == ["a.evtx"]
    assert "extraction cap" in refused(found, "b.evtx")


def test_nesting_twenty_deep_is_capped(layout, tmp_path):
    inputs, out, scratch = layout
    blob = (inputs / "Small.evtx").read_bytes()
    name = "Small.evtx"
    for level in range(20, 0, -1):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr(name, blob)
        blob, name = buffer.getvalue(), f"level{level}.zip"
    (inputs / name).write_bytes(blob)
    before = snapshot(tmp_path)
    found = run([inputs / name], out, scratch)
    assert not found.sources
    [capped] = found.skipped
    assert capped.problem and capped.kind == "zip"
    assert capped.reason == "archive nested deeper than 8 levels: not opened"
    assert capped.member == "/".join(f"level{n}.zip" for n in range(2, 10))
    assert list(scratch.iterdir()) == []
    assert outside(snapshot(tmp_path), "out") == outside(before, "out")
    # the nest is real: with a deeper limit the log at the bottom is found
    deep = run([inputs / name], out, out / "scratch2", Limits(max_depth=25))
    [source] = deep.sources
    assert source.member.endswith("level20.zip/Small.evtx")
    assert source.sha256 == sha256(inputs / "Small.evtx")


def test_damaged_archives_are_reported(layout):
    inputs, out, scratch = layout
    with zipfile.ZipFile(inputs / "good.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(inputs / "Other.evtx", "Other.evtx")
    data = (inputs / "good.zip").read_bytes()
    (inputs / "cut.zip").write_bytes(data[: len(data) // 2])
    with tarfile.open(inputs / "good.tar.gz", "w:gz") as tar:
        tar.add(inputs / "Other.evtx", "Other.evtx")
    data = (inputs / "good.tar.gz").read_bytes()
    (inputs / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    found = run([inputs / "cut.zip", inputs / "cut.tar.gz"], out, scratch)
    reasons = {Path(s.source_path).name: s.reason for s in found.skipped if s.problem}
    assert reasons["cut.zip"].startswith("not a readable zip archive")
    assert "Other.evtx is cut short" in reasons["cut.zip"]  # read from its local header
    assert reasons["cut.tar.gz"].startswith("damaged")
    (salvaged,) = found.sources
    assert Path(salvaged.source_path).name == "cut.zip" and salvaged.member == "Other.evtx"
    assert salvaged.size < (inputs / "Other.evtx").stat().st_size


def test_a_gzip_of_one_log_is_read_as_that_log(layout):
    inputs, out, scratch = layout
    raw = (inputs / "Small.evtx").read_bytes()
    (inputs / "System.evtx.gz").write_bytes(gzip.compress(raw))
    found = run([inputs / "System.evtx.gz"], out, scratch)
    [source] = found.sources
    assert (source.member, source.kind) == ("System.evtx", "evtx")
    assert source.sha256 == hashlib.sha256(raw).hexdigest()


def test_a_ctrl_c_while_logs_are_hashed_waits_for_no_whole_hash(tmp_path: Path) -> None:
    """A folder's logs are hashed ahead by threads. A Ctrl-C (raised here by the progress
    once the first, small log is hashed) ends discover at once: the hashes already running
    stop at their next block. Before, it waited for each of them to read its whole file:
    here 16 GiB each (sparse, so no disk space), seconds at the least."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "a.evtx").write_bytes(b"ElfFile\0" + bytes(4096))
    for name in ("b.evtx", "c.evtx", "d.evtx"):
        with (folder / name).open("wb") as f:
            f.write(b"ElfFile\0")
            f.truncate(16 << 30)

    def interrupt(nbytes: int) -> None:
        raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        discover([folder], tmp_path / "scratch", progress=interrupt)
    assert time.monotonic() - started < 5
