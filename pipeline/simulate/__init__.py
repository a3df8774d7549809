"""The simulator: realistic host and guest bundles with an exact ground truth.

An independent oracle for the correlator, so it imports only ``parsers/`` (to write
.evtx files) and the verdict decision table (``pipeline/verdict_table.py``, shared on
purpose: the ground truth and the correlator may disagree on a fact, never on a rule);
tests/test_layout.py holds it to that. ``bundle`` orders the work; ``plan`` decides
what happens, ``events``/``facts``/``nla``/``noise``/``routine`` render it, ``layouts``
are the real events' layouts, ``truth`` states the verdicts; scenarios.toml the presets.
"""

from pipeline.simulate.bundle import (
    SimulateError,
    SimulateOptions,
    SimulationResult,
    parse_size,
    simulate,
)

__all__ = ["SimulateError", "SimulateOptions", "SimulationResult", "parse_size", "simulate"]
