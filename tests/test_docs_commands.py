"""Every command and snippet the documentation shows runs, and so does every benchmark.

Documentation rots where nothing runs it: a renamed option, a changed signature, a
snippet that worked in a REPL. So the commands in README.md's, docs/*.md's and
examples/bundles/README.md's code blocks are collected here and run in a workspace
whose folder names are the documentation's placeholders (``OUT``, ``STORE``,
``archive/``), with sizes made tiny (``--size 1GB`` becomes a few MB); the Python
blocks run as scripts; every script in tests/benchmarks runs once with tiny
arguments, and every benchmark line the docs show must use only options that run
exercises. A documented command the tests do not know how to run fails the suite,
as does one that another test is said to cover when that test is gone.
"""

from __future__ import annotations

import importlib
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import py7zr
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.ingest import ingest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "examples" / "bundles" / "README.md",
]
BENCHMARKS = ROOT / "tests" / "benchmarks"
EXAMPLE = "examples/bundles/quarantine-bug"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_OPTIONAL = re.compile(r"\[[^\]]*\]")  # synopsis: [filters], [--limit N]
_BENCH = re.compile(r"tests/benchmarks/(?:bench|sweep)_\w+\.py[^`|\n]*")

# Placeholders of the synopsis lines, as the workspace names them.
PLACEHOLDERS = {"INPUT...": "examples/bundles/healthy"}
# Option values too big for a test, and what runs instead.
TINY = {"--size": "3MB"}

COVERED_ELSEWHERE = {
    # documented command -> the test that runs it (it must exist)
    "lmtrace batch archive/* --out sweep --scheduler tcp://dask-scheduler:8786": (
        "tests.test_batch_dask",
        "test_dask_cluster_run_equals_local_run",
    ),
    "lmtrace timeline OUT --image timeline.png": (
        "tests.test_timeline",
        "test_static_png_and_svg_export",
    ),
}

# Per benchmark script: the arguments of its tiny run. Every option a document shows
# for the script must be one of them, so that the run proves the option still exists.
BENCH_TINY: dict[str, list[str]] = {
    "bench_batch.py": ["--count", "1", "--min-size", "1MB", "--max-size", "1MB", "--big", "2MB",
                       "--workdir", "{tmp}/bench"],
    "bench_correlate.py": ["--events", "20000", "--repeats", "1"],
    "bench_export.py": ["--analysis", "{analysis}", "--repeats", "1"],
    "bench_ingest.py": ["examples/bundles/healthy", "--size", "16MB", "--repeats", "1"],
    "bench_read.py": ["{corpus}/network/EVTX-ATTACK-SAMPLES__DE_RDP_Tunnel_5156.evtx",
                      "--repeats", "1", "--no-corpus"],
    "bench_simulate.py": ["--size", "3MB"],
    "bench_timeline.py": ["--events", "2000", "--repeats", "1"],
    "bench_verdict.py": ["--repeats", "1", "--bundle", "examples/bundles/no-audit"],
    "bench_writer.py": ["--mb", "1", "--repeat", "1"],
    "sweep_verdicts.py": ["--count", "2", "--seed", "1", "--workdir", "{tmp}/sweep"],
}  # fmt: skip


def _blocks() -> list[tuple[Path, str, str]]:
    """(document, language, text) of every fenced code block."""
    return [
        (doc, lang, text)
        for doc in DOCUMENTS
        for lang, text in _FENCE.findall(doc.read_text(encoding="utf-8"))
    ]


def _command_lines(text: str) -> list[str]:
    """Shell lines of a block, continuations joined, comments and synopsis options gone."""
    joined = re.sub(r"\\\n\s*", " ", text)
    lines = []
    for line in joined.splitlines():
        line = line.split(" | ")[0]  # what is piped into another tool is not lmtrace's
        words = shlex.split(_OPTIONAL.sub("", line), comments=True)
        if words and words[0] == "lmtrace":
            lines.append(" ".join(words))
    return lines


def documented_commands() -> list[str]:
    """Each distinct lmtrace command of the docs' code blocks, in order of appearance."""
    seen: dict[str, None] = {}
    for _, lang, text in _blocks():
        if lang in ("", "sh", "shell", "bash", "console"):
            seen.update(dict.fromkeys(_command_lines(text)))
    return list(seen)


def documented_benchmarks() -> list[str]:
    """Every benchmark invocation the docs show, in code blocks or inline."""
    found = []
    for doc in DOCUMENTS:
        found += [m.strip() for m in _BENCH.findall(doc.read_text(encoding="utf-8"))]
    return found


