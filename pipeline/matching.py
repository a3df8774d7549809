"""Which guest is which VM, and how far the guest's clock is from its host's.

Hosts call a VM by its Hyper-V name; the guest logs its own host name, and the two
often differ. Matching tries, in order of strength, and records the method and a
confidence with every match:

1. ``vmid``: a guest event carries the VM's GUID (confidence 1.0);
2. ``mapping``: the user's mapping file names the guest (1.0);
3. ``name``: the short host names are equal, case-insensitively (0.9);
4. ``timing``: the guest's Netvsc 14 events line up with the VM's migration
   completions at one consistent clock offset (0.5-0.9 by how many line up;
   0.3 when another VM lines up just as well);
5. ``sole-candidate``: one VM is left over, and one unmatched guest whose logs
   cover its migration (0.5): a bundle sent for one VM whose guest logged no
   network change to time it by. Machines whose logs cover no migration are not
   candidates (another case's logs in the same folder).

Clock offset: host and guest clocks disagree, and the guest clock can jump on a
migration. For each matched guest the offset is the median of (Netvsc 14 time -
migration completion time) over the densest cluster of such differences within
``max_clock_offset_s`` (a window of twice the tolerance), which ignores outliers
such as a Netvsc 14 from an unrelated NIC reset. The estimate includes the short
lag between the end of the blackout and the guest's notification (typically under
a second), which is why correlation uses a tolerance. A user's
``--clock-offset`` replaces the estimate and is marked ``given``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from parsers.model import LmtraceError
from parsers.time_values import parse_duration
from pipeline.catalog import ModelParams
from pipeline.machines import machine_names, machine_of, short_name
from pipeline.quarantine import starts_a_chain

MATCH_SCHEMA = {
    "vm_key": pl.String,
    "machine": pl.String,
    "match_method": pl.String,
    "match_confidence": pl.Float64,
    "match_note": pl.String,
}
OFFSET_SCHEMA = {
    "machine": pl.String,
    "clock_offset_s": pl.Float64,
    "offset_method": pl.String,
    "offset_pairs": pl.Int64,
    "offset_basis": pl.String,
}
OFFSET_BASES = {
    "given": "given with --clock-offset",
    "pairs": "several migrations line up with the guest's Netvsc 14 at this offset",
    "clocks-agree": "one migration and one Netvsc 14, within the tolerance of equal clocks",
    "typical": "one migration and one Netvsc 14, at the offset another guest shares",
    "one-pair": "one migration and one Netvsc 14 only, far from equal clocks: a guess",
}
"""What a clock offset rests on. Only ``one-pair`` is a guess: a single pair of events
far from zero could be an unrelated network change, so no verdict may become graver on
it alone (verdicts.toml, fact ``clock``)."""


class MatchInputError(LmtraceError):
    """A mapping file or a --clock-offset value cannot be understood."""


def read_mapping(path: Path) -> dict[str, str]:
    """A user's VM -> guest mapping: CSV lines ``vm name or VMID,guest host name``.

    Lines starting with ``#`` and blank lines are ignored; a header line
    ``vm,guest`` may come first.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise MatchInputError(f"{path}: cannot read the mapping file ({exc.strerror})") from None
    mapping: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#") or line.lower().replace(" ", "") == "vm,guest":
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not all(parts):
            raise MatchInputError(
                f"{path}:{number}: expected 'vm name or VMID,guest host name', got {line!r}"
            )
        mapping[parts[0]] = parts[1]
    return mapping


def parse_clock_offset(text: str) -> tuple[str, float]:
    """``GUEST=+3.2s`` (``-1500ms``, ``+1m30s``) -> (guest, seconds): guest clock minus host's."""
    guest, sep, value = text.partition("=")
    if not sep or not guest.strip() or not value.strip():
        raise MatchInputError(
            f"--clock-offset {text!r}: expected GUEST=OFFSET, e.g. APP-VM01=+3.2s or SQL7=-1500ms"
        )
    return guest.strip(), parse_duration(value, f"--clock-offset {guest.strip()}", signed=True)


