"""An analysis folder is one case: which inputs it holds and how they were read.

Problem: a support engineer analyses the customer's bundle into ``--out``, then a day
later runs the next bundle, or the same one with a corrected ``--guest-tz``, into the
same folder. Silently merging two customers' bundles gives a verdict built from both;
silently keeping rows read with the wrong zone gives the old, wrong verdict again.

How: ``OUT/case.json`` records the case's inputs (absolute paths, in the order given)
and the options that decide how their bytes become rows (the EVTX engine, the
pfirewall.log zone and computer). A run into a used ``OUT``:

* with the same inputs: analyses again (the store already holds them);
* with other inputs: refused, naming both ways on (``--add`` to add them to this
  case, or another ``--out``), unless ``--add`` says they are late logs of the case;
* with other read options given: the store is emptied and every input of the case is
  read again with the new options, and the run says so. An option not given keeps the
  case's value.

``case.json`` holds no secret: an archive password is never part of it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from parsers.model import LmtraceError
from pipeline.store import stores_nothing

CASE_FILE = "case.json"
CASE_FORMAT = "lmtrace-case"


class CaseError(LmtraceError):
    """The output folder cannot take this run (another case, a file, inside the bundle)."""


@dataclass(frozen=True)
class ReadOptions:
    """What decides how a log's bytes become stored rows: change one, read again."""

    engine: str
    guest_tz: str | None
    firewall_computer: str | None

    def over(self, before: ReadOptions) -> ReadOptions:
        """These options where given, the case's where not: a re-run (or ``--add``) that
        leaves out ``--guest-tz`` reads as the case did, rather than read every input
        again without it. (The engine's default, rust, counts as not given.)"""
        return ReadOptions(
            self.engine if self.engine != "rust" else before.engine,
            self.guest_tz if self.guest_tz is not None else before.guest_tz,
            self.firewall_computer or before.firewall_computer,
        )

    def changes(self, before: ReadOptions) -> list[str]:
        """'--guest-tz UTC -> Europe/Berlin', one per option that differs."""
        names = {
            "engine": "--engine",
            "guest_tz": "--guest-tz",
            "firewall_computer": "--firewall-computer",
        }
        now, then = asdict(self), asdict(before)
        return [
            f"{names[k]} {then[k] or '(none)'} -> {now[k] or '(none)'}"
            for k in names
            if now[k] != then[k]
        ]


@dataclass(frozen=True)
class Case:
    """The inputs the case holds (after this run) and whether they must be read again."""

    inputs: tuple[str, ...]
    reread: tuple[str, ...]  # the read options that changed; empty: nothing to read again
    options: ReadOptions  # how the case's logs are read from now on


def check_out(out: Path, inputs: Sequence[Path]) -> None:
    """``--out`` must be a folder outside every input (lmtrace never writes into a bundle)."""
    if out.exists() and not out.is_dir():
        raise CaseError(f"{out}: --out must be a folder, and this is a file")
    check_outside(out, inputs)


def check_no_case(out: Path, store_folder: str) -> None:
    """``lmtrace correlate`` writes findings and tables only: into a folder that holds an
    analysis (its case file, or its store) it would leave that analysis' report, timeline
    and saved options beside findings they disagree with (another case's, or other
    options')."""
    if (out / CASE_FILE).exists() or (out / store_folder / "store.json").exists():
        raise CaseError(
            f"{out}: holds an lmtrace analysis, whose report and timeline correlate would"
            " leave disagreeing with its findings: choose a new --out, or run lmtrace analyze"
            f" with the case's inputs and the new options into {out} (its logs are not read"
            " again)"
        )


def check_outside(out: Path, inputs: Sequence[Path]) -> None:
    """``out`` lies outside every input folder: analyze's and ingest's check, as batch's."""
    resolved = Path(out).resolve()
    for path in inputs:
        bundle = Path(path).resolve()
        if bundle.is_dir() and (resolved == bundle or bundle in resolved.parents):
            raise CaseError(f"{out}: --out is inside the input {path}; choose a folder outside it")


def _load(out: Path) -> dict[str, object] | None:
    path = out / CASE_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != CASE_FORMAT:
            raise ValueError("not a case file")
        return doc
    except (OSError, ValueError, AttributeError) as exc:
        raise CaseError(f"{path}: not a readable lmtrace case file ({exc})") from None


def open_case(
    out: Path, inputs: Sequence[Path], options: ReadOptions, add: bool, store: Path
) -> Case:
    """Check this run against the case already in ``out`` and record the case.

    Raises CaseError (one line, exit 2) when ``out`` holds another case and ``add`` was
    not given. Empties ``store`` when the read options changed (the caller reads every
    input of the case again); :func:`recorded` writes the case around the reading.
    """
    check_out(out, inputs)
    given = tuple(dict.fromkeys(str(Path(p).absolute()) for p in inputs))
    doc = _load(out)
    if doc is None and not stores_nothing(store):
        before_inputs: tuple[str, ...] | None = None  # an older lmtrace's folder: inputs unknown
    else:
        before_inputs = tuple(doc["inputs"]) if doc else ()  # type: ignore[arg-type]
    if before_inputs is None and not add:
        raise CaseError(
            f"{out}: holds an analysis whose inputs are not recorded; add these logs to it"
            " with --add, or choose a new --out"
        )
    known = before_inputs or ()
    new = tuple(p for p in given if p not in known)
    if known and new and not add:  # inputs the case already holds may run again alone
        raise CaseError(
            f"{out}: already holds the case of {_names(known)}; to add {_names(new) or 'these'}"
            " to it (late logs of the same case) give --add, or analyse them into another --out"
        )
    reread: tuple[str, ...] = ()
    if doc is not None:
        before = ReadOptions(**doc["read_options"])  # type: ignore[arg-type]
        options = options.over(before)
        reread = tuple(options.changes(before))
        if reread:
            shutil.rmtree(store, ignore_errors=True)
    return Case(tuple(known) + new, reread, options)


@contextmanager
def recorded(out: Path, case: Case) -> Iterator[Path]:
    """Write ``case.json`` before the inputs are read, so that a run killed while
    reading leaves a case that names them; put the earlier one back when the run fails
    on a user error (inputs that hold no log, exit 2): such inputs never join the case.
    An ``out`` this run created is removed again then if nothing is left in it (the
    ingest removes a store it made and stored nothing in), so that a typo leaves no
    folder behind."""
    path = out / CASE_FILE
    made = not out.exists()
    before = path.read_bytes() if path.is_file() else None
    record = {
        "format": CASE_FORMAT,
        "inputs": list(case.inputs),
        "read_options": asdict(case.options),
    }
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    try:
        yield path
    except LmtraceError:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
        if made:
            with suppress(OSError):
                out.rmdir()  # only when empty: what the run stored stays
        raise


def _names(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
