"""The compiled row scanner (parsers/_evtx_scan.c), when it is there and current.

A checkout whose C source changed after its last ``pip install -e .`` still holds the
older build; reading with it would quietly run code nobody is looking at. The build
records a digest of the source it was compiled from, and the scanner is used only when
that digest is the source's beside it (an installed copy ships its source too).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).with_name("_evtx_scan.c")


def source_digest() -> str | None:
    """The digest setup.py records for the C source beside this file (None: no source)."""
    try:
        return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def compiled_scanner() -> tuple[ModuleType | None, str]:
    """The scanner module, or None; and what ``lmtrace --version`` says about it."""
    try:
        from parsers import _evtx_scan
    except ImportError:
        return None, (
            "built in Python (the compiled scanner was not built: no C compiler at install); "
            "reading is 2-4x slower, the rows are the same"
        )
    digest = source_digest()
    if digest is not None and digest != _evtx_scan.SOURCE:
        return None, (
            "built in Python: the compiled scanner is older than parsers/_evtx_scan.c "
            "(run `pip install -e .` again to rebuild it)"
        )
    return _evtx_scan, "compiled scanner (parsers/_evtx_scan.c)"
