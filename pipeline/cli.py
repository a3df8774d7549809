"""The lmtrace command line: a thin Typer layer over the pipeline functions."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lmtrace",
    help="Did a Hyper-V live migration cut this VM off the network? Evidence from .evtx bundles.",
    no_args_is_help=True,
)


@app.callback()
def main() -> None:
    """Did a Hyper-V live migration cut this VM off the network, for how long, and why?"""
