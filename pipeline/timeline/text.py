"""The words of the timeline: log text escaped, hover texts and labels composed.

Why a module of its own: every hover text on the page is the same kind of
thing, lines of lmtrace's own markup (``<b>``, ``<br>``, fixed words)
interleaved with values from the logs, and the one rule that matters for all of
them is that a log value is escaped before it enters the figure, because plotly
renders a subset of HTML in labels and hover text. Keeping the texts here, built
by one helper (:func:`markup`), lets the layer modules draw shapes and lets a
reader check the escaping in one place.

Every function returns a polars expression over the columns of
:class:`Correlation` tables (or of the frames the layers derive from them), so
the texts are built column-wise, never row by row. A null value inside
:func:`markup` makes the whole text null, as ``concat_str`` does; values that
may be missing are given a stand-in (``?``, ``not logged``) by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from pipeline.printable import printable, printable_expr
from pipeline.wording import UNSEEN_DROPS, clock_words_expr, kind_words_expr

Part = str | pl.Expr
"""A piece of text: ``str`` is lmtrace's own markup, an expression a value (already escaped)."""


_ENTITIES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"), ("'", "&#39;"))
"""What plotly reads back, once: plotly.js decodes ``&amp; &lt; &gt;`` and numeric
entities in labels and hover text, but not ``&quot;``, which showed as written."""


def escaped(expr: pl.Expr) -> pl.Expr:
    """Log text made inert for plotly labels and hover text: control characters shown
    escaped (pipeline/shown.py), then & < > " ' as entities plotly decodes exactly once."""
    out = printable_expr(expr.cast(pl.String).fill_null(""))
    for char, entity in _ENTITIES:
        out = out.str.replace_all(char, entity, literal=True)
    return out


def escaped_text(value: object) -> str:
    """One value as :func:`escaped` writes a column (for titles and legend entries)."""
    out = printable(value)
    for char, entity in _ENTITIES:
        out = out.replace(char, entity)
    return out


def markup(*lines: Sequence[Part]) -> pl.Expr:
    """Lines of parts joined by ``<br>``: the one shape of every hover text and label."""
    parts: list[pl.Expr] = []
    for number, line in enumerate(lines):
        if number:
            parts.append(pl.lit("<br>"))
        parts += [pl.lit(part) if isinstance(part, str) else part for part in line]
    return pl.concat_str(parts)


def if_present(column: str, *parts: Part) -> pl.Expr:
    """The parts when ``column`` holds a value, else an empty string (never null)."""
    return pl.when(pl.col(column).is_not_null()).then(markup(parts)).otherwise(pl.lit(""))


def shown(expr: pl.Expr, missing: str = "?") -> pl.Expr:
    """A number (or other non-text value) as text, ``missing`` where it is null."""
    return expr.cast(pl.String).fill_null(missing)


def _clock(column: str, missing: str) -> pl.Expr:
    return pl.col(column).dt.strftime("%H:%M:%S%.3f").fill_null(missing)


def evidence_place() -> pl.Expr:
    """'file!member, record 231' from the provenance columns of an event row."""
    return markup(
        (
            escaped(pl.col("source_path")),
            if_present("member", "!", escaped(pl.col("member"))),
            ", record ",
            shown(pl.col("record_id")),
        )
    )


def lane_label() -> pl.Expr:
    """'<b>computer</b>  host' or the guest's clock: the lane's name on the y axis."""
    role = (
        pl.when(pl.col("role") == "host")
        .then(pl.lit("host"))
        .otherwise(clock_words_expr(pl.col("clock_offset_s")))
    )
    return markup(("<b>", escaped(pl.col("computer")), "</b>  ", role))


