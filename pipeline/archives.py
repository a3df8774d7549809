"""A customer archive may be hostile: stream its members out without traversal, links or bombs.

Problem: bundles arrive as .zip / .tar / .tar.gz archives, archives inside
archives, and one of them may be damaged or built to hurt: member names that
climb out of the extraction folder (``../``, absolute paths), links and device
nodes, zip bombs (huge ratios, overlapping members), archives nested without
end. Every log inside must still be found, the rest refused with a reason the
user can act on, nothing written outside the scratch folder, no input modified.

How: archives are opened read-only and their members streamed one at a time
into a scratch folder the caller owns, under generated names, so a member name
is never used as a file-system path; names with ``..`` or an absolute root are
refused anyway, because they mark a hostile archive. Each member is hashed
while it is copied. Bombs are stopped by a cap on the bytes extracted in all, a
compression-ratio limit checked on declared sizes before anything is written and
again while streaming, and a nesting-depth limit; separately, a member that would
leave less than a set amount of free space on the scratch disk is refused, with
its own message (the two have different remedies). A zip whose central directory
is gone (cut short) is read from its members' local headers (pipeline/zip_salvage.py),
under the same guards. What a copied member is,
and whether it is read, walked again or dropped, is the caller's decision
(:class:`Finds`): pipeline/discover.py classifies files, this module only opens
archives.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from pipeline.limits import Limits
from pipeline.writes import WriteError, os_cause
from pipeline.zip_names import bad_zip_errors, open_zip
from pipeline.zip_salvage import MemberStream, local_members

if TYPE_CHECKING:  # discover imports this module
    from pipeline.discover import SkipCause

COPY_BLOCK = 1 << 20
"""How many bytes are copied or hashed at a time."""
_7Z_NEEDS_PASSWORD = "encrypted 7z archive: give its password with --password"


def unsafe_member_name(name: str) -> str | None:
    """Why an archive member name is refused, or None when it is harmless."""
    if "\x00" in name:
        return "member name contains a NUL byte"
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        return "absolute member path (would be written outside the extraction folder)"
    if ".." in normalized.split("/"):
        return "member path with '..' (would be written outside the extraction folder)"
    return None


class Finds(Protocol):
    """What an archive walk hands back to the walk over the inputs."""

    def skip(
        self,
        source_path: str,
        member: str | None,
        kind: str,
        reason: str,
        *,
        cause: SkipCause,
        size: int | None = None,
        sha256: str | None = None,
    ) -> None:
        """A member (or the rest of an archive) that was not extracted, and why."""

    def advance(self, nbytes: int, depth: int) -> None:
        """``nbytes`` more of an archive at nesting ``depth`` were consumed."""

    def extracted(
        self, path: Path, source_path: str, member: str, size: int, sha256: str, depth: int
    ) -> None:
        """A member now copied to ``path`` in scratch: keep it, walk it, or drop it."""


class _CountingReader:
    """A read-only file wrapper that counts the compressed bytes consumed."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.count += len(data)
        return data


class Refused(Exception):
    """A member was refused while streaming (here or in pipeline/seven_zip.py); carries the
    reason."""


