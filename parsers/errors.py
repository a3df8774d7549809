"""The base of every error lmtrace reports to a user as one line.

Kept apart from parsers/model.py (which needs polars for the row schema) so that the
command line can catch lmtrace's errors without loading polars: ``lmtrace --help``
and a mistyped option answer in a tenth of a second.
"""

from __future__ import annotations


class LmtraceError(Exception):
    """Base of every error lmtrace reports to a user as one line, without a traceback."""
