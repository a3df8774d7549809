"""Text from the logs made safe to show: control characters escaped in every output.

Problem: event strings, computer and VM names, file and member names come from
the customer and may hold anything. Written raw to a terminal, an ESC sequence
retitles the window or rewrites what is on screen (``\\x1b]0;pwned\\x07``); a
newline in a name prints a line that looks like lmtrace's own (a verdict); a
right-to-left override (U+202E) makes ``exe.txt`` read as ``txt.exe``. In a
report, a CSV or a web page they do the same to whoever opens it.

How: everything lmtrace *shows* (terminal tables and messages, report.md,
report.html, the CSVs, the timeline's labels) passes the log's text through
:func:`printable` (one value) or :func:`printable_expr` (a polars column, in one
Aho-Corasick pass): C0 and C1 control characters, DEL, the Unicode bidi
controls and line/paragraph separators become visible escapes (``\\n``,
``\\x1b``, ``\\u202e``), and bytes of a name that were not UTF-8 become ``\\xHH``.
Backslashes are left alone, so Windows paths stay readable; an escape is
therefore what lmtrace shows, not a way back to the value: the store, the
Parquet tables and the JSON outputs keep every value exactly (JSON with its
own ``\\uXXXX`` escapes, :func:`printable_json`).
"""

from __future__ import annotations

import re

import polars as pl

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), *_BIDI, 0x2028, 0x2029]


def _escape(code: int) -> str:
    char = chr(code)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


_TABLE: dict[int, str] = {code: _escape(code) for code in _CONTROLS}
# Bytes of a name that were not UTF-8 (Python's surrogateescape) are shown as the byte.
_TABLE.update({0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)})
_TABLE.update({c: f"\\u{c:04x}" for c in range(0xD800, 0xE000) if c not in _TABLE})

_FIND = "[" + "".join(f"\\x{{{c:x}}}" for c in _CONTROLS) + "]"  # Rust regex, for polars
_JSON_RAW = re.compile("[" + "".join(f"\\u{c:04x}" for c in _CONTROLS if c >= 0x7F) + "]")


def printable(value: object) -> str:
    """One value as text to show: control characters escaped (None shows as '')."""
    return "" if value is None else str(value).translate(_TABLE)


def printable_expr(expr: pl.Expr) -> pl.Expr:
    """A text column with control characters escaped (nulls stay null)."""
    escaped = expr.str.replace_many([chr(c) for c in _CONTROLS], [_TABLE[c] for c in _CONTROLS])
    return pl.when(expr.str.contains(_FIND)).then(escaped).otherwise(expr)


def printable_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Every text column of ``frame`` with control characters escaped, for a table or a CSV."""
    return frame.with_columns(
        printable_expr(pl.col(name)) for name, dtype in frame.schema.items() if dtype == pl.String
    )


def printable_json(text: str) -> str:
    """JSON text with the controls JSON leaves raw (DEL, C1, bidi, separators) written as
    ``\\uXXXX`` escapes: the same values for a parser, inert on a terminal."""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