@dataclass(frozen=True)
class MatchSettings:
    """What the user told us: VM -> guest names and known guest clock offsets."""

    mapping: Mapping[str, str] = field(default_factory=dict)  # vm name or vmid -> guest name
    clock_offsets: Mapping[str, float] = field(default_factory=dict)  # guest -> seconds
    tolerance_s: float | None = None  # None: the catalog's model.tolerance_s

    def named_as(self, aliases: Mapping[str, str]) -> MatchSettings:
        """These settings with every guest name the user gave as the machine it names:
        short name, and for a name from before a rename (``aliases``), the name it has now."""
        guests = machine_names(list(self.mapping.values()), aliases)
        offsets = machine_names(list(self.clock_offsets), aliases)
        return replace(
            self,
            mapping=dict(zip(self.mapping, guests, strict=True)),
            clock_offsets=dict(zip(offsets, self.clock_offsets.values(), strict=True)),
        )


def _vms(migrations: pl.DataFrame) -> pl.DataFrame:
    return migrations.group_by("vm_key").agg(
        pl.col("vm_name").drop_nulls().first(), pl.col("vmid").drop_nulls().first()
    )


def _labelled(pairs: pl.DataFrame, method: str, confidence: float, note: str) -> pl.DataFrame:
    """(vm_key, machine) pairs, one per VM, with how they were matched."""
    return (
        pairs.select("vm_key", "machine")
        .unique("vm_key", keep="first", maintain_order=True)
        .with_columns(
            pl.lit(method).alias("match_method"),
            pl.lit(confidence).alias("match_confidence"),
            pl.lit(note).alias("match_note"),
        )
    )


def _by_vmid(vms: pl.DataFrame, guest_vmids: pl.DataFrame) -> pl.DataFrame:
    pairs = vms.join(
        guest_vmids.with_columns(pl.col("vmid").str.to_lowercase().str.strip_chars("{} ")),
        on="vmid",
    )
    return _labelled(pairs, "vmid", 1.0, "a guest event carries the VMID")


def _by_mapping(vms: pl.DataFrame, mapping: Mapping[str, str]) -> pl.DataFrame:
    table = pl.DataFrame(
        {
            "_key": [k.lower().strip("{} ") for k in mapping],
            "machine": list(mapping.values()),
        },
        schema={"_key": pl.String, "machine": pl.String},
    ).with_columns(short_name(pl.col("machine")))
    by_name = vms.with_columns(pl.col("vm_name").str.to_lowercase().alias("_key"))
    by_id = vms.with_columns(pl.col("vmid").alias("_key"))
    pairs = pl.concat([by_name.join(table, on="_key"), by_id.join(table, on="_key")])
    return _labelled(pairs, "mapping", 1.0, "named in the mapping file")


def _by_name(vms: pl.DataFrame, guests: pl.DataFrame, aliases: Mapping[str, str]) -> pl.DataFrame:
    # A VM keeps its name when its guest is renamed: the guest's earlier name matches too.
    pairs = vms.with_columns(machine_of(pl.col("vm_name"), aliases).alias("machine")).join(
        guests.select("machine"), on="machine"
    )
    return _labelled(pairs, "name", 0.9, "VM name equals the guest's host name")


def chain_starts(netvsc: pl.DataFrame, model: ModelParams) -> pl.DataFrame:
    """The first Netvsc 14 of each chain (:func:`pipeline.quarantine.starts_a_chain`): the
    one that follows the completion by the notification lag. Paired with the completion,
    a later one of the chain gives an offset seconds off, and a window that starts at it
    misses the quarantine's first seconds."""
    return netvsc.filter(starts_a_chain(model.safety_timeout_s))


def clock_differences(
    migrations: pl.DataFrame, netvsc: pl.DataFrame, model: ModelParams
) -> pl.DataFrame:
    """Every (VM, guest, completion, first Netvsc 14 of a chain) pair within the offset
    search range, with ``diff_s`` = Netvsc 14 time - completion time. Timing matches and
    clock offsets both come from these, so they are computed once per bundle."""
    ends = migrations.filter(pl.col("end").is_not_null()).select("vm_key", "end")
    reach = model.max_clock_offset_s + model.netvsc_lag_max_s
    return (
        ends.join(chain_starts(netvsc, model).select("machine", "timestamp"), how="cross")
        .with_columns(
            ((pl.col("timestamp") - pl.col("end")).dt.total_microseconds() / 1e6).alias("diff_s")
        )
        .filter(pl.col("diff_s").abs() <= reach)
    )


