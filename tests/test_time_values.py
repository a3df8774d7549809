"""One grammar for time zones, durations and times, whatever option takes them (issue 13).

Before, ``--guest-tz`` took ``+2`` and ``UTC+02:00``, ``--tz`` refused both and the
simulator refused ``+02:00``; ``--window`` took ``2m`` but ``--clock-offset`` did not.
These tests hold the grammar (docs/time.md) and check, through the real command line,
that every option that takes a value of a kind accepts the same forms and refuses the
same ones in one line with exit code 2.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parsers.time_values import TimeValueError, parse_duration, parse_utc, parse_zone
from pipeline.cli import app
from pipeline.matching import parse_clock_offset

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "bundles"

WINTER = datetime(2025, 1, 15, 12, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "name", "offset"),
    [
        ("UTC", "UTC", timedelta(0)),
        ("z", "UTC", timedelta(0)),
        ("+2", "+02:00", timedelta(hours=2)),
        ("+02", "+02:00", timedelta(hours=2)),
        ("+0200", "+02:00", timedelta(hours=2)),
        ("+02:00", "+02:00", timedelta(hours=2)),
        ("UTC+02:00", "+02:00", timedelta(hours=2)),
        ("utc-3:30", "-03:30", -timedelta(hours=3, minutes=30)),
        ("GMT+14", "+14:00", timedelta(hours=14)),
        ("Europe/Berlin", "Europe/Berlin", timedelta(hours=1)),
    ],
)
def test_zone_forms(text: str, name: str, offset: timedelta) -> None:
    zone = parse_zone(text)
    assert zone.name == name
    assert zone.tzinfo.utcoffset(WINTER.astimezone(zone.tzinfo)) == offset


@pytest.mark.parametrize("text", ["Mars/Olympus", "+15:00", "+02:75", "", "2", "Berlin"])
def test_zones_outside_the_grammar_are_refused_naming_the_option(text: str) -> None:
    with pytest.raises(TimeValueError, match=r"^--tz: "):
        parse_zone(text, "--tz")


def test_zone_labels_state_the_offset_in_force() -> None:
    summer = datetime(2025, 7, 1, tzinfo=timezone.utc)
    assert parse_zone("Europe/Berlin").label(summer) == "Europe/Berlin, UTC+02:00"
    assert parse_zone("-0330").label(summer) == "UTC-03:30"
    assert parse_zone("Z").label(summer) == "UTC"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("2m", 120), ("500ms", 0.5), ("1.5h", 5400), ("1m30s", 90),
     ("1h 2min 3.5s", 3723.5), ("45", 45)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten seconds", "3d", "1m30", "s", "--3s"])
def test_what_is_no_duration_is_said_so(text: str) -> None:
    with pytest.raises(TimeValueError, match="not a duration such as 30s"):
        parse_duration(text, "--window")


@pytest.mark.parametrize("text", ["0", "0s", "-3s", "-1500ms", "-0.5m"])
def test_a_window_is_a_positive_duration(text: str) -> None:
    """Zero and negative durations are durations: the error says what the option needs."""
    with pytest.raises(TimeValueError) as refused:
        parse_duration(text, "--window")
    assert (
        str(refused.value)
        == f"--window: {text!r} must be positive, such as 30s, 500ms, 2m or 1m30s"
    )
    assert parse_duration("+3s", "--window") == 3


def test_a_tolerance_may_be_zero_but_not_negative() -> None:
    assert parse_duration("0s", "--tolerance", zero=True) == 0
    assert parse_duration("-0s", "--tolerance", zero=True) == 0
    with pytest.raises(TimeValueError, match=r"^--tolerance: '-3s' must be 0 or more, such as 30s"):
        parse_duration("-3s", "--tolerance", zero=True)


def test_signed_durations_are_clock_offsets() -> None:
    assert parse_clock_offset("APP-VM01=+3.2s") == ("APP-VM01", pytest.approx(3.2))
    assert parse_clock_offset("SQL7=-1500ms") == ("SQL7", pytest.approx(-1.5))
    assert parse_clock_offset("SQL7 = -1m30s") == ("SQL7", pytest.approx(-90))
    assert parse_clock_offset("SQL7=0") == ("SQL7", 0)
    for bad in ("SQL7", "=3s", "SQL7=soon"):
        with pytest.raises(Exception, match="--clock-offset"):
            parse_clock_offset(bad)


def test_times_are_utc_inside() -> None:
    assert parse_utc("2024-05-01T10:00:00") == datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    assert parse_utc("2024-05-01T12:00:00+02:00") == datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    assert parse_utc("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    assert parse_utc("2024-05-01") == datetime(2024, 5, 1, tzinfo=timezone.utc)
    with pytest.raises(TimeValueError, match="--since: 'yesterday' is not an ISO 8601 time"):
        parse_utc("yesterday", "--since")


# ----- the same grammar through every option of the command line

_runner = CliRunner()


def _refused(args: list[str], option: str) -> str:
    """Exit 2 with one 'lmtrace: error: OPTION: ...' line and no traceback; the line."""
    result = _runner.invoke(app, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith(f"lmtrace: error: {option}: "), lines
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["ingest", "{x}", "--out", "{o}"], "--guest-tz"),
        (["analyze", "{x}", "--out", "{o}"], "--guest-tz"),
        (["analyze", "{x}", "--out", "{o}"], "--tz"),
        (["batch", "{x}", "--out", "{o}"], "--guest-tz"),
        (["timeline", "{x}"], "--tz"),
        (["simulate", "--scenario", "healthy", "--out", "{o}"], "--guest-tz"),
    ],
)
def test_every_zone_option_refuses_the_same_way(
    tmp_path: Path, command: list[str], option: str
) -> None:
    args = [a.format(x=tmp_path, o=tmp_path / "out") for a in command]
    _refused([*args, option, "+15:00"], option)
    _refused([*args, option, "Mars/Olympus"], option)
    assert not (tmp_path / "out").exists()


def test_every_duration_option_takes_compound_forms(tmp_path: Path) -> None:
    """--tolerance, simulate's clock knobs and batch's --timeout read durations like --window."""
    out = tmp_path / "sim"
    done = _runner.invoke(
        app,
        ["simulate", "--scenario", "healthy", "--out", str(out), "--seed", "3",
         "--guest-clock-offset=-1m30s", "--guest-clock-jump", "1500ms"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    truth = json.loads((out / "ground_truth.json").read_text(encoding="utf-8"))
    assert json.dumps(truth).count("-90.0") >= 1
    assert parse_duration("0s", "--tolerance", zero=True) == 0
    _refused(
        ["analyze", str(out), "--out", str(tmp_path / "o"), "--tolerance", "-1s"], "--tolerance"
    )
    _refused(["batch", str(out), "--out", str(tmp_path / "b"), "--timeout", "0"], "--timeout")


def test_zero_and_negative_durations_are_refused_for_what_they_are(
    example_analysis, tmp_path: Path
) -> None:
    """'-3s' and '0s' are durations: the line says what the option needs, not that they
    are none."""
    out = example_analysis("healthy").out
    said = {
        value: _refused(
            ["timeline", str(out), "--window", value, "--out", str(tmp_path / "t.html")], "--window"
        )
        for value in ("0s", "-5s")
    }
    assert (
        said["0s"]
        == "lmtrace: error: --window: '0s' must be positive, such as 30s, 500ms, 2m or 1m30s"
    )
    assert "'-5s' must be positive" in said["-5s"]
    tolerance = _refused(
        ["analyze", str(EXAMPLES / "healthy"), "--out", str(tmp_path / "o"), "--tolerance", "-3s"],
        "--tolerance",
    )
    assert "'-3s' must be 0 or more" in tolerance
    assert not (tmp_path / "o").exists() and not (tmp_path / "t.html").exists()


def test_time_and_duration_options_refuse_the_same_way(tmp_path: Path) -> None:
    _refused(["events", str(tmp_path), "--since", "yesterday"], "--since")
    _refused(["events", str(tmp_path), "--until", "2025-13-01"], "--until")
    _refused(["timeline", str(tmp_path), "--window", "-3s"], "--window")
    _refused(
        ["simulate", "--scenario", "healthy", "--out", str(tmp_path / "o"), "--start", "soon"],
        "--start",
    )
    _refused(
        ["analyze", str(tmp_path), "--out", str(tmp_path / "o"), "--clock-offset", "VM=3 days"],
        "--clock-offset VM",
    )


def test_the_simulator_takes_the_grammar_and_says_what_it_cannot_write(tmp_path: Path) -> None:
    """A fixed offset is a valid zone, but 6013 needs a Windows zone name: said plainly."""
    result = _runner.invoke(
        app, ["simulate", "--scenario", "healthy", "--out", str(tmp_path / "o"), "--guest-tz", "+2"]
    )
    assert result.exit_code == 2
    assert "'+02:00': the simulator writes the zone into EventLog 6013" in result.stderr
