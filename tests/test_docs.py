"""Docs that tests keep honest: every command documented, the Quickstart runs as written."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from pipeline.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\n(.+?)\n```", section)


def _commands() -> dict[str, typer.main.click.Command]:
    return typer.main.get_command(app).commands  # type: ignore[attr-defined]


def test_quickstart_has_exactly_two_commands() -> None:
    commands = _quickstart_commands()
    assert len(commands) == 2
    assert "lmtrace analyze examples/bundles/" in commands[0]
    assert commands[1].rstrip().endswith("pytest -q -n auto")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _quickstart_commands()[1] in ci.splitlines()


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_has_help_and_is_in_the_readme(name: str) -> None:
    command = _commands()[name]
    assert (command.help or "").strip(), f"lmtrace {name} has no help"
    assert f"`lmtrace {name}" in README, f"lmtrace {name} is missing from README.md"
    for param in command.params:
        if param.param_type_name == "option":
            assert (param.help or "").strip(), f"lmtrace {name} {param.opts[0]} has no help"


def test_the_quickstart_main_job_gives_the_example_verdict(tmp_path: Path) -> None:
    """The README's main-job command, as written (after its install step), on a fresh OUT."""
    main_job = _quickstart_commands()[0].split("&&")[-1].strip()
    args = shlex.split(main_job)
    assert args[0] == "lmtrace"
    out_at = args.index("--out") + 1
    args[out_at] = str(tmp_path / "out")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *args[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    bundle = ROOT / args[2]
    truth = json.loads((bundle / "ground_truth.json").read_text(encoding="utf-8"))
    assert f"verdict: {truth['verdict']}" in done.stdout
    assert (tmp_path / "out" / "findings.json").is_file()
