"""pfirewall.log: fields by the #Fields line, local time made UTC, bad lines counted."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from parsers.pfirewall import (
    PfirewallSettings,
    is_pfirewall,
    read_pfirewall,
)
from parsers.time_values import parse_zone

HEADER = (
    "#Version: 1.5\n#Software: Microsoft Windows Firewall\n#Time Format: Local\n"
    "#Fields: date time action protocol src-ip dst-ip src-port dst-port size tcpflags tcpsyn"
    " tcpack tcpwin icmptype icmpcode info path\n\n"
)


def _log(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "pfirewall.log"
    path.write_bytes((header + body).encode("utf-8"))
    return path


def _read(path: Path, tz: str = "UTC", computer: str | None = "APP-VM01"):
    settings = PfirewallSettings(parse_zone(tz), computer)
    return read_pfirewall(path, settings, str(path), None, "ab" * 32)


def test_recognized_by_header_not_name(tmp_path: Path) -> None:
    assert is_pfirewall(HEADER.encode())
    assert is_pfirewall(b"\xef\xbb\xbf" + HEADER.encode())
    assert not is_pfirewall(b"#Version: 1.0\n#Fields: date time\n")  # another W3C log
    assert not is_pfirewall(b"ElfFile\x00")


def test_rows_keyed_by_fields_and_time_converted_from_local(tmp_path: Path) -> None:
    path = _log(
        tmp_path,
        "2024-03-05 14:00:01 DROP TCP 203.0.113.9 10.0.0.5 51000 443 52 S 1 0 8192 - - - RECEIVE\n"
        "2024-03-05 14:00:02 ALLOW UDP 10.0.0.5 10.0.0.1 5353 53 60 - - - - - - - SEND\n",
    )
    frame, report = _read(path, tz="Europe/Berlin")
    assert frame.height == 2 and report.records == 2 and report.records_skipped == 0
    # Berlin is UTC+1 in March before DST: 14:00:01 local is 13:00:01 UTC.
    assert frame["timestamp"][0] == datetime(2024, 3, 5, 13, 0, 1, tzinfo=timezone.utc)
    assert frame["event_id"].to_list() == [1, 2]
    assert frame["computer"].to_list() == ["APP-VM01", "APP-VM01"]
    first = json.loads(frame["data"][0])
    assert first["dst-port"] == "443" and first["protocol"] == "TCP" and "icmptype" not in first
    assert frame["record_id"].to_list() == [6, 7]  # line numbers, for evidence


def test_fixed_offset_zone_and_newer_field_layout(tmp_path: Path) -> None:
    header = HEADER.replace(" path\n", " path pid\n")
    path = _log(
        tmp_path,
        "2024-07-01 00:30:00 DROP UDP 198.51.100.7 10.0.0.5 4000 161 70 - - - - - - - RECEIVE 4\n",
        header=header,
    )
    frame, _ = _read(path, tz="+02:00")
    assert frame["timestamp"][0] == datetime(2024, 6, 30, 22, 30, tzinfo=timezone.utc)
    assert json.loads(frame["data"][0])["pid"] == "4"


def test_bad_lines_and_nonexistent_local_times_are_counted(tmp_path: Path) -> None:
    path = _log(
        tmp_path,
        "2024-03-31 02:30:00 DROP TCP 1.2.3.4 10.0.0.5 1 443 52 S 1 0 8192 - - - RECEIVE\n"
        "garbage line\n"
        "2024-13-45 99:00:00 DROP TCP 1.2.3.4 10.0.0.5 1 443 52 S 1 0 8192 - - - RECEIVE\n"
        "2024-03-31 03:30:00 DROP TCP 1.2.3.4 10.0.0.5 1 443 52 S 1 0 8192 - - - RECEIVE\n",
    )
    frame, report = _read(path, tz="Europe/Berlin")
    # 02:30 does not exist on the spring-forward night in Berlin; the date 2024-13-45 is invalid.
    assert frame.height == 1
    assert report.records == 4 and report.records_skipped == 3
    assert report.partial
    assert any("line 7" in str(i) for i in report.issues)


def test_without_a_zone_times_stay_local_and_say_so(tmp_path: Path) -> None:
    """No zone given: the time is stored as written (as if UTC) and each row is marked, so
    that correlation can place it in the zone the guest's own System log names."""
    path = tmp_path / "pfirewall.log"
    path.write_text(
        HEADER
        + "2024-03-05 14:00:01 DROP TCP 10.0.0.9 10.0.0.5 50000 443 52 S 1 0 64240 - - - RECEIVE\n"
    )
    frame, report = read_pfirewall(path, PfirewallSettings(), str(path), None, "ab" * 32)
    assert frame["timestamp"][0] == datetime(2024, 3, 5, 14, 0, 1, tzinfo=timezone.utc)
    assert json.loads(frame["data"][0])["local_zone"] == "unknown"
    given, _ = _read(path, tz="Europe/Berlin")
    assert json.loads(given["data"][0])["local_zone"] == "Europe/Berlin"
    assert report.records_skipped == 0


def _drop(local: str) -> str:
    return f"{local} DROP TCP 203.0.113.9 10.0.0.5 51000 443 52 S 1 0 8192 - - - RECEIVE\n"


def test_the_hour_repeated_in_autumn_is_read_by_the_order_of_the_log(tmp_path: Path) -> None:
    """Berlin shows 02:00-02:59 twice on 2024-10-27. The log writes in order, so the
    lines after the clock steps back are the second pass (UTC+01:00), those before it
    the first (UTC+02:00); read at one offset, the second pass landed an hour early.
    The expected instants are Python's zoneinfo's, with ``fold`` saying which pass."""
    walls = ["01:55:00", "02:10:00", "02:59:58", "02:00:03", "02:10:00", "02:59:59", "03:00:02"]
    folds = [0, 0, 0, 1, 1, 1, 0]
    path = _log(tmp_path, "".join(_drop(f"2024-10-27 {w}") for w in walls))
    frame, report = _read(path, tz="Europe/Berlin")
    berlin = ZoneInfo("Europe/Berlin")
    expected = [
        datetime.fromisoformat(f"2024-10-27T{w}").replace(tzinfo=berlin, fold=f)
        for w, f in zip(walls, folds, strict=True)
    ]
    assert frame["timestamp"].to_list() == [e.astimezone(timezone.utc) for e in expected]
    assert not report.issues


def test_a_repeated_hour_the_log_cannot_place_is_named(tmp_path: Path) -> None:
    """No line before the step back (a quiet night): nothing tells which pass 02:20 is.
    It is read at the offset before the change, and an issue names the line."""
    path = _log(tmp_path, _drop("2024-10-27 01:40:00") + _drop("2024-10-27 02:20:00"))
    frame, report = _read(path, tz="Europe/Berlin")
    assert frame["timestamp"][1] == datetime(2024, 10, 27, 0, 20, tzinfo=timezone.utc)
    (issue,) = report.issues
    assert str(issue).startswith("lines 7..7: 1 line(s) fall in the hour repeated")
    assert report.records_skipped == 0
