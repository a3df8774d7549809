"""INPUT... -> the files to read: safe walking of folders and (nested) archives.

Problem: a customer bundle is untrusted. It arrives as loose .evtx files,
folders, .zip / .tar / .tar.gz archives, archives inside archives, and it may
be damaged or hostile: member names that climb out of the extraction folder
(``../``, absolute paths), links and device nodes, zip bombs, archives nested
without end. lmtrace must read every log it can find, refuse the rest with a
reason the user can act on, never write outside its output folder and never
modify an input.

How: inputs are opened read-only. Archive members are streamed into a scratch
folder the caller owns (inside the output store) under generated names, so a
member name is never used as a file-system path; names with ``..`` or an
absolute root are refused anyway, because they mark a hostile archive. Each
member is hashed while it is copied, and its first bytes are shown to the
parsers, which say whether they recognize them (EVTX by its ``ElfFile``
signature, never by extension); archives are recognized by their own
signatures. Bombs are stopped by a total-bytes budget (also bounded by the free
disk space), a compression-ratio limit checked on declared sizes before
anything is written and again while streaming, and a nesting-depth limit.
Files with identical bytes (same SHA-256) are read once.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from parsers.evtx_layout import is_evtx
from parsers.model import LmtraceError
from parsers.pfirewall import is_pfirewall

HEAD_SIZE = 4096
"""How many leading bytes each parser is shown to recognize a file."""

RECOGNIZERS: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("evtx", is_evtx),
    ("pfirewall", is_pfirewall),
)
"""Each readable kind with the parser function that recognizes its first bytes.

A new parser adds one pair here and one reader in ingest.py's ``_READERS``.
"""

READABLE_KINDS: frozenset[str] = frozenset(kind for kind, _ in RECOGNIZERS)

_COPY_BLOCK = 1 << 20
_DISK_RESERVE = 1 << 30  # never fill the disk: keep this much free while extracting


class InputError(LmtraceError):
    """An input named on the command line does not exist or cannot be listed."""


@dataclass(frozen=True)
class Limits:
    """Caps that keep a hostile archive from filling the disk or recursing forever.

    ``max_ratio`` is judged only for members larger than ``ratio_grace_bytes``:
    a real, nearly empty 68 KiB .evtx deflates about 400:1 (measured on the
    public corpus), so small members cannot be judged by ratio; large ones
    with a ratio above 200:1 carry almost no data and are the shape of a bomb.
    """

    max_depth: int = 8
    max_total_bytes: int = 32 << 30
    max_ratio: float = 200.0
    ratio_grace_bytes: int = 16 << 20


@dataclass(frozen=True)
class Source:
    """One file to read: where its bytes are now and where the user gave them.

    ``path`` is the input itself, or its copy in the scratch folder when it came
    out of an archive (``extracted``); ``source_path`` is the user's file or
    outermost archive; ``member`` the path inside the archive(s), e.g.
    ``inner.tar/Guest/System.evtx``.
    """

    path: Path
    source_path: str
    member: str | None
    size: int
    sha256: str
    kind: str
    extracted: bool


@dataclass(frozen=True)
class Skipped:
    """Something found but not read, and why.

    ``problem`` is True when it could have held a log and was refused (unsafe
    or over a limit) or is damaged: the run is then partial. Files that are
    simply not logs, or repeat bytes already read, are not problems.
    """

    source_path: str
    member: str | None
    kind: str
    reason: str
    problem: bool
    size: int | None = None
    sha256: str | None = None


@dataclass
class Discovery:
    """Everything discover found, in input order."""

    sources: list[Source] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def where(source_path: str, member: str | None) -> str:
    """The one-line name of a file: ``path`` or ``archive!member``."""
    return f"{source_path}!{member}" if member else source_path


def kind_of(head: bytes) -> str:
    """The kind of a file from its first bytes: a readable kind, an archive, or unknown."""
    for kind, recognizes in RECOGNIZERS:
        if recognizes(head):
            return kind
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    return "unknown"


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


class _CountingReader:
    """A read-only file wrapper that counts the compressed bytes consumed."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.count += len(data)
        return data


class _Refused(Exception):
    """Internal: a member was refused while streaming; carries the reason."""


