"""lmtrace's investigation: discover -> ingest -> correlate -> findings -> report.

``__version__`` is the installed distribution's version, so that every output that
names the version (``lmtrace --version``, findings.json, the reports, the exports,
batch results) names the same one. It is read on first use (``importlib.metadata``
alone costs a tenth of a second at start-up, which ``lmtrace --help`` need not pay).
"""

from __future__ import annotations


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version

        found = globals()["__version__"] = version("lmtrace")  # looked up once
        return found
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
