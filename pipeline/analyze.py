"""The main job: one bundle in, a verdict and its evidence out.

``analyze`` is what ``lmtrace analyze`` and every batch task run: ingest the
bundle into ``OUT/store``, correlate it, and write the findings (and, through the
renderers, the report and timelines) into ``OUT``. Everything it writes stays
inside ``OUT``; the inputs are only read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from parsers.evtx_reader import ReadSettings
from parsers.model import LmtraceError
from parsers.pfirewall import PfirewallSettings
from parsers.time_values import parse_zone
from pipeline.case import Case, ReadOptions, open_case, recorded
from pipeline.catalog import load_catalog
from pipeline.correlate import CorrelateSettings, Correlation, correlate
from pipeline.discover import Limits
from pipeline.ingest import IngestProgress, IngestSummary, ingest
from pipeline.matching import MatchSettings
from pipeline.outputs import findings_document, write_outputs
from pipeline.report import write_report
from pipeline.store import incomplete, problem_files, scan_events, scan_files
from pipeline.timeline import TIMELINE_FILE, TimelineSettings, write_timeline

STORE_FOLDER = "store"
OPTIONS_FILE = "analysis.json"


@dataclass(frozen=True)
class AnalyzeSettings:
    """Everything one analysis depends on besides its inputs."""

    read: ReadSettings = field(default_factory=ReadSettings)
    firewall: PfirewallSettings = field(default_factory=PfirewallSettings)
    correlate: CorrelateSettings = field(default_factory=CorrelateSettings)
    catalogs: Sequence[Path] = ()
    limits: Limits | None = None
    jobs: int | None = 1  # reading processes; None: chosen from the input's size (ingest)
    timeline: TimelineSettings = field(default_factory=TimelineSettings)
    excel: bool = False  # the tables' CSV in the form Excel reads as dates (pipeline/csv_tables.py)
    add: bool = False  # the inputs are late logs of the case already in OUT (pipeline/case.py)
    password: str | None = field(default=None, repr=False)  # of encrypted archives; not stored


@dataclass(frozen=True)
class Analysis:
    """The outcome of one analysis: what was read, what it means, where it was written."""

    out: Path
    ingest: IngestSummary
    files: pl.DataFrame
    result: Correlation
    written: tuple[Path, ...]
    incomplete: str | None = None  # why the store lacks inputs of an earlier, unfinished ingest
    case: Case | None = None  # every input OUT holds, and the read options that changed

    @property
    def exit_code(self) -> int:
        """1 when any file or record of the case could not be read, or the store is
        incomplete (the verdict stands on the rest).

        The case, not this run: a re-run or an ``--add`` does not read again the files
        the store already holds, and their problems still weigh on the verdict, as
        ``lmtrace correlate`` of the same folder says."""
        unread = self.ingest.exit_code or problem_files(self.files).height
        return 1 if self.incomplete or unread else 0


class OptionsFileError(LmtraceError):
    """analysis.json exists but cannot be read back."""


def save_correlation_options(settings: AnalyzeSettings, out: Path) -> Path:
    """Write what the user told the correlation, so that later views of OUT agree with it.

    ``lmtrace timeline OUT`` re-correlates the store; without this file the user
    would have to repeat ``--map``, ``--clock-offset`` and the rest, and a
    forgotten option would silently draw a different picture than the report.
    """
    match = settings.correlate.match
    doc = {
        "hosts": list(settings.correlate.hosts),
        "guests": list(settings.correlate.guests),
        "mapping": dict(match.mapping),
        "clock_offsets": dict(match.clock_offsets),
        "tolerance_s": match.tolerance_s,
        "catalogs": [str(Path(c).resolve()) for c in settings.catalogs],
    }
    path = out / OPTIONS_FILE
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return path


def load_correlation_options(folder: Path) -> AnalyzeSettings | None:
    """The options an earlier ``analyze`` saved in ``folder``, or None when there are none."""
    path = folder / OPTIONS_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return AnalyzeSettings(
            correlate=CorrelateSettings(
                hosts=tuple(doc["hosts"]),
                guests=tuple(doc["guests"]),
                match=MatchSettings(
                    mapping=dict(doc["mapping"]),
                    clock_offsets={k: float(v) for k, v in doc["clock_offsets"].items()},
                    tolerance_s=doc["tolerance_s"],
                ),
            ),
            catalogs=tuple(Path(c) for c in doc["catalogs"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OptionsFileError(f"{path}: not a valid lmtrace options file ({exc})") from None


def correlate_store(store: Path, settings: AnalyzeSettings) -> Correlation:
    """Correlate what a store holds, with the catalog and user knowledge in ``settings``."""
    catalog = load_catalog(settings.catalogs)
    return correlate(scan_events(store), catalog, settings.correlate)


def analyze(
    inputs: Sequence[Path],
    out: Path,
    settings: AnalyzeSettings,
    progress: IngestProgress | None = None,
) -> Analysis:
    """Ingest ``inputs`` into ``out/store``, correlate, and write the findings into ``out``."""
    out = Path(out)
    catalog = load_catalog(settings.catalogs)  # a bad --catalog fails before any reading
    zone = settings.firewall.tz
    options = ReadOptions(
        settings.read.engine, zone.name if zone else None, settings.firewall.computer
    )
    case = open_case(out, inputs, options, settings.add, out / STORE_FOLDER)
    read = case.options
    # The case's zone may be one an earlier run recorded (canonical, so it parses).
    zone = parse_zone(read.guest_tz, "--guest-tz") if read.guest_tz is not None else None
    firewall = replace(settings.firewall, tz=zone, computer=read.firewall_computer)
    with recorded(out, case):
        summary = ingest(
            [Path(p) for p in case.inputs] if case.reread else inputs,
            out / STORE_FOLDER,
            replace(settings.read, engine=read.engine),
            settings.jobs,
            progress,
            settings.limits,
            firewall,
            settings.password,
        )
    result = correlate(scan_events(out / STORE_FOLDER), catalog, settings.correlate)
    files = scan_files(out / STORE_FOLDER).collect()
    mark = incomplete(out / STORE_FOLDER)
    note = str(mark) if mark else None
    written = write_outputs(result, out, files, note, settings.excel, case.inputs)
    written.append(save_correlation_options(settings, out))
    timelines = write_timeline(
        result, out / TIMELINE_FILE, replace(settings.timeline, warning=note)
    )
    doc = findings_document(result, files, note, case.inputs)
    written += timelines + write_report(doc, out, timelines)
    return Analysis(out, summary, files, result, tuple(written), note, case)