def span_hover() -> pl.Expr:
    """A migration: id, VM, hosts, times, status, blackout, verdict, the event that ended it."""
    last = pl.col("host_evidence").list.last()  # the event that ended it, in time order
    last_event = markup(
        (
            escaped(kind_words_expr(last.struct.field("kind"))),
            " (event ",
            last.struct.field("event_id").cast(pl.String),
            ") in ",
            escaped(last.struct.field("source_path")),
            ", record ",
            last.struct.field("record_id").cast(pl.String),
        )
    ).fill_null("none")
    return markup(
        ("<b>", escaped(pl.col("migration_id")), " ", escaped(pl.col("vm_name")), "</b>"),
        (escaped(pl.col("source")), " → ", escaped(pl.col("destination"))),
        ("start ", _clock("start", "not logged"), " · end ", _clock("end", "not logged"), " UTC"),
        (
            escaped(pl.col("status")),
            ", blackout ",
            shown(pl.col("blackout_s").round(3), "not logged"),
            " s",
        ),
        ("verdict: ", escaped(pl.col("verdict"))),
        ("last host event: ", last_event),
    )


def span_label() -> pl.Expr:
    """'M001 · APP-VM01': the text written above a migration span."""
    return markup((escaped(pl.col("migration_id")), " · ", escaped(pl.col("vm_name"))))


def blackout_hover(seconds: float) -> str:
    """The blackout tick's text; the length is the host's, its position lmtrace's choice."""
    return f"blackout {seconds:.3f} s (host-reported length,<br>drawn ending at completion)"


def quarantine_hover() -> pl.Expr:
    """A quarantine window: class, guest, migration, length, what ended it, traffic blocked."""
    return markup(
        (
            "<b>quarantine</b> on ",
            escaped(pl.col("machine")),
            " (",
            escaped(pl.col("migration_id")),
            ")",
        ),
        (
            shown(pl.col("q_duration_s").round(2)),
            " s (",
            escaped(pl.col("window_words")),
            "), ended by ",
            escaped(pl.col("end_words")),
        ),
        (
            pl.when(pl.col("drops_observable").fill_null(True))
            .then(
                pl.format(
                    "{} blocked inbound (TCP {}, UDP {})",
                    pl.col("blocked_inbound"),
                    pl.col("blocked_tcp"),
                    pl.col("blocked_udp"),
                )
            )
            .otherwise(pl.lit(f"blocked inbound {UNSEEN_DROPS}")),
        ),
    )


def event_hover(detail: pl.Expr) -> pl.Expr:
    """One event: kind, event id, machine, both clocks, the layer's ``detail``, file and record."""
    return markup(
        (
            "<b>",
            escaped(kind_words_expr(pl.col("kind"))),
            "</b> · event ",
            shown(pl.col("event_id")),
        ),
        (
            escaped(pl.col("computer")),
            " · ",
            pl.col("timestamp_host").dt.strftime("%Y-%m-%d %H:%M:%S%.3f"),
            " UTC (host clock; logged ",
            pl.col("timestamp").dt.strftime("%H:%M:%S%.3f"),
            ")",
        ),
        (detail,),
        (evidence_place(),),
    )


def context_detail() -> pl.Expr:
    """The fields a context event has, each named: VM, NIC, profile, remote address and port."""
    return markup(
        (
            if_present("vm_name", "VM ", escaped(pl.col("vm_name")), " "),
            if_present("nic_name", "NIC ", escaped(pl.col("nic_name")), " "),
            if_present("profile", "profile ", escaped(pl.col("profile")), " "),
            if_present(
                "remote_address",
                "remote ",
                escaped(pl.col("remote_address")),
                " → port ",
                shown(pl.col("local_port")),
            ),
        )
    )


def blocked_detail() -> pl.Expr:
    """A blocked connection: remote -> local endpoint, protocol number, migration."""
    return markup(
        (
            escaped(pl.col("remote_address")),
            ":",
            shown(pl.col("remote_port")),
            " → ",
            escaped(pl.col("local_address")),
            ":",
            shown(pl.col("local_port")),
            " · protocol ",
            shown(pl.col("protocol")),
            " · ",
            escaped(pl.col("migration_id")),
        )
    )


def binned_hover(width_s: float) -> pl.Expr:
    """A marker standing for ``_n`` events in one bin, with the first one's text ``_first``."""
    return pl.format(
        "<b>{} events in {} s</b><br>first:<br>{}",
        pl.col("_n"),
        pl.lit(width_s),
        pl.col("_first"),
    )
