"""What an analysis folder holds besides the reports: findings.json and the tables.

The correlation computes facts (:class:`pipeline.correlate.Correlation`); this module
decides how they are written down: which columns the blocked table keeps, the
findings document (verdict first, then every fact with its evidence, what could not
be read, the impact per port and remote), and the Parquet and CSV files. Every
column and key is described in docs/outputs.md, which a test holds to this code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from pipeline import __version__, quarantine
from pipeline.correlate import Correlation
from pipeline.csv_tables import csv_bytes
from pipeline.printable import printable_json
from pipeline.store import problem_files
from pipeline.writes import parquet_bytes, write_atomic

BLOCKED_COLUMNS = (
    "migration_id",
    "machine",
    "computer",
    "timestamp",
    "timestamp_host",
    "event_id",
    "kind",
    "protocol",
    "local_address",
    "local_port",
    "remote_address",
    "remote_port",
    "scope",
    "packet",
    "filter_origin",
    "source_path",
    "member",
    "record_id",
)


FILE_SORTS: dict[str, pl.Expr] = {
    "logs_read": pl.col("records").is_not_null(),
    "logs_repeated": pl.col("same_as").is_not_null(),
    "files_not_logs": pl.col("records").is_null()
    & pl.col("same_as").is_null()
    & (pl.col("errors").list.len() == 0),
    "files_refused": pl.col("records").is_null() & (pl.col("errors").list.len() > 0),
}
"""The four sorts of file in the files table, each counted in the integrity (they add up
to ``files``), as ingest names them: read (whole, in part, or failed: a log it tried),
repeated (a log's bytes already read: stored once), skipped (not a log) and refused
(a log, or what may hold one, that was not read; pipeline.discover.SKIP_STATUS)."""


def integrity(files: pl.DataFrame | None, incomplete: str | None = None) -> dict[str, object]:
    """What could not be read, from the store's files table: the verdict stands on the rest;
    and the chunks that were read but changed after Windows wrote them (``altered``).

    ``incomplete`` says why the store does not hold everything it was asked to (an
    ingest into it failed or was killed; pipeline.store.incomplete), or is None.
    """
    if files is None:
        return {}
    altered = files["altered"].list.len().fill_null(0)  # null: a store from before the column
    problems = problem_files(files)
    counts = files.select(**{key: rows.sum() for key, rows in FILE_SORTS.items()}).row(
        0, named=True
    )
    return {
        "store_incomplete": incomplete,
        "files": files.height,
        **counts,
        "files_with_problems": problems.height,
        "records_read": int(files["records"].sum() or 0),
        "records_unreadable": int(files["records_skipped"].sum() or 0),
        "chunks_unreadable": int(files["chunks_skipped"].sum() or 0),
        "chunks_altered": int(altered.sum() or 0),
        "problems": problems.select(
            "source_path", "member", "kind", "records_skipped", "chunks_skipped", "errors"
        ).to_dicts(),
        "altered": files.filter(altered > 0)
        .select("source_path", "member", "kind", "altered")
        .to_dicts(),
    }


def impact(blocked: pl.DataFrame) -> dict[str, list[dict[str, object]]]:
    """Blocked inbound packets of quarantine scope per migration, by protocol and local
    port, and by remote address."""
    blocked = blocked.filter(pl.col("scope") == quarantine.QUARANTINE_SCOPE)
    if blocked.is_empty():
        return {"by_port": [], "by_remote": []}
    by_port = (
        blocked.group_by("migration_id", "protocol", "local_port")
        .agg(pl.col("packet").n_unique().alias("blocked"))
        .sort("migration_id", "blocked", "local_port", descending=[False, True, False])
    )
    by_remote = (
        blocked.group_by("migration_id", "remote_address")
        .agg(
            pl.col("packet").n_unique().alias("blocked"),
            pl.col("local_port").unique().sort().alias("ports"),
        )
        .sort("migration_id", "blocked", "remote_address", descending=[False, True, False])
    )
    return {"by_port": by_port.to_dicts(), "by_remote": by_remote.to_dicts()}


def findings_document(
    result: Correlation,
    files: pl.DataFrame | None = None,
    incomplete: str | None = None,
    inputs: Sequence[str] = (),
) -> dict[str, object]:
    """The JSON findings: verdict first, then every fact with its evidence."""
    return {
        "verdict": result.summary.verdict,
        "reasons": result.summary.reasons,
        "notes": list(result.notes),
        "collect": result.summary.collect,
        "remediation": result.summary.remediation,
        "integrity": integrity(files, incomplete),
        "lmtrace_version": __version__,
        "inputs": list(inputs),  # every input the case holds (lmtrace analyze, --add)
        "generated_at": result.generated_at.isoformat(),
        "catalog": list(result.catalog_files),
        "catalog_check": {
            "problems": result.catalog_check.problems(),
            "fields": result.catalog_check.fields.to_dicts(),
            "unknown_events": result.catalog_check.unknown.to_dicts(),
            "sides": result.catalog_check.sides.to_dicts(),
        },
        "machines": result.machines.to_dicts(),
        "clock_changes": result.clock_changes.to_dicts(),
        "migrations": result.migrations.drop("vm_key").to_dicts(),
        "impact": impact(result.blocked),
        "blocked_inbound": result.blocked.select(
            [c for c in BLOCKED_COLUMNS if c in result.blocked.columns]
        ).to_dicts(),
    }


def write_outputs(
    result: Correlation,
    out: Path,
    files: pl.DataFrame | None = None,
    incomplete: str | None = None,
    excel: bool = False,
    inputs: Sequence[str] = (),
) -> list[Path]:
    """migrations, blocked, machines and clock_changes as Parquet + CSV, and findings.json.
    Returns the paths.

    The CSVs go through pipeline/csv_tables.py (formula-safe, one time format; ``excel``:
    the form Excel and Timeline Explorer read as dates).

    Written through pipeline.writes, so a full or read-only disk is one error naming the
    file (polars' own Parquet writer reports a full disk as a damaged Thrift stream).
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    blocked = result.blocked.select([c for c in BLOCKED_COLUMNS if c in result.blocked.columns])
    for name, frame in (
        ("migrations", result.migrations),
        ("blocked", blocked),
        ("machines", result.machines),
        ("clock_changes", result.clock_changes),
    ):
        write_atomic(out / f"{name}.parquet", parquet_bytes(frame))
        write_atomic(out / f"{name}.csv", csv_bytes(frame, excel))
        written += [out / f"{name}.parquet", out / f"{name}.csv"]
    doc = findings_document(result, files, incomplete, inputs)
    text = json.dumps(doc, indent=2, default=str, ensure_ascii=False)
    write_atomic(out / "findings.json", printable_json(text).encode("utf-8"))
    written.append(out / "findings.json")
    return written
