"""Shared fixtures: where the public corpus is, and its manifest.

The corpus lives beside the project (``../shared/corpus/public``) and is read in
place, never copied. A user's own clone may not have it: tests that need it skip
with a reason that says where it was looked for. ``LMTRACE_CORPUS`` points
elsewhere.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers more than there are cores. Much of the suite waits rather
    than computes (lmtrace subprocesses and reading processes starting, chromium, kill -9
    drivers), and a worker per core leaves the cores idle then. Measured on the 2-core
    project machine, whole suite, one run each: with two busy loops holding both cores,
    4 workers took 187 s and 2 took 244 s (289 s at an earlier stop); on the quiet
    machine, 122 s and 109 s. The suite must stay under 5 minutes on a busy machine."""
    return (os.cpu_count() or 1) + 2


def corpus_root() -> Path:
    """The public corpus folder, from LMTRACE_CORPUS or beside the checkout."""
    env = os.environ.get("LMTRACE_CORPUS")
    return Path(env) if env else ROOT.parent / "shared" / "corpus" / "public"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    root = corpus_root()
    if not (root / "MANIFEST.tsv").is_file():
        pytest.skip(f"public .evtx corpus not found at {root} (set LMTRACE_CORPUS)")
    return root


@pytest.fixture(scope="session")
def manifest(corpus_dir: Path) -> list[dict[str, str]]:
    """MANIFEST.tsv rows, one dict per file, keyed by the header's column names."""
    with (corpus_dir / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


EXAMPLES = ROOT / "examples" / "bundles"


@pytest.fixture(scope="session")
def example_analysis(tmp_path_factory: pytest.TempPathFactory):
    """``name -> Analysis`` of a committed example bundle, each analysed once per session.

    An analysis costs a second or two; tests that only read what it wrote (reports,
    tables, exports, the CLI's rendering) share these instead of running their own.
    quarantine-bug is analysed with its guest's zone (Europe/Berlin), as the README says.
    """
    from parsers.pfirewall import PfirewallSettings
    from parsers.time_values import parse_zone
    from pipeline.analyze import AnalyzeSettings, analyze

    root = tmp_path_factory.mktemp("examples")
    done: dict[str, object] = {}

    def get(name: str):
        if name not in done:
            zone = parse_zone("Europe/Berlin") if name == "quarantine-bug" else None
            settings = AnalyzeSettings(firewall=PfirewallSettings(tz=zone))
            done[name] = analyze([EXAMPLES / name], root / name, settings)
        return done[name]

    return get
