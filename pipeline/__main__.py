"""``python -m pipeline`` runs the lmtrace command line (as the ``lmtrace`` script does)."""

from pipeline.cli import app

app(prog_name="lmtrace")