def best_alignment(diffs: pl.DataFrame, tolerance_s: float, steps_s: float = 0.0) -> pl.DataFrame:
    """Per (VM, guest): the densest cluster of clock differences.

    Returns ``pairs`` (completions that line up), ``offset_s`` (median difference
    in the cluster) and ``spread_s`` (its range). With ``steps_s``, a cluster is
    first ranked by how many of the VM's completions have a Netvsc 14 within that
    many seconds of it (``explained``): a guest clock that steps at every resume
    puts each trigger a little further on, and without this rank two triggers of
    consecutive migrations, each paired with the *next* completion, can line up
    more tightly than the true pairs do.
    """
    if diffs.is_empty():
        return pl.DataFrame(
            schema={
                "vm_key": pl.String,
                "machine": pl.String,
                "pairs": pl.UInt32,
                "offset_s": pl.Float64,
                "spread_s": pl.Float64,
            }
        )
    anchors = diffs.select("vm_key", "machine", pl.col("diff_s").alias("anchor")).unique()
    paired = anchors.join(diffs, on=["vm_key", "machine"])
    clusters = (
        paired.filter(
            pl.col("diff_s").is_between(pl.col("anchor"), pl.col("anchor") + 2 * tolerance_s)
        )
        .group_by("vm_key", "machine", "anchor")
        .agg(
            pl.col("end").n_unique().alias("pairs"),
            pl.col("diff_s").median().alias("offset_s"),
            (pl.col("diff_s").max() - pl.col("diff_s").min()).alias("spread_s"),
        )
    )
    explained = (
        paired.filter((pl.col("diff_s") - pl.col("anchor")).abs() <= steps_s + tolerance_s)
        .group_by("vm_key", "machine", "anchor")
        .agg(pl.col("end").n_unique().alias("_explained"))
    )
    return (
        clusters.join(explained, on=["vm_key", "machine", "anchor"], how="left")
        .with_columns(
            pl.when(pl.lit(steps_s > 0)).then(pl.col("_explained")).otherwise(pl.col("pairs"))
        )
        .sort(
            "_explained",
            "pairs",
            pl.col("offset_s").abs(),
            descending=[True, True, False],
            maintain_order=True,
        )
        .group_by("vm_key", "machine", maintain_order=True)
        .first()
        .drop("anchor", "_explained")
    )


def _typical_offset(diffs: pl.DataFrame, tolerance_s: float) -> float:
    """The clock offset most (VM, guest) pairs share: the densest cluster of all differences.

    Guests usually take their time from their host (the Hyper-V time-sync service), so
    their offsets tend to agree; when timing alone cannot tell two guests apart (one
    migration each, seconds apart), the offset the others share decides.
    """
    pooled = best_alignment(
        diffs.with_columns(pl.lit("*").alias("vm_key"), pl.lit("*").alias("machine")),
        tolerance_s,
    )
    return float(pooled["offset_s"][0]) if pooled.height else 0.0


