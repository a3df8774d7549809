"""report.html and report.md: the findings as a support engineer hands them to a customer.

The problem: findings.json is complete but nobody pastes JSON into a ticket. Both
reports render the findings document (:func:`pipeline.outputs.findings_document`,
the same dict findings.json is written from) and nothing else, so a report can
never disagree with the JSON (habit 9). Order follows what a reader asks: the
verdict and why, the migrations, the evidence behind each (event, file, record
id), what is missing and how to collect it, what to do (workarounds marked as
temporary security trade-offs), what could not be read, and the timelines.

Every string that came from a log (VM and computer names, paths, reasons that
quote them) is escaped for its target: HTML entities in report.html,
backslash escapes in report.md, so ``<script>`` shows as text in both.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline import report_facts as facts
from pipeline.discover import display_path
from pipeline.printable import printable
from pipeline.verdict_table import load_table
from pipeline.wording import (
    UNSEEN_DROPS,
    clock_words,
    generated_by,
    kind_words,
    source_words,
    verdict_css,
    verdict_lines,
)

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
EVIDENCE_BLOCKED_MAX = 10  # blocked events listed per migration; the rest are in blocked.csv


Doc = Mapping[str, Any]
PROTOCOL_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}


# ----- value formatting (shared by both formats; escaping is per format)


def utc(value: object, precise: bool = True) -> str:
    """A time as 'YYYY-MM-DD HH:MM:SS.mmm UTC'; '—' when absent."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S.%f")[: -3 if precise else -7]
        return f"{text} UTC"
    return str(value)


def seconds(value: object, digits: int = 1) -> str:
    return "—" if value is None else f"{float(value):.{digits}f} s"  # type: ignore[arg-type]


def evidence_place(ref: Mapping[str, Any] | None) -> tuple[str, str]:
    """(file, 'record N') of an evidence reference; the member follows the archive with '!'."""
    if not ref:
        return ("—", "—")
    path = display_path(str(ref.get("source_path") or "?"), ref.get("member"))
    return path, f"record {ref.get('record_id', '?')}"


def quarantine_text(m: Mapping[str, Any]) -> str:
    if m.get("q0") is None:
        return "no network change" if m.get("machine") else "—"
    return (
        f"{m.get('window_words') or '?'}, {seconds(m.get('q_duration_s'))}, "
        f"ended by {m.get('end_words') or '?'}"
    )


def protocol_name(value: object) -> str:
    """Words made late (habit 7): the store keeps the IANA number."""
    return PROTOCOL_NAMES.get(value, f"protocol {value}") if isinstance(value, int) else "?"


def blocked_text(m: Mapping[str, Any]) -> str:
    """Blocked inbound by protocol; a dash where no guest was found (nothing could be
    counted), and no count where the guest logs no drops (0 would reassure)."""
    if not m.get("machine"):
        return "—"
    if m.get("drops_observable") is False:
        return f"{UNSEEN_DROPS} (no WFP auditing or pfirewall.log)"
    return (
        f"{m.get('blocked_inbound', 0)} (TCP {m.get('blocked_tcp', 0)}, "
        f"UDP {m.get('blocked_udp', 0)}, other {m.get('blocked_other', 0)})"
    )


def offset_text(m: Mapping[str, Any]) -> str:
    """The guest clock offset applied, and how much of it the guest logged itself as clock
    steps (Kernel-General 1, referenced in the evidence) rather than lmtrace estimated."""
    if not m.get("machine"):
        return "—"
    text = clock_words(m.get("clock_offset_s"), m.get("offset_method"))
    if m.get("clock_steps_s") and m.get("clock_offset_s") is not None:
        text += (
            f"; {float(m['clock_steps_s']):+.3f} s of it are clock steps the guest logged"
            " (Kernel-General 1)"
        )
    return text


def clock_step_words(m: Mapping[str, Any]) -> str | None:
    """'clock step (Kernel-General 1, +90.000 s)' for the last logged step applied, or None."""
    ref = m.get("clock_step_ref")
    if not ref or not m.get("clock_steps_s"):
        return None
    return f"clock step (Kernel-General 1, {float(ref.get('delta_s') or 0):+.3f} s)"


