"""The layering the tree shows, held by a test (issue 13).

``parsers/`` knows file formats and never imports ``pipeline/``; the simulator
(``pipeline/simulate/``) is an independent oracle for the correlator, so it imports only
``parsers/``, itself and the verdict decision table (shared on purpose: the ground truth
and the correlator may disagree on a fact, never on a rule); the command-line package
loads only typer on import, so that ``lmtrace --help`` answers at once. Read from the
source with :mod:`ast`, so a violation anywhere in a module (also inside a function)
fails here with the line that does it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> list[tuple[str, int, str]]:
    """(file, line, imported module) for every import in every module of ``package``."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            rel = str(path.relative_to(ROOT))
            found += [(rel, node.lineno, name) for name in names]
    return found


def _project(name: str) -> bool:
    return name.split(".")[0] in ("parsers", "pipeline")


def test_parsers_never_import_the_investigation() -> None:
    wrong = [i for i in _imports("parsers") if i[2].split(".")[0] == "pipeline"]
    assert not wrong, wrong


def test_the_simulator_imports_only_parsers_itself_and_the_verdict_table() -> None:
    allowed = ("parsers", "pipeline.simulate", "pipeline.verdict_table")
    wrong = [
        i
        for i in _imports("pipeline/simulate")
        if _project(i[2]) and not any(i[2] == a or i[2].startswith(a + ".") for a in allowed)
    ]
    assert not wrong, wrong


@pytest.mark.parametrize("package", ["pipeline.cli", "pipeline.cli.commands"])
def test_the_command_line_loads_no_data_library_on_import(package: str) -> None:
    heavy = ("polars", "plotly", "evtx", "Evtx", "pyarrow", "msgspec")
    code = f"import sys, {package}; print(sorted({{m.split('.')[0] for m in sys.modules}}))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert not [m for m in heavy if f"'{m}'" in loaded], loaded


def test_analysing_a_folder_loads_no_library_it_does_not_use(tmp_path: Path) -> None:
    """py7zr, pyzipper and psutil cost start-up (issue 12), and only an archive, a password
    or another process's store lock needs them: a folder of logs is analysed, in a fresh
    interpreter, without any of them imported."""
    bundle = ROOT / "examples" / "bundles" / "no-audit"
    code = (
        "import sys\n"
        "from pipeline.analyze import AnalyzeSettings, analyze\n"
        f"analyze([{str(bundle)!r}], {str(tmp_path / 'out')!r}, AnalyzeSettings(jobs=1))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert (tmp_path / "out" / "findings.json").is_file()
    assert "'polars'" in loaded  # the analysis ran, and the listing is of its modules
    assert not [m for m in ("py7zr", "pyzipper", "psutil") if f"'{m}'" in loaded], loaded