def _by_timing(all_diffs: pl.DataFrame, matched: pl.DataFrame, tolerance_s: float) -> pl.DataFrame:
    known = all_diffs.join(matched.select("vm_key", "machine"), on=["vm_key", "machine"])
    prior = _typical_offset(known if known.height else all_diffs, tolerance_s)
    free = all_diffs.filter(
        ~pl.col("vm_key").is_in(matched["vm_key"].implode())
        & ~pl.col("machine").is_in(matched["machine"].implode())
    )
    deviation = (pl.col("offset_s") - prior).abs()
    candidates = (
        best_alignment(free, tolerance_s)
        .with_columns(deviation.alias("_dev"))
        .with_columns(
            (
                (pl.col("pairs") == pl.col("pairs").max().over("machine"))
                & (pl.col("_dev") <= pl.col("_dev").min().over("machine") + tolerance_s)
            )
            .sum()
            .over("machine")
            .alias("_rivals")
        )
        .sort("pairs", "_dev", descending=[True, False])
    )
    chosen: list[dict[str, object]] = []
    used_vms: set[str] = set()
    used_guests: set[str] = set()
    # Greedy one-to-one assignment, strongest alignment first: inherently sequential.
    for row in candidates.iter_rows(named=True):
        if row["vm_key"] in used_vms or row["machine"] in used_guests:
            continue
        used_vms.add(row["vm_key"])
        used_guests.add(row["machine"])
        ambiguous = row["_rivals"] > 1
        confidence = 0.3 if ambiguous else min(0.9, 0.4 + 0.1 * row["pairs"])
        note = (
            f"{row['pairs']} migration(s) line up with Netvsc 14 at {row['offset_s']:+.1f} s"
            f" (typical offset {prior:+.1f} s)"
        )
        if ambiguous:
            note += "; another VM lines up about as well"
        chosen.append(
            {
                "vm_key": row["vm_key"],
                "machine": row["machine"],
                "match_method": "timing",
                "match_confidence": confidence,
                "match_note": note,
            }
        )
    return pl.DataFrame(chosen, schema=MATCH_SCHEMA)


def covering(migrations: pl.DataFrame, spans: pl.DataFrame, model: ModelParams) -> pl.DataFrame:
    """(vm_key, machine): the machines of ``spans`` (``machine``, ``first_ts``,
    ``last_ts``) whose logs cover one of the VM's migrations, at any clock offset
    the correlation searches. A machine whose logs end before, or begin after, every
    migration cannot be its guest by timing: it is at most a guest by name."""
    reach = pl.duration(microseconds=model.max_clock_offset_s * 1e6)
    at = pl.coalesce("end", "start")
    return (
        migrations.select("vm_key", at.alias("_at"))
        .drop_nulls()
        .join(spans.select("machine", "first_ts", "last_ts"), how="cross")
        .filter(
            (pl.col("first_ts") <= pl.col("_at") + reach)
            & (pl.col("last_ts") >= pl.col("_at") - reach)
        )
        .select("vm_key", "machine")
        .unique()
        .sort("vm_key", "machine")
    )


def match_guests(
    migrations: pl.DataFrame,
    guests: pl.DataFrame,
    diffs: pl.DataFrame,
    guest_vmids: pl.DataFrame,
    settings: MatchSettings,
    model: ModelParams,
    aliases: Mapping[str, str] = {},
) -> pl.DataFrame:
    """One row per matched VM (``MATCH_SCHEMA``); strongest method wins.

    ``guests`` holds ``machine``, ``first_ts`` and ``last_ts`` of every candidate
    guest (and ``hyperv_guest``, whether it logged Hyper-V guest events);
    ``diffs`` are the bundle's :func:`clock_differences`; ``aliases`` the earlier names
    of renamed computers (machines.aliases), so that a VM named as its guest was matches.
    """
    if migrations.is_empty():
        return pl.DataFrame(schema=MATCH_SCHEMA)
    vms = _vms(migrations)
    tolerance = settings.tolerance_s or model.tolerance_s
    matches = pl.DataFrame(schema=MATCH_SCHEMA)
    for found in (
        _by_vmid(vms, guest_vmids),
        _by_mapping(vms, settings.mapping),
        _by_name(vms, guests, aliases),
    ):
        fresh = found.filter(
            ~pl.col("vm_key").is_in(matches["vm_key"].implode())
            & ~pl.col("machine").is_in(matches["machine"].implode())
        )
        matches = pl.concat([matches, fresh.select(MATCH_SCHEMA.keys()).cast(MATCH_SCHEMA)])
    matches = pl.concat([matches, _by_timing(diffs, matches, tolerance)])
    covers = covering(migrations, guests, model)
    return pl.concat([matches, _sole_candidate(vms, covers, matches, guests)])


