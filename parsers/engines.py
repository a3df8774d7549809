"""The EVTX decoding engines, named once for the reader, the store and the command line.

``rust`` is pyevtx-rs (the ``evtx`` package), the default; ``python`` is python-evtx,
slow, kept as a selectable backend and the differential tests' oracle. Apart from
parsers/model.py so that the command line can offer the choice without loading polars.
"""

from __future__ import annotations

from typing import Literal

Engine = Literal["rust", "python"]
DEFAULT_ENGINE: Engine = "rust"
