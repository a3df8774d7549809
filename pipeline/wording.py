"""The words every lmtrace output shares: the CLI, report.html, report.md, the timeline.

A support engineer pastes these into a ticket, so they must read as plain words, and
say one thing one way wherever they appear: a guest clock that runs ahead of the host
is "ahead" in the report, the terminal and the timeline alike, never "+3.2 s" in one
and "shifted -3.2 s" in another. Codes stay in the data (findings.json keeps
``match_method``, ``clock_offset_s``, catalog kinds); this module turns them into words
late, as habit 7 asks. Verdict reasons and window-end words are the findings' own
(pipeline/findings.py, pipeline/quarantine.py) and are not repeated here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from pipeline.verdict_table import load_table

CLOCK_AGREES_S = 0.0005  # below this the offset prints as 0.000 s: say the clocks agree

UNSEEN_DROPS = "not logged"
"""Blocked inbound traffic of a guest that logs none (no WFP auditing, no pfirewall.log):
a count of 0 there would reassure where nothing could be seen."""

SOURCE_WORDS = {
    "stated": "documented publicly",
    "seen": "seen in real logs",
    "inferred": "inferred, not confirmed by a public source",
}
"""How sure a catalog fact or remediation is, in words (the catalog's confidence codes)."""

REASONS_SHOWN = 3
"""Reasons listed under a verdict before "and N more": with 30 migrations, 18 lines of
the same sentence hide the one that differs."""


def clock_words(offset_s: float | None, method: str | None = None) -> str:
    """'guest clock 3.056 s ahead of the host (estimated)'; the offset is guest minus host."""
    if offset_s is None:
        return "guest clock offset unknown (own clock shown)"
    how = f" ({method})" if method else ""
    if abs(offset_s) < CLOCK_AGREES_S:
        return f"guest clock agrees with the host{how}"
    side = "ahead of" if offset_s > 0 else "behind"
    return f"guest clock {abs(offset_s):.3f} s {side} the host{how}"


def clock_words_expr(offset_s: pl.Expr, method: pl.Expr | None = None) -> pl.Expr:
    """:func:`clock_words` as a polars expression (timeline labels, one per lane)."""
    how = pl.lit("") if method is None else pl.format(" ({})", method).fill_null("")
    size = offset_s.abs().round(3).cast(pl.String)
    words = (
        pl.when(offset_s.is_null())
        .then(pl.lit("guest clock offset unknown (own clock shown)"))
        .when(offset_s.abs() < CLOCK_AGREES_S)
        .then(pl.lit("guest clock agrees with the host"))
        .when(offset_s > 0)
        .then(pl.format("guest clock {} s ahead of the host", size))
        .otherwise(pl.format("guest clock {} s behind the host", size))
    )
    return pl.when(offset_s.is_null()).then(words).otherwise(words + how)


KIND_SPELLING = ((".", " "), ("_", " "), ("wfp ", "WFP "), ("pflog ", "pfirewall.log "))
"""How a catalog kind becomes words, in order: 'wfp.blocked_packet' -> 'WFP blocked packet'."""


def kind_words(kind: object) -> str:
    """A catalog kind as words: 'migration.completed' -> 'migration completed'."""
    text = str(kind or "event")
    for code, word in KIND_SPELLING:
        text = text.replace(code, word)
    return text


def kind_words_expr(kind: pl.Expr) -> pl.Expr:
    """:func:`kind_words` as a polars expression (the timeline's hover texts)."""
    text = kind.cast(pl.String).fill_null("event")
    for code, word in KIND_SPELLING:
        text = text.str.replace_all(code, word, literal=True)
    return text


def generated_by(version: object) -> str:
    """'lmtrace 1.2.0': the program that wrote a page, as every page states it (a reader
    of an archived page must know which version made it); 'lmtrace' when not known."""
    return f"lmtrace {version}" if version else "lmtrace"


def source_words(confidence: object) -> str:
    return SOURCE_WORDS.get(str(confidence), str(confidence))


def banner(migrations: Iterable[Mapping[str, Any]]) -> str | None:
    """'18 of 30 migrations affected, 4 VMs; 2 likely affected; 10 not affected', or None
    for a single migration (its one reason says it all)."""
    rows = list(migrations)
    if len(rows) < 2:
        return None
    counts = Counter(str(m.get("verdict")) for m in rows)
    table = load_table()
    hit = {m.get("vm_name") for m in rows if m.get("verdict") in table.cut_off}
    vms = f", {len(hit)} VM{'s' if len(hit) != 1 else ''}" if hit else ""
    gravest, *others = table.verdicts
    parts = [f"{counts.pop(gravest, 0)} of {len(rows)} migrations {gravest}{vms}"]
    for verdict in others:
        if counts.get(verdict):
            parts.append(f"{counts[verdict]} {verdict.replace('-', ' ')}")
    return "; ".join(parts)


def verdict_css() -> str:
    """CSS rules that colour each verdict: ``.verdict-NAME`` (a banner) and ``.v-NAME`` (text)."""
    return "\n".join(
        f".verdict-{v.name} {{ background: {v.colour}; }} .v-{v.name} {{ color: {v.colour}; }}"
        for v in load_table().meanings
    )


def shown_reasons(reasons: list[str]) -> tuple[list[str], int]:
    """The reasons to list under a verdict, and how many more there are."""
    return reasons[:REASONS_SHOWN], max(len(reasons) - REASONS_SHOWN, 0)


def verdict_lines(doc: Mapping[str, Any]) -> list[str]:
    """The lines under a verdict (``doc``: findings.json's ``reasons`` and ``migrations``):
    a count over many migrations, the first reasons, and how many more there are (each
    migration's own reason is in its evidence)."""
    shown, more = shown_reasons(list(doc.get("reasons", [])))
    lines = [b] if (b := banner(doc.get("migrations", []))) else []
    lines += shown
    if more:
        lines.append(f"… and {more} more like these (each migration's reason is under Evidence)")
    return lines
