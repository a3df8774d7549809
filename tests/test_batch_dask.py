"""lmtrace batch on a real Dask cluster equals the local run.

A dask.distributed LocalCluster on localhost (2 worker processes, 1 thread
each) runs the same bundle tasks through ``lmtrace batch --scheduler``; its
summary and each bundle's findings must equal those of the local run. The
bundles are simulated here (real .evtx bytes), with one that must fail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.batch import BatchSettings, run_batch
from pipeline.cli import app
from pipeline.simulate import SimulateOptions, simulate

distributed = pytest.importorskip("distributed")

# Measured per run, or a property of where it ran: everything else must be equal.
VARYING = ["seconds", "peak_rss_mb", "reused"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as local:
        yield local


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("bundles")
    made = []
    for seed, scenario in enumerate(("quarantine-bug", "failed-migration"), start=21):
        made.append(root / scenario)
        simulate(SimulateOptions(scenario=scenario, seed=seed, noise=30.0, load=3.0), made[-1])
    broken = root / "broken.zip"
    broken.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip's end record, nothing else
    return [*made, broken]


def _findings(out: Path, folder: str) -> dict[str, Any] | None:
    path = out / folder / "findings.json"
    if not path.is_file():
        return None
    document = json.loads(path.read_text(encoding="utf-8"))
    document.pop("generated_at")
    return document


def test_dask_cluster_run_equals_local_run(
    cluster: Any, inputs: list[Path], tmp_path: Path
) -> None:
    local = run_batch(inputs, tmp_path / "local", BatchSettings(jobs=2))
    truth = json.loads((inputs[0] / "ground_truth.json").read_text(encoding="utf-8"))
    assert local.summary["verdict"][0] == truth["verdict"]
    assert local.summary["status"].to_list() == ["ok", "ok", "failed"]

    dask_out = tmp_path / "dask"
    ran = CliRunner().invoke(
        app,
        [
            "batch",
            *map(str, inputs),
            "--out",
            str(dask_out),
            "--scheduler",
            cluster.scheduler_address,
        ],
    )
    assert ran.exit_code == 1, ran.output  # the broken bundle fails there too
    on_dask = pl.read_parquet(dask_out / "summary.parquet")
    assert on_dask.drop(VARYING).equals(local.summary.drop(VARYING))
    for folder in local.summary["folder"]:
        assert _findings(dask_out, folder) == _findings(tmp_path / "local", folder)

    # The workers did the work: each ran tasks (the bundles), none ran here.
    with distributed.Client(cluster) as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert len(executed) == 2 and sum(executed.values()) == len(inputs)

    # A second run with nothing new reuses everything without submitting a task.
    again = run_batch(inputs, dask_out, BatchSettings(scheduler=cluster.scheduler_address))
    assert again.reused == len(inputs)


def test_unreachable_scheduler_is_one_line_exit_2(inputs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "o"
    ran = CliRunner().invoke(
        app, ["batch", str(inputs[0]), "--out", str(out), "--scheduler", "tcp://127.0.0.1:9"]
    )
    assert ran.exit_code == 2
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("lmtrace: error: tcp://127.0.0.1:9: cannot reach the Dask scheduler")
