"""report.html and report.md, checked against findings.json of real analyses.

Two simulated bundles go through ``analyze``: quarantine-bug (affected) with one
extra host log truncated by the project's writer, so that the report has
something unreadable to name, and no-audit (no WFP auditing: the verdict cannot
rest on logged drops, so the report must say what to collect). Facts are read
from findings.json, which the reports must render without recomputing.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import polars as pl
import pytest
from markdown_it import MarkdownIt

from parsers.evtx_writer import Damage, EventSpec, WriteOptions, write_evtx
from pipeline.analyze import STORE_FOLDER, Analysis, AnalyzeSettings, analyze
from pipeline.report import report_html, report_markdown
from pipeline.simulate import SimulateOptions, simulate
from pipeline.store import scan_files

DAMAGED = "HV-NODE2/Microsoft-Windows-Hyper-V-Worker-Operational.evtx"


class _Text(HTMLParser):
    """Visible text and the tags of a page, as a browser would parse them."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    return parser


@pytest.fixture(scope="module")
def bug(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    """simulate --scenario quarantine-bug --seed 7, plus one truncated host log."""
    root = tmp_path_factory.mktemp("bug")
    simulate(SimulateOptions("quarantine-bug", seed=7), root / "bundle")
    start = datetime(2025, 3, 4, 8, 0, tzinfo=timezone.utc)
    events = [
        EventSpec(
            timestamp=start + timedelta(seconds=i),
            provider="Microsoft-Windows-Hyper-V-Worker",
            event_id=18500,
            channel="Microsoft-Windows-Hyper-V-Worker-Operational",
            computer="HV-NODE2",
            event_data=(("VmName", f"VM{i:03d}"), ("Note", "x" * 200)),
        )
        for i in range(400)
    ]
    write_evtx(
        root / "bundle" / DAMAGED,
        events,
        WriteOptions(damage=Damage(truncate_bytes=20_000)),
    )
    return analyze([root / "bundle"], root / "out", AnalyzeSettings())


@pytest.fixture(scope="module")
def no_audit(example_analysis) -> Analysis:
    """examples/bundles/no-audit (simulate --scenario no-audit --seed 1), analysed once
    per session and shared with the other tests that read its outputs."""
    return example_analysis("no-audit")


def _doc(analysis: Analysis) -> dict:
    return json.loads((analysis.out / "findings.json").read_text(encoding="utf-8"))


def _html(analysis: Analysis) -> str:
    return (analysis.out / "report.html").read_text(encoding="utf-8")


def _section(page: str, anchor: str) -> str:
    """The HTML from the element with id ``anchor`` to the next h2 or h3."""
    start = page.index(f'id="{anchor}"')
    nxt = re.compile(r"<h[23] ").search(page, start + 1)
    return page[start : nxt.start() if nxt else len(page)]


def test_verdict_first_then_every_migration(bug: Analysis) -> None:
    doc = _doc(bug)
    assert doc["verdict"] == "affected"
    text = "".join(_parse(_html(bug)).text)
    verdict_at = text.index("Affected: a live migration cut the guest off inbound traffic")
    assert verdict_at < text.index(doc["reasons"][0]) < text.index("Migrations")
    table = _section(_html(bug), "migrations")
    for m in doc["migrations"]:
        assert f">{m['migration_id']}</a>" in table
        assert f"{m['blackout_s']:.3f} s" in table
        assert f"{m['blocked_inbound']} (TCP {m['blocked_tcp']}" in table


def test_evidence_names_the_file_and_record_of_each_fact(bug: Analysis) -> None:
    doc = _doc(bug)
    page = _html(bug)
    for m in doc["migrations"]:
        evidence = (
            _section(page, f"ev-{m['migration_id']}")
            + page.split(f'id="ev-{m["migration_id"]}"')[1].split("</table>")[0]
        )
        # A window the safety timeout ended has no closing event to point at.
        assert (m["end_ref"] is None) == m["end_evidence"].startswith("timeout")
        for ref in [m["trigger_ref"], m["end_ref"], *m["host_evidence"]]:
            if ref is None:
                continue
            row = re.search(
                rf"{re.escape(ref['source_path'])}</span></td><td>record {ref['record_id']}<",
                evidence,
            )
            assert row, (ref["source_path"], ref["record_id"])
        first_blocked = next(
            b for b in doc["blocked_inbound"] if b["migration_id"] == m["migration_id"]
        )
        assert f"record {first_blocked['record_id']}<" in evidence
        events = [b for b in doc["blocked_inbound"] if b["migration_id"] == m["migration_id"]]
        more = len(events) - 10
        if more > 0:
            assert f"{more} more blocked events in blocked.csv" in evidence


def test_remediation_marks_workarounds_as_temporary_tradeoffs(bug: Analysis) -> None:
    doc = _doc(bug)
    page = _html(bug)
    boxes = re.findall(r'<div class="(fix|workaround)">(.*?)</div>', page, flags=re.S)
    assert len(boxes) == len(doc["remediation"]) > 1
    for r in doc["remediation"]:
        kind, body = next((k, b) for k, b in boxes if r["title"] in b)
        if r["permanent"]:
            assert kind == "fix" and "FIX" in body
        else:
            assert kind == "workaround" and "TEMPORARY WORKAROUND" in body
            assert "Security trade-off:" in body and r["tradeoff"] in body
    assert page.index('class="fix"') < page.index('class="workaround"')  # the fix comes first


def test_integrity_names_what_could_not_be_read(bug: Analysis) -> None:
    integ = _doc(bug)["integrity"]
    # the cut chunk is read up to the cut: records unreadable, no chunk
    assert integ["files_with_problems"] == 1 and integ["chunks_unreadable"] == 0
    assert integ["records_unreadable"] > 0
    section = _section(_html(bug), "integrity")
    sorts = ("logs_read", "logs_repeated", "files_not_logs", "files_refused")
    assert sum(integ[key] for key in sorts) == integ["files"]
    said = (
        f"{integ['files']} files: {integ['logs_read']} logs read, {integ['logs_repeated']}"
        f" repeating a log already read (stored once), {integ['files_not_logs']} not a log, 0"
        f" refused; 1 with problems; {integ['records_read']:,} records read, "
        f"{integ['records_unreadable']:,} records and 0 chunks unreadable"
    )
    assert said in section
    problem = integ["problems"][0]
    assert problem["source_path"].endswith(DAMAGED) and DAMAGED in section
    assert f"<td>{problem['chunks_skipped']}</td>" in section
    assert problem["errors"][0] in "".join(_parse(section).text)
    md = (bug.out / "report.md").read_text(encoding="utf-8")
    assert said in md
    # report.md names the file too, with what was lost and why, escaped as all log text
    rendered = "".join(_parse(MarkdownIt("commonmark").render(md)).text)
    lost = f"{problem['records_skipped']:,} records unreadable: {problem['errors'][0]}"
    assert f"{problem['source_path']}: {lost}" in rendered


def test_markdown_names_at_most_ten_problem_files_then_counts_the_rest(bug: Analysis) -> None:
    doc = _doc(bug)
    [problem] = doc["integrity"]["problems"]
    doc["integrity"]["problems"] = [
        {**problem, "source_path": f"/bundle/log_{i:02d}.evtx"} for i in range(13)
    ]
    rendered = "".join(_parse(MarkdownIt("commonmark").render(report_markdown(doc))).text)
    assert "/bundle/log_09.evtx" in rendered and "/bundle/log_10.evtx" not in rendered
    assert "and 3 more (report.html and findings.json name every one)" in rendered
    page = "".join(_parse(report_html(doc)).text)
    assert "/bundle/log_12.evtx" in page


def test_missing_logs_say_how_to_collect_them(no_audit: Analysis) -> None:
    doc = _doc(no_audit)
    assert doc["verdict"] in ("likely-affected", "inconclusive") and doc["collect"]
    section = _section(_html(no_audit), "missing")
    md = (no_audit.out / "report.md").read_text(encoding="utf-8")
    rendered = MarkdownIt("commonmark").render(md)
    for hint in doc["collect"]:
        assert _parse(section).text.count(hint["how"]) == 1
        assert hint["how"] in "".join(_parse(rendered).text)


def test_drops_a_guest_does_not_log_are_not_shown_as_zero(no_audit: Analysis) -> None:
    """The no-audit guest logs no WFP events and keeps no pfirewall.log: its migration's
    blocked cell says so in both reports, never '0'."""
    [migration] = _doc(no_audit)["migrations"]
    assert migration["drops_observable"] is False
    table = _section(_html(no_audit), "migrations")
    md = (no_audit.out / "report.md").read_text(encoding="utf-8")
    for text in (_parse(table).text, md):
        assert "not logged (no WFP auditing or pfirewall.log)" in "".join(text)
        assert "0 (TCP 0" not in "".join(text)


def test_every_time_is_labelled_utc(bug: Analysis) -> None:
    text = " ".join(_parse(_html(bug)).text)
    times = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{3})?(?: UTC)?", text)
    assert times and all(t.endswith("UTC") for t in times)
    md = (bug.out / "report.md").read_text(encoding="utf-8")
    assert all(t.endswith("UTC") for t in re.findall(r"\d\d:\d\d:\d\d(?:\.\d{3})?(?: UTC)?", md))


