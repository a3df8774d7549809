"""INPUT... -> the files to read: which inputs hold logs, each read once, with a name to report.

Problem: a customer bundle is untrusted. It arrives as loose .evtx files,
folders, .zip / .tar / .tar.gz archives, archives inside archives, and it may
be damaged or hostile. lmtrace must read every log it can find, refuse the
rest with a reason the user can act on, never write outside its output folder
and never modify an input.

How: inputs are opened read-only; folders are walked in name order without
following links. The first bytes of each file are shown to the parsers, which
say whether they recognize them (EVTX by its ``ElfFile`` signature, or a first
chunk's behind a damaged one; never by extension); archives are recognized by
their own signatures and handed to pipeline/archives.py, which streams their
members into a scratch folder the caller owns (inside the output store), refuses
hostile members and stops bombs, and hands each copied member back here to be
classified the same way. Every
file found becomes a :class:`Source` (path, archive member, size, SHA-256,
kind) or a :class:`Skipped` with its reason. Files with identical bytes (same
SHA-256) are read once.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from parsers.evtx_layout import EVTX_HEAD_SIZE, is_evtx
from parsers.foreign_logs import foreign_log
from parsers.model import LmtraceError
from parsers.pfirewall import is_pfirewall
from pipeline.archives import COPY_BLOCK, ArchiveWalker, Limits, unsafe_member_name
from pipeline.names import as_text

__all__ = [
    "HEAD_SIZE",
    "READABLE_KINDS",
    "RECOGNIZERS",
    "SKIP_STATUS",
    "Discovery",
    "InputError",
    "Limits",
    "SkipCause",
    "SkipStatus",
    "Skipped",
    "Source",
    "discover",
    "display_path",
    "input_bytes",
    "kind_of",
    "unsafe_member_name",
]

HEAD_SIZE = EVTX_HEAD_SIZE
"""How many leading bytes each parser is shown to recognize a file (EVTX needs the
most: a first chunk's signature tells an EVTX file whose own header is damaged)."""

RECOGNIZERS: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("evtx", is_evtx),
    ("pfirewall", is_pfirewall),
)
"""Each readable kind with the parser function that recognizes its first bytes.

A new parser adds one pair here and one reader in ingest.py's ``_READERS``.
"""

READABLE_KINDS: frozenset[str] = frozenset(kind for kind, _ in RECOGNIZERS)
ARCHIVE_KINDS = ("zip", "7z", "tar", "gzip")
"""Kinds pipeline/archives.py opens (each recognized by its signature in :func:`kind_of`)."""


SkipCause = Literal[
    "not a log", "repeat", "other log form", "link", "unreadable", "refused", "damaged"
]
"""Why a file found was not read (its reason says it in words, with the details)."""

SkipStatus = Literal["skipped", "repeated", "refused"]

SKIP_STATUS: Mapping[SkipCause, SkipStatus] = MappingProxyType(
    {
        # Not logs: listed, with nothing to fix and no problem to report.
        "not a log": "skipped",  # bytes of no log kind (a README, ground_truth.json, empty)
        "repeat": "repeated",  # a log's bytes already read here or in the store: read once
        # Logs sent that lmtrace did not read: each is a problem (named on stderr, in the
        # files table's errors and the report, exit code 1), because the verdict then
        # stands without them, and a support engineer must know what to ask for instead.
        "other log form": "refused",  # an XML / CSV / text export, a legacy .evt
        "link": "refused",  # a symbolic link inside a folder (to a file or a folder)
        "unreadable": "refused",  # cannot be opened, read or listed (permissions)
        "refused": "refused",  # an archive member unsafe, over a limit, or encrypted
        "damaged": "refused",  # an archive, or its rest, that cannot be read
    }
)
"""What each cause makes of a file not read: the one place that decides which are
problems. A file that could have held events the customer meant to send is one; a
file that is not a log, or repeats one, is only listed."""


class InputError(LmtraceError):
    """An input named on the command line does not exist or cannot be listed."""


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
    name_escaped: bool = False  # source_path and member written by pipeline.names


@dataclass(frozen=True)
class Skipped:
    """Something found but not read: why in words (``reason``) and as a :data:`SkipCause`.

    ``same_as`` names the file (``path`` or ``archive!member``) whose bytes a repeat
    holds: the events are stored once, under that file's name.
    """

    source_path: str
    member: str | None
    kind: str
    reason: str
    cause: SkipCause
    size: int | None = None
    sha256: str | None = None
    name_escaped: bool = False  # source_path and member written by pipeline.names
    same_as: str | None = None

    @property
    def status(self) -> SkipStatus:
        return SKIP_STATUS[self.cause]

    @property
    def problem(self) -> bool:
        """A log sent that was not read: the run is then partial (:data:`SKIP_STATUS`)."""
        return self.status == "refused"


