"""The ``lmtrace`` command: ``python -m pipeline`` and the installed ``lmtrace`` script.

The script imports :func:`main` and calls it only when run as a program. Reading
processes are spawned, and each one runs the script again (as ``__mp_main__``) without
calling it: importing this module must stay cheap, so the command line (typer and
every command) is imported inside :func:`main`, not here.
"""

from __future__ import annotations


def main() -> None:
    """Run the lmtrace command line on ``sys.argv``."""
    from pipeline.cli import app

    app(prog_name="lmtrace")


if __name__ == "__main__":
    main()
