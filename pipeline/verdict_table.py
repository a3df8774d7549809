"""The verdict decision table (``verdicts.toml``), read once, applied by everyone.

The problem: the correlator and the simulator's ground truth each used to hold their
own verdict rules, and they disagreed (a 7 s quarantine without drops was
``not-affected`` in one and ``likely-affected`` in the other). Now the rules are one
readable table of rows over named facts; :func:`decide` applies it to one dict of
facts (the simulator's truth), :meth:`VerdictTable.rule_of` builds the same decision
as a polars expression over fact columns (the correlator). This module knows nothing
of logs or of the simulator: it is shared data and the two ways to read it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import polars as pl

from parsers.model import LmtraceError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

FactValue = bool | str
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class VerdictTableError(LmtraceError):
    """verdicts.toml is malformed (a packaging error, never a user's)."""


@dataclass(frozen=True)
class Row:
    """One decision: when these facts hold, this verdict, for this reason."""

    id: str
    when: Mapping[str, tuple[FactValue, ...]]
    verdict: str
    why: str
    reason: str
    collect: tuple[str, ...] = ()

    def holds(self, facts: Mapping[str, object]) -> bool:
        return all(facts.get(name) in values for name, values in self.when.items())

    def condition(self) -> pl.Expr:
        """The row's ``when`` over fact columns; a null fact never matches."""
        parts = [pl.col(name).is_in(list(values)) for name, values in self.when.items()]
        return pl.all_horizontal(pl.lit(True), *parts).fill_null(False)

    def placeholders(self) -> list[str]:
        return PLACEHOLDER.findall(self.reason)


@dataclass(frozen=True)
class Verdict:
    """What a verdict means to a reader (verdicts.toml ``[[verdict]]``)."""

    name: str
    cut_off: bool  # the VM was, or probably was, cut off: counted as affected
    headline: str
    colour: str


@dataclass(frozen=True)
class VerdictTable:
    """The verdicts, gravest first; the facts; the rows per level (migration, bundle)."""

    meanings: tuple[Verdict, ...]
    facts: Mapping[str, str]
    bundle_facts: Mapping[str, str]
    migration: tuple[Row, ...]
    bundle: tuple[Row, ...]

    @property
    def verdicts(self) -> tuple[str, ...]:
        """The verdict names, gravest first."""
        return tuple(v.name for v in self.meanings)

    @property
    def cut_off(self) -> tuple[str, ...]:
        """The verdicts that say the VM was (probably) cut off, gravest first."""
        return tuple(v.name for v in self.meanings if v.cut_off)

    def meaning(self, verdict: str) -> Verdict | None:
        return next((v for v in self.meanings if v.name == verdict), None)

    def gravest(self, verdicts: Sequence[str], default: str) -> str:
        present = set(verdicts)
        return next((v for v in self.verdicts if v in present), default)

    def rule_of(self, rows: Sequence[Row]) -> pl.Expr:
        """The id of the first row whose facts hold, as one expression over fact columns."""
        expr = pl.when(rows[0].condition()).then(pl.lit(rows[0].id))
        for row in rows[1:]:
            expr = expr.when(row.condition()).then(pl.lit(row.id))
        return expr.otherwise(pl.lit(None, pl.String)).alias("rule")

    def row(self, rule_id: str) -> Row:
        return next(r for r in (*self.migration, *self.bundle) if r.id == rule_id)


def decide(rows: Sequence[Row], facts: Mapping[str, object]) -> Row:
    """The first row whose facts hold (every table ends with a row that always holds)."""
    return next(r for r in rows if r.holds(facts))


def _rows(
    raw: list[dict[str, Any]], facts: Mapping[str, str], verdicts: Sequence[str]
) -> tuple[Row, ...]:
    rows = []
    for table in raw:
        when = {
            name: tuple(value if isinstance(value, list) else [value])
            for name, value in table.get("when", {}).items()
        }
        unknown = sorted(set(when) - set(facts))
        if unknown or table["verdict"] not in verdicts:
            raise VerdictTableError(
                f"verdicts.toml row {table['id']}: unknown fact(s) {unknown} or verdict"
                f" {table['verdict']!r}"
            )
        rows.append(
            Row(
                id=table["id"],
                when=when,
                verdict=table["verdict"],
                why=table["why"],
                reason=table["reason"],
                collect=tuple(table.get("collect", ())),
            )
        )
    if not rows or rows[-1].when:
        raise VerdictTableError("verdicts.toml: each table must end with a row that always holds")
    if len({r.id for r in rows}) != len(rows):
        raise VerdictTableError("verdicts.toml: row ids must be unique")
    return tuple(rows)


@cache
def load_table() -> VerdictTable:
    """The shipped table, checked: facts named by rows exist, verdicts are known.

    Read once per process: it is packaged data, and the report, the timeline and the
    batch summary all ask it what a verdict means.
    """
    text = resources.files("pipeline").joinpath("verdicts.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    meanings = tuple(Verdict(**v) for v in data["verdict"])
    verdicts = tuple(v.name for v in meanings)
    facts = dict(data["facts"])
    bundle_facts = dict(data["bundle_facts"])
    return VerdictTable(
        meanings=meanings,
        facts=facts,
        bundle_facts=bundle_facts,
        migration=_rows(data["migration"], facts, verdicts),
        bundle=_rows(data["bundle"], bundle_facts, verdicts),
    )