def _rebuilds_an_example(command: str) -> bool:
    """examples/bundles/README.md's lines: tests/test_simulate.py runs them byte for byte."""
    return command.startswith("lmtrace simulate") and "--out examples/bundles/" in command


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, example_analysis) -> Path:
    """A folder laid out as the docs name things: examples/, OUT (an analysis of the
    example bundle), STORE (a store), archive/ (two bundles), bundle.zip."""
    ws = tmp_path_factory.mktemp("docs")
    (ws / "examples").symlink_to(ROOT / "examples")
    shutil.copytree(example_analysis("quarantine-bug").out, ws / "OUT")  # analysed once
    ingest([ROOT / "examples/bundles/healthy"], ws / "STORE")
    for name in ("healthy", "host-fixed"):
        shutil.copytree(ROOT / "examples/bundles" / name, ws / "archive" / name)
    healthy = ROOT / "examples/bundles/healthy"
    with zipfile.ZipFile(ws / "bundle.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(healthy.rglob("*")):
            z.write(path, path.relative_to(ROOT / "examples/bundles").as_posix())
    # README's case: the guest's logs as a 7z with a password (the docs' "$PW", which the
    # tests pass as written), the hosts' as a zip.
    with py7zr.SevenZipFile(ws / "guest-logs.7z", "w", password="$PW") as z:
        z.writeall(healthy / "APP-VM01", "APP-VM01")
    with zipfile.ZipFile(ws / "host-logs.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(healthy.glob("HV-*/*")):
            z.write(path, path.relative_to(healthy).as_posix())
    return ws


def _arguments(command: str, ws: Path) -> list[str]:
    words: list[str] = []
    for word in shlex.split(command)[1:]:
        word = PLACEHOLDERS.get(word, word)
        if "*" in word:
            words += sorted(str(p.relative_to(ws)) for p in ws.glob(word))
        else:
            words.append(word)
    for option, small in TINY.items():
        if option in words:
            words[words.index(option) + 1] = small
    return words


def test_every_documented_command_is_run_or_covered() -> None:
    commands = documented_commands()
    assert len(commands) > 10  # the collection itself works
    for command, (module, name) in COVERED_ELSEWHERE.items():
        assert command in commands, f"no longer documented, drop it here: {command}"
        assert hasattr(importlib.import_module(module), name), f"{module}.{name} is gone"


def test_documented_commands_run_in_the_order_the_docs_give_them(
    workspace: Path, monkeypatch
) -> None:
    """One test, not one per command: a command builds on those before it (analyze
    --out case-4711, then export case-4711), and test runners that spread parametrized
    tests over processes (pytest -n auto) would run them apart."""
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("LMTRACE_ARCHIVE_PASSWORD", "$PW")  # README's case block exports it
    ran = 0
    for command in documented_commands():
        if command in COVERED_ELSEWHERE:
            continue
        if _rebuilds_an_example(command):
            module = importlib.import_module("tests.test_simulate")
            assert hasattr(module, "test_example_bundles_are_rebuilt_by_their_commands")
            continue
        result = CliRunner().invoke(app, _arguments(command, workspace))
        assert result.exit_code == 0, f"{command}\n{result.output}"
        assert "Traceback" not in result.output, command
        ran += 1
    assert ran > 10


@pytest.mark.parametrize(
    ("document", "snippet"),
    [(doc.relative_to(ROOT).as_posix(), text) for doc, lang, text in _blocks() if lang == "python"],
)
def test_documented_python_snippet_runs(
    document: str, snippet: str, workspace: Path, tmp_path: Path
) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(snippet, encoding="utf-8")
    for name in ("bundle.zip",):
        shutil.copy(workspace / name, tmp_path / name)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{document}:\n{done.stderr}"


def test_every_benchmark_has_a_tiny_run_that_covers_its_documented_options() -> None:
    scripts = {p.name for pattern in ("bench_*.py", "sweep_*.py") for p in BENCHMARKS.glob(pattern)}
    assert scripts == set(BENCH_TINY)
    lines = documented_benchmarks()
    assert {line.split()[0].rsplit("/", 1)[-1] for line in lines} >= {"bench_timeline.py"}
    for line in lines:
        words = shlex.split(line, comments=True)
        script = words[0].rsplit("/", 1)[-1]
        assert script in BENCH_TINY, line
        documented = {w for w in words[1:] if w.startswith("--")}
        tried = {w for w in BENCH_TINY[script] if w.startswith("--")}
        assert documented <= tried, f"{line}: {sorted(documented - tried)} not run by the tests"


SPAWNING = {"bench_batch.py", "bench_ingest.py", "sweep_verdicts.py"}
"""Benchmarks that start processes of their own (spawned: they re-import ``__main__``)
run as a process; the others run in this one, sparing a start-up of Python and polars."""


@pytest.mark.parametrize("script", sorted(BENCH_TINY))
def test_benchmark_runs_with_tiny_arguments(
    script: str, tmp_path: Path, request, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    arguments = BENCH_TINY[script]
    if any("{corpus}" in a for a in arguments):
        corpus = request.getfixturevalue("corpus_dir")
    else:
        corpus = None
    analysis = (
        request.getfixturevalue("example_analysis")("healthy").out
        if any("{analysis}" in a for a in arguments)
        else None
    )  # an analysis folder the session made once
    argv = [a.format(tmp=tmp_path, corpus=corpus, analysis=analysis) for a in arguments]
    path = BENCHMARKS / script
    if script in SPAWNING:
        done = subprocess.run(
            [sys.executable, str(path), *argv], cwd=ROOT, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        printed = done.stdout
    else:
        monkeypatch.chdir(ROOT)
        monkeypatch.setattr(sys, "argv", [str(path), *argv])
        monkeypatch.setattr(sys, "path", list(sys.path))  # a script may put ROOT first
        runpy.run_path(str(path), run_name="__main__")
        printed = capsys.readouterr().out
    assert printed.strip(), "a benchmark prints its figures"


def test_a_script_without_the_main_guard_is_told_so(workspace: Path, tmp_path: Path) -> None:
    """docs/ingest.md's snippet with its guard taken away: the error names the guard,
    not the store's lock that the re-run ingest trips over."""
    [snippet] = [t for d, lang, t in _blocks() if lang == "python" and d.name == "ingest.md"]
    unguarded = re.sub(r"^if __name__ == .*\n", "", snippet, flags=re.MULTILINE)
    unguarded = re.sub(r"^    ", "", unguarded, flags=re.MULTILINE)
    (tmp_path / "snippet.py").write_text(unguarded, encoding="utf-8")
    shutil.copy(workspace / "bundle.zip", tmp_path / "bundle.zip")
    done = subprocess.run(
        [sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert 'if __name__ == "__main__":' in done.stderr
    assert "another ingest is writing" not in done.stderr