@dataclass
class Discovery:
    """Everything discover found, in input order."""

    sources: list[Source] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def display_path(source_path: str, member: str | None) -> str:
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
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    return "unknown"


@dataclass
class _Walk:
    """The state of one discover() call: hashes seen, results; archives open in ``archives``."""

    known: Mapping[str, str]
    exclude: Path | None
    progress: Callable[[int], None] | None
    scratch: InitVar[Path]
    limits: InitVar[Limits]
    archives: ArchiveWalker = field(init=False)
    found: Discovery = field(default_factory=Discovery)
    seen: dict[str, str] = field(default_factory=dict)

    def __post_init__(self, scratch: Path, limits: Limits) -> None:
        self.archives = ArchiveWalker(scratch, limits, self, kind_of)

    # ----- results (also what the archive walker reports, see archives.Finds)

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
        same_as: str | None = None,
    ) -> None:
        source_path, member, escaped = as_text(source_path, member)
        self.found.skipped.append(
            Skipped(source_path, member, kind, reason, cause, size, sha256, escaped, same_as)
        )

    def advance(self, nbytes: int, depth: int) -> None:
        if self.progress is not None and depth <= 1 and nbytes > 0:
            self.progress(nbytes)

    # ----- entry points

    def input(self, path: Path) -> None:
        """One command-line input: a folder (walked) or a file.

        A folder's files are hashed ahead by a few threads (hashlib lets go of the GIL),
        and classified here one by one in walk order, so the results are those of a walk
        that hashed each file in turn: it took 7% of a 150 MB bundle's ingest, alone.
        """
        if not path.is_dir():
            self._disk_file(path, _peek(path, lambda n: self.advance(n, 1)))
            return
        entries = list(self._walk(path))
        pool = ThreadPoolExecutor(_HASHING_THREADS, thread_name_prefix="lmtrace-hash")
        stop = threading.Event()  # set when the walk ends early: running hashes end too
        try:
            peeks = [
                pool.submit(_peek, e, None, stop) if isinstance(e, Path) else None for e in entries
            ]
            for entry, peek in zip(entries, peeks, strict=True):
                if isinstance(entry, OSError):
                    reason = f"cannot list folder: {entry.strerror}"
                    self.skip(str(entry.filename), None, "unknown", reason, cause="unreadable")
                elif isinstance(entry, str):
                    self.skip(entry, None, "unknown", _link_reason(entry), cause="link")
                elif peek is not None:
                    peeked = peek.result()
                    self.advance(peeked.hashed, 1)
                    self._disk_file(entry, peeked)
        finally:
            # A Ctrl-C (or an error) waits for no whole-file hash: those running stop at
            # their next block, the queued ones never start.
            stop.set()
            pool.shutdown(cancel_futures=True)

    def _walk(self, path: Path) -> Iterator[Path | str | OSError]:
        """A folder's contents in name order: files (Path), symbolic links to files or
        folders (their name: os.walk lists a link to a folder among the folders and does
        not enter it) and folders that cannot be listed (the error; os.walk would skip
        them silently)."""
        errors: list[OSError] = []
        for folder, dirs, files in os.walk(path, onerror=errors.append):
            yield from errors
            errors.clear()
            dirs.sort()
            here = Path(folder)
            if self.exclude is not None and _inside(here, self.exclude):
                dirs.clear()
                continue
            links = [name for name in dirs if (here / name).is_symlink()]
            for name in sorted(files + links):
                entry = here / name
                yield str(entry) if entry.is_symlink() else entry
        yield from errors

    def _disk_file(self, path: Path, peeked: _Peeked) -> None:
        """A file on disk given by the user: read in place, never copied."""
        source_path = str(path)
        if peeked.problem is not None:
            self.skip(source_path, None, peeked.kind, peeked.problem, cause="unreadable")
        elif not peeked.regular:
            self.skip(source_path, None, "unknown", "not a regular file", cause="not a log")
        elif peeked.kind in READABLE_KINDS and peeked.sha256 is not None:
            self._readable(
                path, source_path, None, peeked.size, peeked.sha256, peeked.kind, extracted=False
            )
        elif peeked.kind in ARCHIVE_KINDS:
            self.archives.open(path, peeked.kind, source_path, None, depth=1)
        else:
            self.advance(peeked.size, 1)
            cause, reason = _unknown(peeked.size, peeked.head)
            self.skip(source_path, None, "unknown", reason, cause=cause, size=peeked.size)

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
        text_path, text_member, escaped = as_text(source_path, member)
        if earlier is not None:
            if extracted:
                path.unlink()
            stored = sha256 in self.known
            reason = (
                f"already in the store (read from {earlier})"
                if stored
                else f"same bytes as {earlier}: read once"
            )
            self.skip(
                source_path, member, kind, reason, cause="repeat", size=size, sha256=sha256,
                same_as=earlier,
            )  # fmt: skip
            return
        self.seen[sha256] = display_path(text_path, text_member)
        self.found.sources.append(
            Source(path, text_path, text_member, size, sha256, kind, extracted, escaped)
        )

    def extracted(
        self, path: Path, source_path: str, member: str, size: int, sha256: str, depth: int
    ) -> None:
        """A member now copied to scratch: keep it, walk it, or drop it."""
        with path.open("rb") as f:
            head = f.read(HEAD_SIZE)
        kind = kind_of(head)
        if kind in READABLE_KINDS:
            self._readable(path, source_path, member, size, sha256, kind, extracted=True)
            return
        if kind in ARCHIVE_KINDS:
            self.archives.open(path, kind, source_path, member, depth + 1)
        else:
            cause, reason = _unknown(size, head)
            self.skip(source_path, member, "unknown", reason, cause=cause, size=size, sha256=sha256)
        path.unlink()