@dataclass
class ArchiveWalker:
    """Opens archives for one discover() call and keeps its extraction budget.

    ``kind_of`` is the caller's classification of a file's first bytes; it
    tells a tar inside a gzip stream from one compressed file.
    """

    scratch: Path
    limits: Limits
    finds: Finds
    kind_of: Callable[[bytes], str]
    extracted_bytes: int = 0
    counter: int = 0
    password: str | None = field(default=None, repr=False)  # never shown, logged or stored

    def open(self, path: Path, kind: str, source_path: str, member: str | None, depth: int) -> None:
        """Walk the archive at ``path``; ``kind`` is ``zip``, ``7z``, ``tar`` or ``gzip``."""
        if depth > self.limits.max_depth:
            self.finds.skip(
                source_path,
                member,
                kind,
                f"archive nested deeper than {self.limits.max_depth} levels: not opened",
                cause="refused",
            )
            return
        if kind == "zip":
            self._zip(path, source_path, member, depth)
        elif kind == "7z":
            self._7z(path, source_path, member, depth)
        elif kind == "tar" or _gzip_holds_tar(path, self.kind_of):
            self._tar(path, source_path, member, depth)
        else:
            self._gzip(path, source_path, member, depth)

    def _zip(self, path: Path, source_path: str, parent: str | None, depth: int) -> None:
        bad_zip = bad_zip_errors(self.password)
        with ExitStack() as opened:
            try:
                archive = opened.enter_context(open_zip(path, self.password))
            except bad_zip as e:  # no readable directory: cut short or damaged
                self._salvage_zip(path, source_path, parent, depth, e)
                return
            except (OSError, ValueError) as e:
                self.finds.skip(
                    source_path, parent, "zip", f"not a readable zip archive: {e}", cause="damaged"
                )
                return
            infos = [i for i in archive.infolist() if not i.is_dir()]
            overlapping = _overlapping_members(infos)
            for index, info in enumerate(infos):
                member = _join(parent, info.filename)
                reason = (
                    unsafe_member_name(info.filename)
                    or _zip_entry_problem(info, self.password is not None)
                    or (
                        "member overlaps another member's data (a zip bomb technique)"
                        if index in overlapping
                        else None
                    )
                    or self._declared_size_problem(info.file_size, info.compress_size)
                )
                if reason is not None:
                    self.finds.skip(
                        source_path, member, "unknown", reason, cause="refused", size=info.file_size
                    )
                else:
                    try:
                        with archive.open(info) as stream:
                            self._copy_member(
                                stream, lambda i=info: i.compress_size, source_path, member, depth
                            )
                    except (
                        *bad_zip,
                        zlib.error,
                        EOFError,
                        OSError,
                        NotImplementedError,
                        RuntimeError,
                        UnicodeDecodeError,  # a local header's name flagged UTF-8, and not
                    ) as e:
                        wrong = info.flag_bits & 0x1 and "password" in str(e).lower()
                        self.finds.skip(
                            source_path,
                            member,
                            "unknown",
                            "encrypted member: the password given (--password) does not open it"
                            if wrong
                            else f"damaged zip member: {e}",
                            cause="refused" if wrong else "damaged",
                            size=info.file_size,
                        )
                self.finds.advance(info.compress_size, depth)

    def _salvage_zip(
        self, path: Path, source_path: str, parent: str | None, depth: int, error: Exception
    ) -> None:
        """Members of a zip whose directory zipfile cannot read, from their local headers
        (pipeline/zip_salvage.py), under the same guards; one problem names the archive,
        how many members were read, and the one the file cuts short, read as far as it goes."""
        read, cut = 0, None
        with path.open("rb") as f:
            for found in local_members(f):
                if found.name.endswith("/"):  # a folder: its (empty) data passed over
                    if found.stream is not None and not _passed_over(found.stream):
                        break
                    continue
                member = _join(parent, found.name)
                problem = (
                    found.problem
                    or unsafe_member_name(found.name)
                    or (
                        None
                        if found.compressed is None
                        else self._declared_size_problem(found.size, found.compressed)
                    )
                )
                if problem is not None or found.stream is None:
                    self.finds.skip(source_path, member, "unknown", problem or "", cause="refused")
                    continue
                stream = found.stream
                try:
                    copied = self._copy_member(
                        stream, lambda s=stream: s.consumed, source_path, member, depth
                    )
                except zlib.error as e:
                    self.finds.skip(
                        source_path, member, "unknown", f"damaged zip member: {e}", cause="damaged"
                    )
                    break
                self.finds.advance(stream.consumed, depth)
                if not copied:
                    break
                read += 1
                if not stream.complete:
                    cut = member
                    break
        said = f"not a readable zip archive ({error}): {read} member(s) read from local headers"
        if cut is not None:
            said += f"; {cut} is cut short or damaged, and read as far as it goes"
        self.finds.skip(source_path, parent, "zip", said, cause="damaged")

    def _7z(self, path: Path, source_path: str, parent: str | None, depth: int) -> None:
        """A 7-Zip archive (py7zr), its members checked as a zip's are, then decompressed in
        one pass: a solid archive would otherwise be decompressed once per member. py7zr is
        imported here, when an archive needs it: a plain folder does not pay for it."""
        import py7zr

        from pipeline.seven_zip import SevenZipSink

        size = path.stat().st_size
        try:
            archive = py7zr.SevenZipFile(path, mode="r", password=self.password)
            infos = archive.list()
        except py7zr.PasswordRequired:
            self.finds.skip(source_path, parent, "7z", _7Z_NEEDS_PASSWORD, cause="refused")
            return
        except Exception as e:  # py7zr raises many types for damaged or misdecrypted bytes
            maybe = " (the --password given is wrong, or it is damaged)" if self.password else ""
            self.finds.skip(
                source_path,
                parent,
                "7z",
                f"not a readable 7z archive{maybe}: {_why(e)}",
                cause="damaged",
            )
            return
        with archive:
            wanted: dict[str, str] = {}
            for info in infos:
                if info.is_directory:
                    continue
                member = _join(parent, info.filename)
                reason = (
                    unsafe_member_name(info.filename)
                    or ("symbolic link member: never extracted" if info.is_symlink else None)
                    or self._declared_size_problem(info.uncompressed, info.compressed or size)
                )
                if reason is not None:
                    self.finds.skip(
                        source_path,
                        member,
                        "unknown",
                        reason,
                        cause="refused",
                        size=info.uncompressed,
                    )
                else:
                    wanted[info.filename] = member
            sink = SevenZipSink(self, source_path, wanted, size)
            try:
                if wanted:
                    archive.extract(targets=list(wanted), factory=sink)
            except Refused as refused:
                self.finds.skip(source_path, sink.current, "unknown", str(refused), cause="refused")
            except WriteError:
                raise
            except py7zr.PasswordRequired:  # a readable listing, encrypted members
                self.finds.skip(source_path, parent, "7z", _7Z_NEEDS_PASSWORD, cause="refused")
            except Exception as e:
                self.finds.skip(
                    source_path,
                    parent,
                    "7z",
                    "damaged 7z archive or wrong password (members not yet extracted are not "
                    f"read): {_why(e)}",
                    cause="damaged",
                )
            finally:
                sink.discard_partial()
        for out, member, nbytes, sha256 in sink.done:  # in this thread, in archive order
            self.extracted_bytes += nbytes
            self.finds.extracted(out, source_path, member, nbytes, sha256, depth)
        self.finds.advance(size, depth)

    def _tar(self, path: Path, source_path: str, parent: str | None, depth: int) -> None:
        with path.open("rb") as f:
            raw = _CountingReader(f)
            try:
                with tarfile.open(fileobj=raw, mode="r|*") as archive:  # type: ignore[call-overload]
                    before = raw.count
                    for info in archive:
                        if not self._tar_member(archive, info, raw, source_path, parent, depth):
                            self.finds.skip(
                                source_path,
                                parent,
                                "tar",
                                f"members after {info.name!r} not read: a compressed tar "
                                "stream cannot skip a refused member without inflating it",
                                cause="refused",
                            )
                            return
                        self.finds.advance(raw.count - before, depth)
                        before = raw.count
            except (tarfile.TarError, zlib.error, EOFError, OSError) as e:
                self.finds.skip(
                    source_path,
                    parent,
                    "tar",
                    f"damaged tar archive (members after this point not read): {e}",
                    cause="damaged",
                )

    def _tar_member(
        self,
        archive: tarfile.TarFile,
        info: tarfile.TarInfo,
        raw: _CountingReader,
        source_path: str,
        parent: str | None,
        depth: int,
    ) -> bool:
        """Handle one tar member; False when the rest of the archive must be abandoned."""
        if info.isdir():
            return True
        member = _join(parent, info.name)
        reason = unsafe_member_name(info.name)
        if reason is None and (info.issym() or info.islnk()):
            reason = f"link member (to {info.linkname!r}): never extracted"
        elif reason is None and not info.isreg():
            reason = "device or special file member: never extracted"
        elif reason is None and (too_big := self._budget_problem(info.size)):
            self.finds.skip(
                source_path, member, "unknown", too_big, cause="refused", size=info.size
            )
            return False
        if reason is not None:
            self.finds.skip(source_path, member, "unknown", reason, cause="refused", size=info.size)
            return True
        stream = archive.extractfile(info)
        start = raw.count
        if stream is None:
            return True
        return self._copy_member(stream, lambda: raw.count - start, source_path, member, depth)

    def _gzip(self, path: Path, source_path: str, parent: str | None, depth: int) -> None:
        """A gzip stream that is not a tar: one compressed file (``System.evtx.gz``)."""
        name = path.name if parent is None else parent.replace("\\", "/").rsplit("/", 1)[-1]
        inner = name[:-3] if name.lower().endswith(".gz") else name + ".out"
        member = _join(parent, inner) if parent else inner
        with path.open("rb") as f:
            raw = _CountingReader(f)
            try:
                with gzip.GzipFile(fileobj=raw, mode="rb") as stream:  # type: ignore[arg-type]
                    self._copy_member(stream, lambda: raw.count, source_path, member, depth)
                self.finds.advance(raw.count, depth)
            except (OSError, EOFError, zlib.error) as e:
                self.finds.skip(
                    source_path, member, "gzip", f"damaged gzip stream: {e}", cause="damaged"
                )

    # ----- limits and copying

    def _budget_problem(self, size: int) -> str | None:
        """Why ``size`` more bytes cannot be extracted: the cap, or the disk; None if they can."""
        return self._cap_problem(size) or self._space_problem(size, self._room())

    def _cap_problem(self, size: int) -> str | None:
        cap = self.limits.max_total_bytes
        if self.extracted_bytes + size <= cap:
            return None
        return (
            f"extracting it would pass the extraction cap of {_amount(cap)} for all "
            f"archives together ({_amount(self.extracted_bytes)} extracted before it; "
            "--max-extract-gib raises the cap)"
        )

    def _room(self) -> int:
        """Bytes that may still be written to the scratch disk, keeping ``min_free_bytes``."""
        return shutil.disk_usage(self.scratch).free - self.limits.min_free_bytes

    def _space_problem(self, size: int, room: int) -> str | None:
        if size <= room:
            return None
        keep = self.limits.min_free_bytes
        return (
            f"not enough free disk space to extract it: {_amount(room + keep)} free on "
            f"{_mount_point(self.scratch)}, and lmtrace keeps {_amount(keep)} "
            "free (free some space, write --out to another disk, or lower --min-free-gib)"
        )

    def _declared_size_problem(self, size: int, compressed: int) -> str | None:
        limits = self.limits
        if size > limits.ratio_grace_bytes and size > limits.max_ratio * max(compressed, 1):
            return (
                f"compression ratio {size / max(compressed, 1):,.0f}:1 exceeds "
                f"{limits.max_ratio:,.0f}:1 (a zip bomb?); not extracted "
                f"(--max-ratio raises the limit)"
            )
        return self._budget_problem(size)

    def _copy_member(
        self,
        stream: BinaryIO,
        consumed: Callable[[], int],
        source_path: str,
        member: str,
        depth: int,
    ) -> bool:
        """Stream one member to scratch, hashing it and enforcing the limits as it grows.

        Returns False when the member was refused part-way (the stream was left
        in the middle of it).
        """
        self.counter += 1
        out = self.scratch / f"member-{self.counter:06d}"
        digest = hashlib.sha256()
        size = 0
        room = self._room()
        limits = self.limits
        try:
            with _scratch_file(out, f"{source_path}!{member}") as write:
                while block := stream.read(COPY_BLOCK):
                    size += len(block)
                    too_big = self._cap_problem(size) or self._space_problem(size, room)
                    if too_big:
                        raise Refused(too_big)
                    if size > limits.ratio_grace_bytes and size > limits.max_ratio * max(
                        consumed(), 1
                    ):
                        raise Refused(
                            f"inflates more than {limits.max_ratio:,.0f}:1 while streaming "
                            f"(a zip bomb?); stopped after {size:,} bytes "
                            f"(--max-ratio raises the limit)"
                        )
                    digest.update(block)
                    write(block)
        except Refused as refused:
            out.unlink()
            self.finds.skip(source_path, member, "unknown", str(refused), cause="refused")
            return False
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        self.extracted_bytes += size
        self.finds.extracted(out, source_path, member, size, digest.hexdigest(), depth)
        return True