def integrity_text(integ: Mapping[str, Any]) -> str:
    if not integ:
        return "No file table was given: read problems are not known."
    incomplete = f"Warning: {integ['store_incomplete']}. " if integ.get("store_incomplete") else ""
    not_logs = integ.get("files_not_logs", 0)
    return incomplete + (
        f"{integ.get('files', 0)} files: {integ.get('logs_read', 0)} logs read, "
        f"{integ.get('logs_repeated', 0)} repeating a log already read (stored once), "
        f"{not_logs} not {'a log' if not_logs == 1 else 'logs'}, "
        f"{integ.get('files_refused', 0)} refused; "
        f"{integ.get('files_with_problems', 0)} with problems; "
        f"{integ.get('records_read', 0):,} records read, "
        f"{integ.get('records_unreadable', 0):,} records and "
        f"{integ.get('chunks_unreadable', 0):,} chunks unreadable."
        + _altered_text(integ.get("chunks_altered") or 0)
    )


def _altered_text(chunks: int) -> str:
    """What chunks failing their checksums mean (parsers/evtx_integrity.py); nothing when
    there are none."""
    if not chunks:
        return ""
    many = chunks != 1
    return (
        f" {chunks:,} chunk{'s' if many else ''} read in full {'do' if many else 'does'} not"
        f" match {'their' if many else 'its'} checksums: {'their' if many else 'its'} bytes"
        " changed after Windows wrote them (damage, recovery from a shadow copy, or editing),"
        f" so {'their' if many else 'its'} records are used but may not be what Windows"
        " logged (named below)."
    )


def catalog_fit_text(doc: Doc) -> str:
    """One sentence on how the event catalog fit the bundle (pipeline/catalog_check.py)."""
    check = doc.get("catalog_check") or {}
    entries = {(f.get("provider"), f.get("event_id")) for f in check.get("fields", [])}
    problems = check.get("problems") or []
    if not problems:
        return (
            f"Every one of the {len(entries)} catalog entries that matched events here found"
            " the payload fields it expects, and no Hyper-V event went unrecognised."
        )
    return (
        f"{len(problems)} sign(s) that the catalog's guesses may not fit these logs (events"
        " whose expected fields came out empty, or Hyper-V events no entry knows); findings"
        " that rest on them are less sure. Correct the catalog with --catalog extra.toml"
        " (lmtrace catalog check STORE shows the same for a store)."
    )


def _blocked_of(doc: Doc, migration_id: str) -> list[Mapping[str, Any]]:
    return [b for b in doc.get("blocked_inbound", []) if b.get("migration_id") == migration_id]


# ----- HTML


def headline(verdict: str) -> str:
    """The report's words for a verdict (verdicts.toml); an unknown one as it is."""
    meaning = load_table().meaning(verdict)
    return meaning.headline if meaning else verdict


def h(value: object) -> str:
    """Escape anything for HTML text or a quoted attribute; None shows as a dash.
    Control characters show escaped (a bidi override would reorder the page's text)."""
    return "—" if value is None else html.escape(printable(value), quote=True)


