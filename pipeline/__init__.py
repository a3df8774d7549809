"""lmtrace's investigation: discover -> ingest -> correlate -> findings -> report.

``__version__`` is the installed distribution's version, read once here so that every
output that names the version (``lmtrace --version``, findings.json, the reports, the
exports, batch results) names the same one.
"""

from importlib.metadata import version

__version__ = version("lmtrace")
