"""The verdict table (verdicts.toml): one table, two readers that cannot disagree.

findings.py applies the table as a polars expression over fact columns, the
simulator's ground truth applies it to a dict of facts; every combination of fact
values must get the same row from both. Then the decisions the issue asked to make
from the domain, each checked as a row of the table.
"""

from __future__ import annotations

import itertools

import polars as pl
import pytest

from pipeline.catalog import load_catalog
from pipeline.verdict_table import decide, load_table

TABLE = load_table()
VALUES = {
    "completion": [True, False],
    "guest": ["matched", "candidates", "none"],
    "trigger_log": ["covers", "missing"],
    "network_change": [True, False],
    "trigger_search": ["complete", "incomplete"],
    "clock": ["known", "guess"],
    "window": ["none", "normal", "prolonged", "safety-timeout", "undetermined"],
    "drops_observable": [True, False],
    "blocked": [True, False],
    "step_sides": ["told", "untold"],
}


def test_every_fact_the_table_names_is_enumerated_here() -> None:
    assert set(TABLE.facts) == set(VALUES)
    for row in TABLE.migration:
        for fact, allowed in row.when.items():
            assert set(allowed) <= set(VALUES[fact]), (row.id, fact)


def test_both_readers_of_the_table_agree_on_every_combination() -> None:
    combos = [dict(zip(VALUES, c, strict=True)) for c in itertools.product(*VALUES.values())]
    frame = pl.DataFrame(combos).with_columns(TABLE.rule_of(TABLE.migration))
    by_polars = frame["rule"].to_list()
    by_python = [decide(TABLE.migration, facts).id for facts in combos]
    assert by_polars == by_python
    assert set(by_python) == {r.id for r in TABLE.migration}  # every row can decide


def test_hint_ids_exist_in_the_catalog() -> None:
    hints = {h.id for h in load_catalog().collect} | {"__drops"}
    for row in TABLE.migration:
        assert set(row.collect) <= hints, row.id


def _verdict(**facts: object) -> str:
    base: dict[str, object] = {
        "completion": True,
        "guest": "matched",
        "trigger_log": "covers",
        "network_change": True,
        "trigger_search": "complete",
        "clock": "known",
        "window": "normal",
        "drops_observable": True,
        "blocked": False,
        "step_sides": "told",
    }
    return decide(TABLE.migration, base | facts).verdict


@pytest.mark.parametrize(
    ("facts", "verdict"),
    [
        # The safety-timeout signature without a drop: the guest refused new connections
        # for 7 s; nothing shows the impact, whether auditing was on or not.
        ({"window": "safety-timeout", "blocked": False}, "likely-affected"),
        ({"window": "safety-timeout", "drops_observable": False}, "likely-affected"),
        ({"window": "safety-timeout", "blocked": True}, "affected"),
        # A window resting on one far pair may not make a verdict graver...
        ({"window": "safety-timeout", "blocked": True, "clock": "guess"}, "inconclusive"),
        # ...but a normal window there is no graver claim.
        ({"window": "normal", "clock": "guess"}, "not-affected"),
        # A normal window needs no drop log: the classification shows the design working.
        ({"window": "normal", "drops_observable": False}, "not-affected"),
        ({"window": "undetermined"}, "inconclusive"),
        # Absence of the trigger only where it holds at every clock offset.
        ({"network_change": False}, "not-affected"),
        ({"network_change": False, "trigger_search": "incomplete"}, "inconclusive"),
        ({"network_change": False, "trigger_log": "missing"}, "inconclusive"),
        ({"guest": "candidates"}, "inconclusive"),
        ({"completion": False, "window": "safety-timeout", "blocked": True}, "inconclusive"),
        # Events a clock step back makes ambiguous may decide nothing, either way.
        ({"step_sides": "untold", "window": "safety-timeout", "blocked": True}, "inconclusive"),
        ({"step_sides": "untold", "window": "normal"}, "inconclusive"),
        ({"network_change": False, "step_sides": "untold"}, "not-affected"),
    ],
)
def test_decisions(facts: dict[str, object], verdict: str) -> None:
    assert _verdict(**facts) == verdict


@pytest.mark.parametrize(
    ("host_logs", "unexplained", "verdict"),
    [(True, False, "not-affected"), (True, True, "inconclusive"), (False, False, "inconclusive")],
)
def test_a_bundle_without_migrations(host_logs: bool, unexplained: bool, verdict: str) -> None:
    facts = {"host_logs": host_logs, "unexplained_changes": unexplained}
    assert decide(TABLE.bundle, facts).verdict == verdict


def test_gravest_verdict_order() -> None:
    assert TABLE.gravest(["not-affected", "likely-affected", "inconclusive"], "x") == (
        "likely-affected"
    )
    assert TABLE.gravest([], "inconclusive") == "inconclusive"