CSS = """
:root { --red:#c62828; --orange:#ef6c00; --green:#2e7d32; --grey:#616161; }
body { font-family: "Segoe UI", Helvetica, Arial, sans-serif; color:#212121; margin:0;
       background:#fafafa; line-height:1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 48px; background:#fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin-top: 32px;
     border-bottom: 2px solid #eceff1; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 20px 0 6px; }
.meta { color:#616161; font-size: 13px; }
.verdict { border-radius: 6px; padding: 14px 18px; margin: 18px 0; color:#fff; }
.verdict b { font-size: 20px; display:block; }
.verdict ul { margin: 8px 0 0; padding-left: 20px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; margin: 6px 0; }
th, td { border-bottom: 1px solid #e0e0e0; padding: 5px 8px; text-align: left;
         vertical-align: top; }
th { background:#eceff1; font-weight: 600; }
td:last-child { white-space: nowrap; }
span.path { font-family: Consolas, Menlo, monospace; font-size: 12px; word-break: break-all; }
.v { font-weight: 600; }
.fix { border-left: 4px solid var(--green); padding: 6px 12px; margin: 10px 0; background:#f1f8e9; }
.workaround { border-left: 4px solid var(--orange); padding: 6px 12px; margin: 10px 0;
              background:#fff8e1; }
.tag { display:inline-block; font-size: 11px; font-weight: 700; padding: 1px 6px;
       border-radius: 3px; color:#fff; margin-right: 6px; }
.tag-fix { background: var(--green); } .tag-workaround { background: var(--orange); }
code { font-family: Consolas, Menlo, monospace; font-size: 12px; background:#f5f5f5;
       padding: 1px 4px; }
.muted { color:#757575; }
nav { font-size: 13px; margin: 6px 0 0; }
nav a.button { background:#1565c0; color:#fff; padding: 3px 10px; border-radius: 4px;
               text-decoration: none; margin-left: 8px; }
"""


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """Cells are HTML already (escaped by the caller); head is lmtrace's own text."""
    th = "".join(f"<th>{c}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _verdict_html(verdict: str) -> str:
    return f'<span class="v v-{h(verdict)}">{h(verdict)}</span>'


def _evidence_rows(m: Mapping[str, Any], doc: Doc) -> list[list[str]]:
    rows = []
    for ev in m.get("host_evidence") or []:
        file, record = evidence_place(ev)
        rows.append(
            [
                h(kind_words(ev.get("kind"))),
                h(ev.get("event_id")),
                h(ev.get("computer")),
                h(utc(ev.get("timestamp"))),
                f'<span class="path">{h(file)}</span>',
                h(record),
            ]
        )
    for label, ref, at in (
        ("trigger (guest)", m.get("trigger_ref"), m.get("q0")),
        ("window end (guest)", m.get("end_ref"), m.get("q_end")),
    ):
        if ref:
            file, record = evidence_place(ref)
            rows.append(
                [
                    f"{h(kind_words(ref.get('kind')))} <span class='muted'>{label}</span>",
                    h(ref.get("event_id")),
                    h(m.get("machine")),
                    h(utc(at)) + " <span class='muted'>(guest clock)</span>",
                    f'<span class="path">{h(file)}</span>',
                    h(record),
                ]
            )
    step = clock_step_words(m)
    if step:
        file, record = evidence_place(m["clock_step_ref"])
        rows.append(
            [
                f"{h(step)} <span class='muted'>guest clock offset</span>",
                "1",
                h(m.get("machine")),
                "—",
                f'<span class="path">{h(file)}</span>',
                h(record),
            ]
        )
    blocked = _blocked_of(doc, m["migration_id"])
    for b in blocked[:EVIDENCE_BLOCKED_MAX]:
        file, record = evidence_place(b)
        rows.append(
            [
                f"{h(kind_words(b.get('kind')))}: "
                f"{h(b.get('remote_address'))}:{h(b.get('remote_port'))}"
                f" → port {h(b.get('local_port'))} {h(protocol_name(b.get('protocol')))}",
                h(b.get("event_id")),
                h(b.get("computer")),
                h(utc(b.get("timestamp"))) + " <span class='muted'>(guest clock)</span>",
                f'<span class="path">{h(file)}</span>',
                h(record),
            ]
        )
    if len(blocked) > EVIDENCE_BLOCKED_MAX:
        rows.append(
            [
                f"<span class='muted'>… {len(blocked) - EVIDENCE_BLOCKED_MAX} more blocked"
                " events in blocked.csv</span>",
                "",
                "",
                "",
                "",
                "",
            ]
        )
    return rows


def report_html(doc: Doc, timelines: Sequence[str] = ()) -> str:
    """The full report as one self-contained HTML page (no scripts, no external files)."""
    verdict = str(doc.get("verdict", "inconclusive"))
    migs: list[Mapping[str, Any]] = list(doc.get("migrations", []))
    parts = [
        "<h1>Hyper-V live migration: network impact</h1>",
        f'<p class="meta">Generated {h(utc(doc.get("generated_at"), precise=False))} by'
        f" {h(generated_by(doc.get('lmtrace_version')))}."
        " All times are UTC; guest times are as the guest logged them unless marked"
        " host clock.</p>",
        f'<section class="verdict verdict-{h(verdict)}" id="verdict"><b>'
        f"{h(headline(verdict))}</b><ul>"
        + "".join(f"<li>{h(r)}</li>" for r in verdict_lines(doc))
        + "</ul></section>",
    ]
    incomplete = (doc.get("integrity") or {}).get("store_incomplete")
    if incomplete:
        parts.append(f'<p class="workaround"><b>Warning:</b> {h(incomplete)}.</p>')
    if doc.get("notes"):
        parts.append(
            '<section id="notes"><b>Notes</b><ul>'
            + "".join(f"<li>{h(n)}</li>" for n in doc["notes"])
            + "</ul></section>"
        )
    nav = [
        f'<a href="#{a}">{t}</a>'
        for a, t in (
            ("migrations", "Migrations"),
            ("evidence", "Evidence"),
            ("missing", "Missing logs"),
            ("remediation", "Remediation"),
            ("integrity", "Integrity"),
            ("timelines", "Timelines"),
        )
    ]
    button = (
        f' <a class="button" href="{h(timelines[0])}">Open the timeline</a>' if timelines else ""
    )
    parts.append(f"<nav>{' · '.join(nav)}{button}</nav>")
    # migrations
    rows = [
        [
            f'<a href="#ev-{h(m["migration_id"])}">{h(m["migration_id"])}</a>',
            h(m.get("vm_name")),
            f"{h(m.get('source'))} → {h(m.get('destination'))}",
            h(utc(m.get("start"))),
            h(utc(m.get("end"))),
            h(m.get("status")),
            h(seconds(m.get("blackout_s"), 3)),
            h(m.get("machine"))
            + (
                f" <span class='muted'>({h(m.get('match_note') or m.get('match_method'))})</span>"
                if m.get("machine")
                else ""
            ),
            h(offset_text(m)),
            h(quarantine_text(m)),
            h(blocked_text(m)),
            _verdict_html(str(m.get("verdict"))),
        ]
        for m in migs
    ]
    parts.append('<h2 id="migrations">Migrations</h2>')
    parts.append(
        _table(
            [
                "Id",
                "VM",
                "Source → destination",
                "Start",
                "End",
                "Status",
                "Blackout",
                "Guest (match)",
                "Guest clock",
                "Guest quarantine",
                "Blocked inbound",
                "Verdict",
            ],
            rows,
        )
        if rows
        else "<p>No live migration was found in the bundle.</p>"
    )
    if rows:
        parts.append(
            '<p class="meta">Guest clock: how far the guest\'s clock ran ahead of or behind'
            " the host's (on the command line, --clock-offset GUEST=+N s means N s ahead). An"
            " estimated offset is read from when the guest logged the network change after"
            " each completion, so it includes the guest's notification delay (typically under"
            " a second); quarantine durations are measured on the guest clock alone and do"
            " not depend on it.</p>"
        )
    # evidence
    parts.append('<h2 id="evidence">Evidence</h2>')
    for m in migs:
        parts.append(
            f'<h3 id="ev-{h(m["migration_id"])}">{h(m["migration_id"])} · {h(m.get("vm_name"))}'
            f" · {_verdict_html(str(m.get('verdict')))}</h3><p>{h(m.get('reason'))}</p>"
            + "".join(f"<p class='muted'>Note: {h(n)}</p>" for n in m.get("notes") or [])
        )
        parts.append(
            _table(
                ["Event", "Event id", "Computer", "Time", "File", "Record"],
                _evidence_rows(m, doc),
            )
        )
    # missing
    parts.append('<h2 id="missing">What is missing and how to collect it</h2>')
    collect = list(doc.get("collect", []))
    parts.append(
        _table(
            ["Missing when", "How to collect it"],  # the catalog's id is a code, not shown
            [[h(c.get("when")), h(c.get("how"))] for c in collect],
        )
        if collect
        else "<p>Nothing: the bundle holds every log the verdict needs.</p>"
    )
    # remediation
    parts.append('<h2 id="remediation">Remediation</h2>')
    remedies = list(doc.get("remediation", []))
    if not remedies:
        parts.append("<p>None needed for this verdict.</p>")
    for r in sorted(remedies, key=lambda r: not r.get("permanent")):
        permanent = bool(r.get("permanent"))
        steps = "".join(f"<li>{h(s)}</li>" for s in r.get("steps", []))
        tag = (
            '<span class="tag tag-fix">FIX</span>'
            if permanent
            else '<span class="tag tag-workaround">TEMPORARY WORKAROUND</span>'
        )
        tradeoff = (
            f"<p><b>Security trade-off:</b> {h(r.get('tradeoff'))}</p>" if r.get("tradeoff") else ""
        )
        parts.append(
            f'<div class="{"fix" if permanent else "workaround"}">{tag}<b>{h(r.get("title"))}</b>'
            f" <span class='muted'>(on the {h(r.get('where'))};"
            f" {h(source_words(r.get('confidence')))})</span>"
            f"<ol>{steps}</ol><p>{h(r.get('effect'))}</p>{tradeoff}</div>"
        )
    # integrity
    integ = doc.get("integrity") or {}
    parts.append('<h2 id="integrity">What could not be read</h2>')
    parts.append(f"<p>{h(integrity_text(integ))}</p>")
    problems = list(integ.get("problems", []))
    if problems:
        parts.append(
            _table(
                ["File", "Kind", "Records unreadable", "Chunks unreadable", "Errors"],
                [
                    [
                        f'<span class="path">{h(evidence_place(p)[0])}</span>',
                        h(p.get("kind")),
                        h(p.get("records_skipped")),
                        h(p.get("chunks_skipped")),
                        "<br>".join(h(e) for e in (p.get("errors") or [])[:5]),
                    ]
                    for p in problems
                ],
            )
        )
    altered = list(integ.get("altered", []))
    if altered:
        parts.append(
            _table(
                ["File", "Kind", "Chunks changed after Windows wrote them"],
                [
                    [
                        f'<span class="path">{h(evidence_place(a)[0])}</span>',
                        h(a.get("kind")),
                        "<br>".join(h(line) for line in (a.get("altered") or [])[:5]),
                    ]
                    for a in altered
                ],
            )
        )
    parts.append('<h2 id="catalog">Does the catalog fit these logs?</h2>')
    parts.append(f"<p>{h(catalog_fit_text(doc))}</p>")
    misfits = (doc.get("catalog_check") or {}).get("problems") or []
    if misfits:
        parts.append("<ul>" + "".join(f"<li>{h(line)}</li>" for line in misfits) + "</ul>")
    inputs = list(doc.get("inputs", []))
    if inputs:
        parts.append('<h2 id="inputs">What the case holds</h2>')
        parts.append(
            "<p>Every input analysed into this folder (the first run's and each --add):</p><ul>"
            + "".join(f'<li><span class="path">{h(i)}</span></li>' for i in inputs)
            + "</ul>"
        )
    # timelines
    parts.append('<h2 id="timelines">Timelines</h2>')
    parts.append(
        "<ul>" + "".join(f'<li><a href="{h(t)}">{h(t)}</a></li>' for t in timelines) + "</ul>"
        if timelines
        else "<p>No timeline was written.</p>"
    )
    machines = list(doc.get("machines", []))
    parts.append('<h2 id="machines">Machines in the bundle</h2>')
    parts.append(
        _table(
            [
                "Computer",
                "Role",
                "Role from",
                "OS and build",
                "Time zone",
                "Last boot",
                "Windows updates",
                "Names",
                "Channels",
                "First event",
                "Last event",
            ],
            [
                [
                    h(m.get("computer")),
                    h(m.get("role")),
                    h(m.get("role_source")),
                    h(facts.os_text(m)),
                    h(facts.zone_text(m)),
                    h(facts.boot_text(m)),
                    h(facts.updates_text(m)),
                    h(facts.names_text(m)),
                    h(len(m.get("channels") or [])),
                    h(utc(m.get("first_ts"), precise=False)),
                    h(utc(m.get("last_ts"), precise=False)),
                ]
                for m in machines
            ],
        )
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src 'self'\">"
        f"<title>lmtrace report: {h(verdict)}</title><style>{CSS}{verdict_css()}\n</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )


# ----- Markdown

_MD_SPECIAL = re.compile(r"([`*_{}\[\]<>|#!&~])")
_MD_BACKSLASH = re.compile(r"\\(?=[!-/:-@\[-`{-~]|$)")  # one that would escape what follows


def md(value: object) -> str:
    """Escape log text for Markdown: control characters show escaped (a newline as
    ``\\n``: a table row stays one line), punctuation that could start markup gets a
    backslash."""
    if value is None:
        return "—"
    text = _MD_BACKSLASH.sub(r"\\\\", " ".join(printable(value).split()))
    return _MD_SPECIAL.sub(r"\\\1", text)


MD_PROBLEM_FILES = 10
"""Files not read in full that report.md names one by one; report.html and findings.json
name every one (a damaged corpus can have hundreds, and report.md goes into a ticket)."""


def unread_words(p: Mapping[str, Any]) -> str:
    """'68 records unreadable: <first error>' for a file not read in full (one entry of
    the findings' integrity.problems)."""
    counts = [
        f"{n:,} {unit}{'s' if n != 1 else ''}"
        for n, unit in (
            (p.get("records_skipped") or 0, "record"),
            (p.get("chunks_skipped") or 0, "chunk"),
        )
        if n
    ]
    errors = p.get("errors") or []
    return ": ".join(
        ([" and ".join(counts) + " unreadable"] if counts else []) + ([errors[0]] if errors else [])
    )


def problem_lines(problems: Sequence[Mapping[str, Any]]) -> list[str]:
    """report.md's list of the files not read in full, each with what was lost and the
    first error, the first :data:`MD_PROBLEM_FILES` of them; none when all were read."""
    if not problems:
        return []
    lines = ["Not read in full:", ""] + [
        f"- {md(evidence_place(p)[0])}: {md(unread_words(p))}" for p in problems[:MD_PROBLEM_FILES]
    ]
    more = len(problems) - MD_PROBLEM_FILES
    if more > 0:
        lines.append(f"- and {more:,} more (report.html and findings.json name every one)")
    return [*lines, ""]


def report_markdown(doc: Doc, timelines: Sequence[str] = ()) -> str:
    """The short report for a ticket: verdict, migrations, evidence, gaps, remediation."""
    verdict = str(doc.get("verdict", "inconclusive"))
    lines = [
        f"## Hyper-V live migration network check: **{md(verdict.upper())}**",
        "",
        f"{md(headline(verdict))}. Generated "
        f"{md(utc(doc.get('generated_at'), precise=False))}"
        f" by {md(generated_by(doc.get('lmtrace_version')))};"
        " all times UTC.",
        "",
    ]
    lines += [f"- {md(r)}" for r in verdict_lines(doc)] + [""]
    incomplete = (doc.get("integrity") or {}).get("store_incomplete")
    if incomplete:
        lines += [f"**Warning:** {md(incomplete)}.", ""]
    if doc.get("notes"):
        lines += ["**Notes:**", ""] + [f"- {md(n)}" for n in doc["notes"]] + [""]
    migs = list(doc.get("migrations", []))
    if migs:
        lines += [
            "| Id | VM | Source → destination | End (UTC) | Blackout | Guest quarantine"
            " | Blocked inbound | Verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {md(m['migration_id'])} | {md(m.get('vm_name'))} | {md(m.get('source'))} → "
            f"{md(m.get('destination'))} | {md(utc(m.get('end')))} | "
            f"{md(seconds(m.get('blackout_s'), 3))} | {md(quarantine_text(m))} | "
            f"{md(blocked_text(m))} | {md(m.get('verdict'))} |"
            for m in migs
        ]
        lines += ["", "**Evidence** (file, record id):", ""]
        for m in migs:
            refs = []
            ends = [e for e in m.get("host_evidence") or [] if str(e.get("kind", "")) != ""]
            if ends:
                last = ends[-1]
                refs.append(
                    f"host {md(kind_words(last.get('kind')))} event {md(last.get('event_id'))} "
                    f"in {md(evidence_place(last)[0])} {md(evidence_place(last)[1])}"
                )
            for label, key in (("network change", "trigger_ref"), ("window end", "end_ref")):
                if m.get(key):
                    file, record = evidence_place(m[key])
                    refs.append(
                        f"{label} event {md(m[key].get('event_id'))} in {md(file)} {md(record)}"
                    )
            step = clock_step_words(m)
            if step:
                file, record = evidence_place(m["clock_step_ref"])
                refs.append(f"{md(step)} in {md(file)} {md(record)}")
            blocked = _blocked_of(doc, m["migration_id"])
            if blocked:
                file, record = evidence_place(blocked[0])
                refs.append(  # events, not the packets counted above: see blocked.csv
                    f"first of {len(blocked)} logged inbound drop events (a packet can be "
                    f"logged twice, as 5152 and 5157; blocked.csv lists them): event "
                    f"{md(blocked[0].get('event_id'))} in {md(file)} {md(record)}"
                )
            lines.append(
                f"- {md(m['migration_id'])}: " + "; ".join(refs or ["no event references"])
            )
        lines.append("")
    else:
        lines += ["No live migration was found in the bundle.", ""]
    collect = list(doc.get("collect", []))
    if collect:
        lines += ["**Missing, and how to collect it:**", ""]
        lines += [f"- {md(c.get('when'))}: {md(c.get('how'))}" for c in collect] + [""]
    remedies = sorted(doc.get("remediation", []), key=lambda r: not r.get("permanent"))
    if remedies:
        lines += ["**Remediation:**", ""]
        for i, r in enumerate(remedies, 1):
            label = "Fix" if r.get("permanent") else "TEMPORARY WORKAROUND, security trade-off"
            steps = " ".join(md(s) for s in r.get("steps", []))
            line = f"{i}. **{label}:** {md(r.get('title'))} ({md(r.get('where'))}). {steps}"
            if r.get("tradeoff"):
                line += f" *Trade-off:* {md(r.get('tradeoff'))}"
            lines.append(line)
        lines.append("")
    if doc.get("machines"):
        lines += ["**Machines:**", ""]
        lines += [
            f"- {md(m.get('computer'))} ({md(m.get('role'))}): {md(facts.os_text(m))}; zone"
            f" {md(facts.zone_text(m))}; last boot {md(facts.boot_text(m))}; updates"
            f" {md(facts.updates_text(m))}; names {md(facts.names_text(m))}"
            for m in doc["machines"]
        ] + [""]
    lines += [f"**Integrity:** {md(integrity_text(doc.get('integrity') or {}))}", ""]
    lines += problem_lines((doc.get("integrity") or {}).get("problems") or [])
    altered = (doc.get("integrity") or {}).get("altered") or []
    if altered:  # headed, not to read as more of the list above
        lines += ["Read, but changed after Windows wrote them:", ""]
    lines += [
        f"- {md(evidence_place(a)[0])}: {md('; '.join(a.get('altered') or []))}" for a in altered
    ] + ([""] if altered else [])
    if doc.get("inputs"):
        lines += ["**Inputs:** " + "; ".join(md(i) for i in doc["inputs"]), ""]
    lines += [f"**Catalog:** {md(catalog_fit_text(doc))}", ""]
    misfits = (doc.get("catalog_check") or {}).get("problems") or []
    lines += [f"- {md(line)}" for line in misfits] + ([""] if misfits else [])
    if timelines:
        lines += ["**Timelines:** " + ", ".join(md(t) for t in timelines), ""]
    return "\n".join(lines)


def write_report(doc: Doc, out: Path, timelines: Sequence[Path] = ()) -> list[Path]:
    """Write report.html and report.md into ``out``; timeline links are made relative to it."""
    out.mkdir(parents=True, exist_ok=True)
    links = [
        p.relative_to(out).as_posix() if p.is_relative_to(out) else p.as_posix()
        for p in timelines
        if p.suffix == ".html"
    ]
    (out / REPORT_HTML).write_text(report_html(doc, links), encoding="utf-8")
    (out / REPORT_MD).write_text(report_markdown(doc, links), encoding="utf-8")
    return [out / REPORT_HTML, out / REPORT_MD]