def test_markdown_is_short_and_carries_the_same_facts(bug: Analysis) -> None:
    doc = _doc(bug)
    md = (bug.out / "report.md").read_text(encoding="utf-8")
    lines = md.splitlines()
    assert "**AFFECTED**" in lines[0]
    named = len(doc["integrity"]["problems"])  # the files not read in full, under a heading
    assert len(lines) < 40 + named + 3
    rows = [line for line in lines if line.startswith("| M")]
    assert len(rows) == len(doc["migrations"])
    for m in doc["migrations"]:
        assert f"{m['trigger_ref']['source_path']} record {m['trigger_ref']['record_id']}" in md
        # The evidence counts logged events; the table counts packets: said apart, so that
        # 90 events of 51 packets do not read as two counts of one thing.
        events = [b for b in doc["blocked_inbound"] if b["migration_id"] == m["migration_id"]]
        assert f"first of {len(events)} logged inbound drop events" in md
        assert len(events) != m["blocked_inbound"]  # the example logs both 5152 and 5157
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    assert rendered.count("<tr>") == len(doc["migrations"]) + 1
    assert "TEMPORARY WORKAROUND" in rendered
    for link in ("timeline.html",):
        assert link in md and (bug.out / link).is_file()


EVIL = ("<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "[x](javascript:alert(3))")


def test_log_strings_show_as_text_in_both_formats(bug: Analysis) -> None:
    doc = _doc(bug)
    for i, evil in enumerate(EVIL):
        doc["reasons"].insert(0, f"reason {evil}")  # the first reasons are shown
        doc["migrations"][0]["vm_name"] = evil
        doc["migrations"][0]["trigger_ref"]["source_path"] = f"/bundle/{evil}.evtx"
        doc["blocked_inbound"][i]["remote_address"] = evil
        doc["machines"][0]["computer"] = evil
        page = _parse(report_html(doc, ["timeline.html"]))
        assert "script" not in page.tags and "img" not in page.tags
        assert page.tags.count("a") == len(doc["migrations"]) + 8  # ids, nav, one timeline
        visible = "".join(page.text)
        assert f"reason {evil}" in visible and f"/bundle/{evil}.evtx" in visible
        md_html = (
            MarkdownIt("commonmark", {"html": True})
            .enable("table")
            .render(report_markdown(doc, ["timeline.html"]))
        )
        rendered = _parse(md_html)
        assert "script" not in rendered.tags and "img" not in rendered.tags
        assert "a" not in rendered.tags  # no link made from log text
        assert f"reason {evil}" in "".join(rendered.text)


def test_every_file_seen_is_counted_alike_everywhere(example_analysis) -> None:
    """The example holds 14 logs (three of them byte-identical empty logs) and its
    ground_truth.json: the ingest summary, the files table, findings.json and the report
    count the same 15 files the same way, and each copy is listed, naming the log read."""
    analysis = example_analysis("quarantine-bug")
    listed = scan_files(analysis.out / STORE_FOLDER).collect()
    integ = _doc(analysis)["integrity"]
    by_status = analysis.ingest.files
    assert listed.height == integ["files"] == sum(by_status.values()) == 15
    sorts = (integ["logs_read"], integ["logs_repeated"], integ["files_not_logs"])
    assert sorts == (by_status["read"], by_status["repeated"], by_status["skipped"]) == (12, 2, 1)
    ha = "Microsoft-Windows-Hyper-V-High-Availability-Admin.evtx"
    copies = listed.filter(pl.col("same_as").is_not_null()).sort("source_path")
    assert [p.split("/")[-2:] for p in copies["source_path"]] == [
        ["HV-NODE1", "Microsoft-Windows-Hyper-V-Worker-Admin.evtx"],
        ["HV-NODE2", ha],
    ]
    assert all(s.endswith(f"HV-NODE1/{ha}") for s in copies["same_as"])
    said = "15 files: 12 logs read, 2 repeating a log already read (stored once), 1 not a log"
    assert said in (analysis.out / "report.md").read_text(encoding="utf-8")