@dataclass
class _Walk:
    """The state of one discover() call: budget used, hashes seen, results."""

    scratch: Path
    limits: Limits
    known: Mapping[str, str]
    exclude: Path | None
    progress: Callable[[int], None] | None
    found: Discovery = field(default_factory=Discovery)
    seen: dict[str, str] = field(default_factory=dict)
    extracted_bytes: int = 0
    counter: int = 0

    # ----- results

    def _skip(
        self,
        source_path: str,
        member: str | None,
        kind: str,
        reason: str,
        *,
        problem: bool,
        size: int | None = None,
        sha256: str | None = None,
    ) -> None:
        self.found.skipped.append(Skipped(source_path, member, kind, reason, problem, size, sha256))

    def _advance(self, nbytes: int, depth: int) -> None:
        if self.progress is not None and depth <= 1 and nbytes > 0:
            self.progress(nbytes)

    # ----- entry points

    def input(self, path: Path) -> None:
        """One command-line input: a folder (walked) or a file."""
        if path.is_dir():
            for folder, dirs, files in os.walk(path, onerror=self._unlistable):
                dirs.sort()
                here = Path(folder)
                if self.exclude is not None and _inside(here, self.exclude):
                    dirs.clear()
                    continue
                for name in sorted(files):
                    entry = here / name
                    if entry.is_symlink():
                        self._skip(
                            str(entry),
                            None,
                            "unknown",
                            "symbolic link inside a folder: not followed",
                            problem=False,
                        )
                    else:
                        self._disk_file(entry)
        else:
            self._disk_file(path)

    def _unlistable(self, error: OSError) -> None:
        """A folder that cannot be listed is reported (os.walk would skip it silently)."""
        reason = f"cannot list folder: {error.strerror}"
        self._skip(str(error.filename), None, "unknown", reason, problem=True)

    def _disk_file(self, path: Path) -> None:
        """A file on disk given by the user: read in place, never copied."""
        source_path = str(path)
        try:
            if not stat.S_ISREG(path.stat().st_mode):
                self._skip(source_path, None, "unknown", "not a regular file", problem=False)
                return
            with path.open("rb") as f:
                head = f.read(HEAD_SIZE)
        except OSError as e:
            self._skip(source_path, None, "unknown", f"cannot open: {e.strerror}", problem=True)
            return
        kind = kind_of(head)
        size = path.stat().st_size
        if kind in READABLE_KINDS:
            try:
                sha256 = _hash_file(path, lambda n: self._advance(n, 1))
            except OSError as e:
                self._skip(source_path, None, kind, f"cannot read: {e.strerror}", problem=True)
                return
            self._readable(path, source_path, None, size, sha256, kind, extracted=False)
        elif kind in ("zip", "tar", "gzip"):
            self._archive(path, kind, source_path, None, depth=1)
        else:
            self._advance(size, 1)
            self._skip(
                source_path, None, "unknown", _unknown_reason(size), problem=False, size=size
            )

    # ----- classification of a file's bytes

    def _readable(
        self,
        path: Path,
        source_path: str,
        member: str | None,
        size: int,
        sha256: str,
        kind: str,
        *,
        extracted: bool,
    ) -> None:
        earlier = self.known.get(sha256) or self.seen.get(sha256)
        if earlier is not None:
            if extracted:
                path.unlink()
            stored = sha256 in self.known
            reason = (
                f"already in the store (read from {earlier})"
                if stored
                else f"same bytes as {earlier}: read once"
            )
            self._skip(source_path, member, kind, reason, problem=False, size=size, sha256=sha256)
            return
        self.seen[sha256] = where(source_path, member)
        self.found.sources.append(Source(path, source_path, member, size, sha256, kind, extracted))

    def _extracted(
        self, path: Path, source_path: str, member: str, size: int, sha256: str, depth: int
    ) -> None:
        """A member now copied to scratch: keep it, walk it, or drop it."""
        with path.open("rb") as f:
            head = f.read(HEAD_SIZE)
        kind = kind_of(head)
        if kind in READABLE_KINDS:
            self._readable(path, source_path, member, size, sha256, kind, extracted=True)
            return
        if kind in ("zip", "tar", "gzip"):
            self._archive(path, kind, source_path, member, depth + 1)
        else:
            self._skip(
                source_path,
                member,
                "unknown",
                _unknown_reason(size),
                problem=False,
                size=size,
                sha256=sha256,
            )
        path.unlink()

    # ----- archives

    def _archive(
        self, path: Path, kind: str, source_path: str, member: str | None, depth: int
    ) -> None:
        if depth > self.limits.max_depth:
            self._skip(
                source_path,
                member,
                kind,
                f"archive nested deeper than {self.limits.max_depth} levels: not opened",
                problem=True,
            )
            return
        if kind == "zip":
            self._zip(path, source_path, member, depth)
        elif kind == "tar" or _gzip_holds_tar(path):
            self._tar(path, source_path, member, depth)
        else:
            self._gzip(path, source_path, member, depth)

    def _zip(self, path: Path, source_path: str, parent: str | None, depth: int) -> None:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            self._skip(source_path, parent, "zip", f"not a readable zip archive: {e}", problem=True)
            return
        with archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            overlapping = _overlapping_members(infos)
            for index, info in enumerate(infos):
                member = _join(parent, info.filename)
                reason = (
                    unsafe_member_name(info.filename)
                    or _zip_entry_problem(info)
                    or (
                        "member overlaps another member's data (a zip bomb technique)"
                        if index in overlapping
                        else None
                    )
                    or self._declared_size_problem(info.file_size, info.compress_size)
                )
                if reason is not None:
                    self._skip(
                        source_path, member, "unknown", reason, problem=True, size=info.file_size
                    )
                else:
                    try:
                        with archive.open(info) as stream:
                            self._copy_member(
                                stream, lambda i=info: i.compress_size, source_path, member, depth
                            )
                    except (
                        zipfile.BadZipFile,
                        zlib.error,
                        EOFError,
                        OSError,
                        NotImplementedError,
                        RuntimeError,
                    ) as e:
                        self._skip(
                            source_path,
                            member,
                            "unknown",
                            f"damaged zip member: {e}",
                            problem=True,
                            size=info.file_size,
                        )
                self._advance(info.compress_size, depth)

    def _tar(self, path: Path, source_path: str, parent: str | None, depth: int) -> None:
        with path.open("rb") as f:
            raw = _CountingReader(f)
            try:
                with tarfile.open(fileobj=raw, mode="r|*") as archive:  # type: ignore[call-overload]
                    before = raw.count
                    for info in archive:
                        if not self._tar_member(archive, info, raw, source_path, parent, depth):
                            self._skip(
                                source_path,
                                parent,
                                "tar",
                                f"members after {info.name!r} not read: a compressed tar "
                                "stream cannot skip a refused member without inflating it",
                                problem=True,
                            )
                            return
                        self._advance(raw.count - before, depth)
                        before = raw.count
            except (tarfile.TarError, zlib.error, EOFError, OSError) as e:
                self._skip(
                    source_path,
                    parent,
                    "tar",
                    f"damaged tar archive (members after this point not read): {e}",
                    problem=True,
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
            self._skip(source_path, member, "unknown", too_big, problem=True, size=info.size)
            return False
        if reason is not None:
            self._skip(source_path, member, "unknown", reason, problem=True, size=info.size)
            return True
        stream = archive.extractfile(info)
        start = raw.count
        if stream is None:
            return True
        return self._copy_member(stream, lambda: raw.count - start, source_path, member, depth)

    def _gzip(self, path: Path, source_path: str, parent: str | None, depth: int) -> None:
        """A gzip stream that is not a tar: one compressed file (``System.evtx.gz``)."""
        name = path.name if parent is None else parent.rsplit("/", 1)[-1]
        inner = name[:-3] if name.lower().endswith(".gz") else name + ".out"
        member = _join(parent, inner) if parent else inner
        with path.open("rb") as f:
            raw = _CountingReader(f)
            try:
                with gzip.GzipFile(fileobj=raw, mode="rb") as stream:  # type: ignore[arg-type]
                    self._copy_member(stream, lambda: raw.count, source_path, member, depth)
                self._advance(raw.count, depth)
            except (OSError, EOFError, zlib.error) as e:
                self._skip(source_path, member, "gzip", f"damaged gzip stream: {e}", problem=True)

    # ----- limits and copying

    def _budget_problem(self, declared: int) -> str | None:
        if self.extracted_bytes + declared > self._budget():
            return (
                f"extracting it would pass the extraction cap of "
                f"{self._budget() / (1 << 30):.1f} GiB (total size or free disk space; "
                f"--max-extract-gib raises the cap)"
            )
        return None

    def _declared_size_problem(self, size: int, compressed: int) -> str | None:
        limits = self.limits
        if size > limits.ratio_grace_bytes and size > limits.max_ratio * max(compressed, 1):
            return (
                f"compression ratio {size / max(compressed, 1):,.0f}:1 exceeds "
                f"{limits.max_ratio:,.0f}:1 (a zip bomb?); not extracted "
                f"(--max-ratio raises the limit)"
            )
        return self._budget_problem(size)

    def _budget(self) -> int:
        free = shutil.disk_usage(self.scratch).free - _DISK_RESERVE
        return min(self.limits.max_total_bytes, self.extracted_bytes + max(free, 0))

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
        budget = self._budget()
        limits = self.limits
        try:
            with out.open("xb") as f:
                while block := stream.read(_COPY_BLOCK):
                    size += len(block)
                    if self.extracted_bytes + size > budget:
                        raise _Refused(self._budget_problem(size) or "extraction cap reached")
                    if size > limits.ratio_grace_bytes and size > limits.max_ratio * max(
                        consumed(), 1
                    ):
                        raise _Refused(
                            f"inflates more than {limits.max_ratio:,.0f}:1 while streaming "
                            f"(a zip bomb?); stopped after {size:,} bytes "
                            f"(--max-ratio raises the limit)"
                        )
                    digest.update(block)
                    f.write(block)
        except _Refused as refused:
            out.unlink()
            self._skip(source_path, member, "unknown", str(refused), problem=True)
            return False
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        self.extracted_bytes += size
        self._extracted(out, source_path, member, size, digest.hexdigest(), depth)
        return True


def discover(
    inputs: Iterable[Path],
    scratch: Path,
    limits: Limits | None = None,
    known: Mapping[str, str] | None = None,
    exclude: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> Discovery:
    """Find every file to read under ``inputs``; archive members land in ``scratch``.

    ``known`` maps SHA-256 -> where, for files already in the store (skipped).
    ``exclude`` is a folder never walked (the output store itself).
    ``progress(n)`` receives increments of input bytes handled.
    Raises InputError before doing any work when an input does not exist.
    """
    inputs = [Path(p) for p in inputs]
    for path in inputs:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
    scratch.mkdir(parents=True, exist_ok=True)
    walk = _Walk(
        scratch, limits or Limits(), known or {}, exclude.absolute() if exclude else None, progress
    )
    for path in inputs:
        walk.input(path.absolute())
    return walk.found


def input_bytes(inputs: Iterable[Path], exclude: Path | None = None) -> int:
    """Total size of the inputs (folders walked as discover walks them), for progress."""
    total = 0
    skip = exclude.absolute() if exclude else None
    for path in inputs:
        path = Path(path).absolute()
        if not path.is_dir():
            total += path.stat().st_size if path.is_file() else 0  # named: links followed
            continue
        for folder, dirs, files in os.walk(path):
            if skip is not None and _inside(Path(folder), skip):
                dirs.clear()
                continue
            total += sum(_size(Path(folder) / name) for name in files)
    return total


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() and not path.is_symlink() else 0
    except OSError:
        return 0


def _hash_file(path: Path, advance: Callable[[int], None]) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_COPY_BLOCK):
            digest.update(block)
            advance(len(block))
    return digest.hexdigest()


def _gzip_holds_tar(path: Path) -> bool:
    """Whether a gzip stream decompresses to a tar archive (looks at its first block)."""
    try:
        with gzip.open(path, "rb") as f:
            return kind_of(f.read(512)) == "tar"
    except (OSError, EOFError, zlib.error):
        return False


def _zip_entry_problem(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode):  # made on Unix: high bits are st_mode
        if stat.S_ISLNK(mode):
            return "symbolic link member: never extracted"
        if not stat.S_ISREG(mode):
            return "device or special file member: never extracted"
    if info.flag_bits & 0x1:
        return "encrypted member: cannot be read"
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
    name = name.replace("\\", "/").lstrip("/")
    return f"{parent}/{name}" if parent else name


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _unknown_reason(size: int) -> str:
    if size == 0:
        return "empty file"
    return "not a recognized log (neither EVTX nor a known text log)"