@contextmanager
def _scratch_file(path: Path, what: str) -> Iterator[Callable[[bytes], object]]:
    """A new scratch file to copy a member into, as its write function. A failure of
    the scratch disk (full, read-only) is a WriteError that ends the ingest; the
    callers' handlers for damaged archives (which catch OSError) must not take it
    for a damaged member."""

    def failed(exc: OSError) -> WriteError:
        code, words = os_cause(exc) or (None, str(exc))
        return WriteError(path, f"{words}, extracting {what}", code)

    try:
        f = path.open("xb", buffering=0)
    except OSError as exc:
        raise failed(exc) from None

    def write(block: bytes) -> object:
        try:
            return f.write(block)
        except OSError as exc:
            raise failed(exc) from None

    with f:
        yield write


def _passed_over(stream: MemberStream, most: int = COPY_BLOCK) -> bool:
    """Read a folder entry's data, which should be empty, up to ``most`` bytes: whether
    it ended (a folder with more is not a folder, and the walk stops there)."""
    seen = 0
    while seen <= most and (block := stream.read(COPY_BLOCK)):
        seen += len(block)
    return seen <= most and stream.ended


def _mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path``: the disk a user can free."""
    path = path.absolute()
    while not path.is_mount() and path != path.parent:
        path = path.parent
    return path


def _amount(nbytes: int) -> str:
    """Bytes in the unit a user reads best: GiB, MiB or KiB, one decimal."""
    for unit, shift in (("GiB", 30), ("MiB", 20)):
        if abs(nbytes) >= 1 << shift:
            return f"{nbytes / (1 << shift):.1f} {unit}"
    return f"{nbytes / 1024:.1f} KiB"


def _gzip_holds_tar(path: Path, kind_of: Callable[[bytes], str]) -> bool:
    """Whether a gzip stream decompresses to a tar archive (looks at its first block)."""
    try:
        with gzip.open(path, "rb") as f:
            return kind_of(f.read(512)) == "tar"
    except (OSError, EOFError, zlib.error):
        return False


def _why(error: Exception) -> str:
    """An archive library's error in words, never echoing more than its first line."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:200] if text else type(error).__name__