def _sole_candidate(
    vms: pl.DataFrame, covers: pl.DataFrame, matched: pl.DataFrame, guests: pl.DataFrame
) -> pl.DataFrame:
    """One VM left over and one unmatched guest whose logs cover its migration: a bundle
    sent for one VM. Machines whose logs cover no migration (another case's logs in the
    same folder) do not count; among several that do, one that logged Hyper-V guest
    events (``hyperv_guest``: the Netvsc driver's own) is a VM's guest, a machine without
    them (a physical server exported alongside) is not. Weak, and marked so."""
    free_vms = vms.filter(~pl.col("vm_key").is_in(matched["vm_key"].implode()))
    free = covers.filter(
        pl.col("vm_key").is_in(free_vms["vm_key"].implode())
        & ~pl.col("machine").is_in(matched["machine"].implode())
    )
    note = "the only VM left unmatched and the only unmatched guest whose logs cover its migration"
    if free.height > 1 and "hyperv_guest" in guests.columns:
        virtual = guests.filter(pl.col("hyperv_guest"))["machine"].implode()
        free = free.filter(pl.col("machine").is_in(virtual))
        note = (
            "the only VM left unmatched and the only unmatched machine whose logs cover its"
            " migration and show it is a Hyper-V guest (Netvsc events)"
        )
    if free_vms.height != 1 or free.height != 1:
        return pl.DataFrame(schema=MATCH_SCHEMA)
    return pl.DataFrame(
        {
            "vm_key": free["vm_key"],
            "machine": free["machine"],
            "match_method": ["sole-candidate"],
            "match_confidence": [0.5],
            "match_note": [note],
        },
        schema=MATCH_SCHEMA,
    )


def clock_offsets(
    diffs: pl.DataFrame, matches: pl.DataFrame, settings: MatchSettings, model: ModelParams
) -> pl.DataFrame:
    """Per matched guest: offset (guest clock minus host clock) and how it was found.

    ``diffs`` are the bundle's :func:`clock_differences`.
    """
    tolerance = settings.tolerance_s or model.tolerance_s
    matched = diffs.join(matches.select("vm_key", "machine"), on=["vm_key", "machine"])
    estimated = (
        best_alignment(matched, tolerance, model.clock_jump_max_s)
        .group_by("machine")
        .agg(
            pl.col("offset_s").median().alias("clock_offset_s"),
            pl.col("pairs").sum().cast(pl.Int64).alias("offset_pairs"),
        )
        .with_columns(pl.lit("estimated").alias("offset_method"))
    )
    # Time-synced guests of one cluster share their offset to the hosts, so a lone pair
    # that agrees with another guest's offset is corroborated, not a guess.
    others = estimated.select(
        pl.col("machine").alias("_other"), pl.col("clock_offset_s").alias("_o")
    )
    agreeing = (
        estimated.join(others, how="cross")
        .filter(
            (pl.col("machine") != pl.col("_other"))
            & ((pl.col("clock_offset_s") - pl.col("_o")).abs() <= tolerance)
        )["machine"]
        .unique()
    )
    near_zero = pl.col("clock_offset_s").abs() <= tolerance + model.netvsc_lag_max_s
    basis = (
        pl.when(pl.col("offset_pairs") >= 2)
        .then(pl.lit("pairs"))
        .when(near_zero)
        .then(pl.lit("clocks-agree"))
        .when(pl.col("machine").is_in(agreeing.implode()))
        .then(pl.lit("typical"))
        .otherwise(pl.lit("one-pair"))
    )
    estimated = estimated.with_columns(basis.alias("offset_basis"))
    given = pl.DataFrame(
        {
            "machine": list(settings.clock_offsets),
            "clock_offset_s": list(settings.clock_offsets.values()),
            "offset_method": ["given"] * len(settings.clock_offsets),
            "offset_pairs": [None] * len(settings.clock_offsets),
            "offset_basis": ["given"] * len(settings.clock_offsets),
        },
        schema=OFFSET_SCHEMA,
    ).with_columns(short_name(pl.col("machine")))
    return pl.concat(
        [given, estimated.filter(~pl.col("machine").is_in(given["machine"].implode()))],
        how="diagonal_relaxed",
    ).select(list(OFFSET_SCHEMA))
