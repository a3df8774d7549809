"""Every CSV lmtrace writes: formula-safe, one timestamp format, and a form Excel reads.

Problem: a support engineer opens migrations.csv, blocked.csv or an export in Excel or
Timeline Explorer. A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return is run as a formula there, and log text is the attacker's (a computer
named ``=HYPERLINK(...)``, a process path). Each writer also used to format times its
own way (``+0000``, ``+00:00``, ``Z``), and Excel reads none of them as a date.
Control characters from the logs are shown escaped (pipeline/printable.py).

How: every CSV goes through :func:`csv_frame` (nested values as JSON text, times in
one format, text cells that could start a formula prefixed with ``'``, as OWASP's
CSV-injection advice says) and :func:`csv_bytes`. Times are ISO 8601 UTC with
microseconds and ``Z``; the Excel form (``--excel``) writes ``yyyy-mm-dd
hh:mm:ss.ffffff`` (UTC, no zone letter: Excel and Timeline Explorer read that as a
date) and starts the file with a UTF-8 byte-order mark, without which Excel reads
UTF-8 as the local code page. Numbers stay numbers, so a negative offset is not
touched; only text is guarded.
"""

from __future__ import annotations

import polars as pl

from pipeline.printable import printable_expr

ISO_UTC = "%Y-%m-%dT%H:%M:%S%.6fZ"
EXCEL_UTC = "%Y-%m-%d %H:%M:%S%.6f"
BOM = "\ufeff".encode()
FORMULA_START = r"^[=+\-@\t\r]"


def formula_safe(column: pl.Expr) -> pl.Expr:
    """Text that a spreadsheet would run as a formula, with a leading ``'``."""
    return pl.when(column.str.contains(FORMULA_START)).then(pl.lit("'") + column).otherwise(column)


def csv_frame(frame: pl.DataFrame | pl.LazyFrame, excel: bool = False):
    """``frame`` ready for CSV: nested values as JSON, times in one format, text guarded."""
    schema = frame.collect_schema()
    stamp = EXCEL_UTC if excel else ISO_UTC
    nested = [c for c, t in schema.items() if isinstance(t, (pl.List, pl.Struct, pl.Array))]
    times = [c for c, t in schema.items() if isinstance(t, pl.Datetime)]
    frame = frame.with_columns(
        # polars encodes {"c": value}; the key goes, the value's JSON stays
        *(
            pl.when(pl.col(c).is_not_null())
            .then(
                pl.struct(c)
                .struct.json_encode()
                .str.strip_prefix(f'{{"{c}":')
                .str.strip_suffix("}")
            )
            .alias(c)
            for c in nested
        ),
        *(
            (
                pl.col(c).dt.convert_time_zone("UTC")
                if schema[c].time_zone  # type: ignore[attr-defined]
                else pl.col(c)
            )
            .dt.strftime(stamp)
            .alias(c)
            for c in times
        ),
    )
    text = [c for c, t in frame.collect_schema().items() if t == pl.String]
    return frame.with_columns(formula_safe(printable_expr(pl.col(c))).alias(c) for c in text)


def csv_bytes(frame: pl.DataFrame, excel: bool = False, header: bool = True) -> bytes:
    """The CSV file's bytes (with the byte-order mark in the Excel form)."""
    body = csv_frame(frame, excel).write_csv(include_header=header).encode("utf-8")
    return (BOM if excel and header else b"") + body