def _zip_entry_problem(info: zipfile.ZipInfo, have_password: bool = False) -> str | None:
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode):  # made on Unix: high bits are st_mode
        if stat.S_ISLNK(mode):
            return "symbolic link member: never extracted"
        if not stat.S_ISREG(mode):
            return "device or special file member: never extracted"
    if info.flag_bits & 0x1 and not have_password:
        return "encrypted member: give the archive's password with --password"
    return None


def _overlapping_members(infos: list[zipfile.ZipInfo]) -> set[int]:
    """Indexes of members whose data starts inside another member's data.

    In an honest zip each member's local header lies past the previous
    member's compressed bytes; overlapping members let a few kilobytes
    inflate to petabytes.
    """
    ordered = sorted(range(len(infos)), key=lambda i: infos[i].header_offset)
    overlapping: set[int] = set()
    for before, after in itertools.pairwise(ordered):
        start = infos[before].header_offset
        if infos[after].header_offset < start + infos[before].compress_size:
            overlapping.update((before, after))
    return overlapping


def _join(parent: str | None, name: str) -> str:
    """A member's name inside its parent archive's, as the archive stores it: a name is
    evidence, and one rewritten (``/tmp/x`` as ``tmp/x``, ``C:\\W\\x`` as ``C:/W/x``) can
    make a refused member look like a harmless one. Controls are escaped where it is
    shown (pipeline/printable.py); it is never a path on disk (members are copied to
    generated names)."""
    return f"{parent}/{name}" if parent else name
