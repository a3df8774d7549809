"""The main job: one bundle in, a verdict and its evidence out.

``analyze`` is what ``lmtrace analyze`` and every batch task run: ingest the
bundle into ``OUT/store``, correlate it, and write the findings (and, through the
renderers, the report and timelines) into ``OUT``. Everything it writes stays
inside ``OUT``; the inputs are only read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from parsers.evtx_reader import ReadSettings
from parsers.pfirewall import PfirewallSettings
from pipeline.catalog import load_catalog
from pipeline.correlate import (
    CorrelateSettings,
    Correlation,
    correlate,
    findings_document,
    write_outputs,
)
from pipeline.discover import Limits
from pipeline.ingest import IngestProgress, IngestSummary, ingest
from pipeline.report import write_report
from pipeline.store import scan_events, scan_files
from pipeline.timeline import TIMELINE_FILE, TimelineSettings, write_timeline

STORE_FOLDER = "store"


@dataclass(frozen=True)
class AnalyzeSettings:
    """Everything one analysis depends on besides its inputs."""

    read: ReadSettings = field(default_factory=ReadSettings)
    firewall: PfirewallSettings = field(default_factory=PfirewallSettings)
    correlate: CorrelateSettings = field(default_factory=CorrelateSettings)
    catalogs: Sequence[Path] = ()
    limits: Limits | None = None
    jobs: int = 1
    timeline: TimelineSettings = field(default_factory=TimelineSettings)


@dataclass(frozen=True)
class Analysis:
    """The outcome of one analysis: what was read, what it means, where it was written."""

    out: Path
    ingest: IngestSummary
    files: pl.DataFrame
    result: Correlation
    written: tuple[Path, ...]

    @property
    def exit_code(self) -> int:
        """1 when any file or record could not be read (the verdict stands on the rest)."""
        return self.ingest.exit_code


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
    summary = ingest(
        inputs,
        out / STORE_FOLDER,
        settings.read,
        settings.jobs,
        progress,
        settings.limits,
        settings.firewall,
    )
    result = correlate(scan_events(out / STORE_FOLDER), catalog, settings.correlate)
    files = scan_files(out / STORE_FOLDER).collect()
    written = write_outputs(result, out, files)
    timelines = write_timeline(result, catalog.model, out / TIMELINE_FILE, settings.timeline)
    written += timelines + write_report(findings_document(result, files), out, timelines)
    return Analysis(out, summary, files, result, tuple(written))
