"""The ``lmtrace`` command line: a thin Typer layer over the pipeline's functions.

``commands`` holds the Typer app and its commands, ``options`` the options several
commands share and what they turn into, ``output`` how results look on a terminal.
Importing this package loads typer only, so that ``lmtrace --help`` answers at once.
"""

from pipeline.cli.commands import app

__all__ = ["app"]
