"""The caps an ingest puts on archives, as a value the command line can show cheaply.

Its own module because every command that reads bundles shows these defaults in its
``--help``, and the archive code behind them (pipeline/archives.py) loads the 7z and
AES-zip libraries, which a help page has no use for.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Caps that keep a hostile archive from filling the disk or recursing forever.

    Two separate limits bound extraction: ``max_total_bytes`` for all archives of one
    ingest together (a bomb), and ``min_free_bytes`` left free on the scratch disk
    (the store's events, and everything else on that disk, need room too).

    ``max_ratio`` is judged only for members larger than ``ratio_grace_bytes``:
    a real, nearly empty 68 KiB .evtx deflates about 400:1 (measured on the
    public corpus), so small members cannot be judged by ratio; large ones
    with a ratio above 200:1 carry almost no data and are the shape of a bomb.
    """

    max_depth: int = 8
    max_total_bytes: int = 32 << 30
    max_ratio: float = 200.0
    ratio_grace_bytes: int = 16 << 20
    min_free_bytes: int = 1 << 30