def discover(
    inputs: Iterable[Path],
    scratch: Path,
    limits: Limits | None = None,
    known: Mapping[str, str] | None = None,
    exclude: Path | None = None,
    progress: Callable[[int], None] | None = None,
    password: str | None = None,
) -> Discovery:
    """Find every file to read under ``inputs``; archive members land in ``scratch``.

    ``password`` opens encrypted zip and 7z archives; it is never shown or stored.

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
        known or {}, exclude.absolute() if exclude else None, progress, scratch, limits or Limits()
    )
    walk.archives.password = password
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


_HASHING_THREADS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class _Peeked:
    """What a look at a file on disk found: its kind from its first bytes, and the
    SHA-256 of a readable one (``hashed`` bytes read for it); ``problem`` is why it
    could not be opened or read, with the kind known by then."""

    regular: bool = True
    kind: str = "unknown"
    head: bytes = b""  # the first bytes, for the reason an unknown file is not read
    size: int = 0
    sha256: str | None = None
    hashed: int = 0
    problem: str | None = None


def _peek(
    path: Path, advance: Callable[[int], None] | None, stop: threading.Event | None = None
) -> _Peeked:
    """Look at ``path`` (``advance(n)`` per block hashed, when given); never raises.

    Once ``stop`` is set, hashing ends at the next block and the result has no digest
    (nobody reads it: the walk that wanted it has ended)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return _Peeked(regular=False)
        with path.open("rb") as f:
            head = f.read(HEAD_SIZE)
    except OSError as e:
        return _Peeked(problem=f"cannot open: {e.strerror}")
    kind = kind_of(head)
    try:
        size = path.stat().st_size
    except OSError as e:
        return _Peeked(kind=kind, problem=f"cannot read: {e.strerror}")
    if kind not in READABLE_KINDS:
        return _Peeked(kind=kind, head=head, size=size)
    digest = hashlib.sha256()
    hashed = 0
    try:
        with path.open("rb") as f:
            while block := f.read(COPY_BLOCK):
                if stop is not None and stop.is_set():
                    return _Peeked(kind=kind, size=size, problem="not hashed: the walk ended")
                digest.update(block)
                hashed += len(block)
                if advance is not None:
                    advance(len(block))
    except OSError as e:
        problem = f"cannot read: {e.strerror}"
        return _Peeked(kind=kind, size=size, hashed=0 if advance else hashed, problem=problem)
    # the bytes went to the progress as they were read, or go now
    return _Peeked(kind=kind, size=size, sha256=digest.hexdigest(), hashed=0 if advance else hashed)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _unknown(size: int, head: bytes) -> tuple[SkipCause, str]:
    """Why a file of no readable kind is not read: an event log in another form (a
    problem: :data:`SKIP_STATUS`), or not a log."""
    if size == 0:
        return "not a log", "empty file"
    foreign = foreign_log(head)
    if foreign is not None:
        return "other log form", foreign
    return "not a log", "not a recognized log (neither EVTX nor a known text log)"


def _link_reason(path: str) -> str:
    """Why a symbolic link inside a folder is not read: links are never followed (one
    could lead out of the bundle, or around in a loop), so the file it names is not read."""
    if os.path.isdir(path):
        return "symbolic link to a folder inside a folder: not followed (nothing under it is read)"
    return "symbolic link inside a folder: not followed"
