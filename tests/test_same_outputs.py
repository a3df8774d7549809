"""The fast paths change no byte of what lmtrace writes (issue 12).

Speed work on the reader and the ingest must leave every output as it was. The
reference is generated here, in the test, by the pristine code path: each example
bundle analysed in this process with every payload flattened by the general walk
(parsers/evtx_payload.py; ``flat_payload`` turned off), the way lmtrace wrote it
before the flat fast path existed. It is compared with the session's analyses of the
same bundles (tests/conftest.py ``example_analysis``: the default, fast paths on).
Compared byte for byte: findings.json (without ``generated_at``), report.md (without
its generation time), every CSV table and the same tables' Parquet as frames, and the
store's events (sorted, every column); the files table without its timings.

The second test pins every output of the same analyses to digests recorded from main
before the speed work (tests/output_digests.json), so that a change in both paths at
once cannot pass unseen.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from pathlib import Path

import polars as pl
import pytest

import parsers.evtx_rows
from parsers.pfirewall import PfirewallSettings
from parsers.time_values import parse_zone
from pipeline.analyze import STORE_FOLDER, AnalyzeSettings, analyze
from pipeline.report import md
from pipeline.store import scan_events, scan_files

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "bundles"
BUNDLES = ["quarantine-bug", "healthy", "host-fixed", "no-audit"]
_GENERATED = re.compile(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    """``name -> OUT`` analysed by the pristine path, once per module."""
    root = tmp_path_factory.mktemp("reference")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            zone = (
                parse_zone("Europe/Berlin") if name == "quarantine-bug" else None
            )  # as conftest's
            settings = AnalyzeSettings(firewall=PfirewallSettings(tz=zone), jobs=1)
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(parsers.evtx_rows, "flat_payload", lambda event_data: None)
                analyze([EXAMPLES / name], root / name, settings)
            done[name] = root / name
        return done[name]

    return get


def _findings(out: Path) -> dict:
    doc = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    doc.pop("generated_at")
    return doc


def _events(out: Path) -> pl.DataFrame:
    events = scan_events(out / STORE_FOLDER).collect()
    return events.sort(events.columns, nulls_last=True)


def _files(out: Path) -> pl.DataFrame:
    return scan_files(out / STORE_FOLDER).drop("seconds").collect().sort("source_path")


@pytest.mark.parametrize("name", BUNDLES)
def test_outputs_equal_the_pristine_paths(name: str, reference, example_analysis) -> None:
    expected, got = reference(name), example_analysis(name).out
    assert _findings(got) == _findings(expected)
    report = [_GENERATED.sub("Generated", (o / "report.md").read_text()) for o in (got, expected)]
    assert report[0] == report[1]
    tables = sorted(p.name for p in expected.glob("*.csv"))
    assert tables == sorted(p.name for p in got.glob("*.csv")) and "migrations.csv" in tables
    for table in tables:
        assert (got / table).read_bytes() == (expected / table).read_bytes(), table
        parquet = Path(table).with_suffix(".parquet").name
        assert pl.read_parquet(got / parquet).equals(pl.read_parquet(expected / parquet))
    assert _events(got).equals(_events(expected), null_equal=True)
    assert _files(got).equals(_files(expected), null_equal=True)


# --- against main's outputs, recorded --------------------------------------------------
#
# The test above compares two code paths of today's tree; this one compares today's
# outputs with digests recorded from main before the speed work changed anything
# (tests/output_digests.json). A change that alters an output on purpose records them
# again, deliberately, and says so in its commit:
#
#     LMTRACE_RECORD_DIGESTS=1 pytest -q -n 0 tests/test_same_outputs.py -k digests

DIGESTS = Path(__file__).with_name("output_digests.json")
_PLOTLY_JS = re.compile(r"<script>/\*\*\n\* plotly\.js v[^<]*</script>")


def _normalized(out: Path, name: str) -> bytes:
    """The bytes of output ``name`` without what differs between two identical runs
    (generation times, where the checkout and the output folder are) or what another
    library's release writes (the inlined plotly.js); Parquet as its schema and rows."""
    path = out / name
    if path.suffix == ".parquet" or path.is_dir():
        frame = pl.read_parquet(path) if path.is_file() else _store_frame(out, name)
        text = f"{dict(frame.schema)}\n{frame.write_ndjson()}"
    else:
        text = path.read_text(encoding="utf-8")
        if name == "findings.json":
            text = re.sub(r'"generated_at": "[^"]*"', '"generated_at": ""', text)
        text = _GENERATED.sub("Generated", text)
        text = _PLOTLY_JS.sub("<script>plotly.js</script>", text)
    for place, word in ((out, "OUT"), (EXAMPLES, "EXAMPLES")):
        # as written; in report.md, Markdown-escaped (a checkout at /work/ci_check shows as
        # ci\_check); in report.html, HTML-escaped; in timeline.html's JSON, '/' as \u002f
        for form in (str(place), md(str(place)), html.escape(str(place))):
            text = text.replace(form, word).replace(form.replace("/", "\\u002f"), word)
    return text.encode()


def _store_frame(out: Path, name: str) -> pl.DataFrame:
    return _events(out) if name == "store/events" else _files(out)


def _digests(out: Path) -> dict[str, str]:
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    names = [*files, "store/events", "store/files"]
    return {name: hashlib.sha256(_normalized(out, name)).hexdigest() for name in names}


def _plotly_version() -> str:
    from importlib.metadata import version

    return version("plotly")


@pytest.mark.parametrize("name", BUNDLES)
def test_outputs_equal_the_recorded_digests(name: str, example_analysis) -> None:
    got = _digests(example_analysis(name).out)
    if os.environ.get("LMTRACE_RECORD_DIGESTS"):
        doc = json.loads(DIGESTS.read_text()) if DIGESTS.exists() else {}
        doc["plotly"] = _plotly_version()
        doc.setdefault("bundles", {})[name] = got
        DIGESTS.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"digests of {name} recorded in {DIGESTS.name}")
    doc = json.loads(DIGESTS.read_text())
    expected = doc["bundles"][name]
    if doc["plotly"] != _plotly_version():  # its figure JSON may change with its release
        got.pop("timeline.html", None)
        expected = {k: v for k, v in expected.items() if k != "timeline.html"}
    changed = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    assert not changed, (
        f"outputs of {name} differ from the digests recorded in tests/{DIGESTS.name}: "
        f"{changed}. If the change is meant, record them again (LMTRACE_RECORD_DIGESTS=1, "
        "see the comment above) and say so in the commit."
    )
