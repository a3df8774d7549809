"""``lmtrace simulate``: realistic host and guest bundles with an exact ground truth.

The problem: no public bundle shows a live migration cutting a VM off the
network, and a customer's bundle never comes with the answer. The simulator
writes bundles laid out as customers send them (one folder per machine, the
exported .evtx files of the channels that matter, optionally pfirewall.log)
together with ground_truth.json, which states every migration, quarantine and
logged inbound drop, with record ids, and the verdict the rules give.

Pipeline: scenarios.toml preset + knobs -> :func:`plan_incident` (the truth,
on the host clock) -> :func:`render` (incident events per file, in each
machine's clock) -> merged with background noise -> :class:`EvtxWriter`.
One ``random.Random(seed)`` drives everything, in a fixed order, so the same
arguments give byte-identical files. ``--size`` keeps each log running after
the incident (noise only) until the bundle reaches the size: the padding
never touches the incident window.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from parsers.evtx_layout import CHUNK_SIZE
from parsers.evtx_writer import EvtxWriter
from pipeline.simulate.events import (
    GUEST_CHANNELS,
    GUEST_CORE_CHANNELS,
    HOST_CHANNELS,
    PFIREWALL_HEADER,
    GuestIds,
    Item,
    Rendered,
    history_events,
    merge,
    nearby_swaps,
    render,
)
from pipeline.simulate.facts import as_former, check_zone, system_facts
from pipeline.simulate.layouts import file_name
from pipeline.simulate.nla import add_nla_chatter
from pipeline.simulate.noise import (
    GUEST_SHARE,
    HOST_SHARE,
    PADDING_WEIGHT,
    pfirewall_noise,
    stream,
    variants,
)
from pipeline.simulate.plan import (
    HISTORY_US,
    US,
    Machine,
    Plan,
    SimulateError,
    SimulateOptions,
    feature_rng,
    load_presets,
    plan_incident,
    resolve_preset,
    to_us,
)
from pipeline.simulate.routine import RoutineTruth, add_routine_traffic
from pipeline.simulate.truth import (
    Observed,
    bundle_verdict,
    failed_migration,
    machines,
    migration_facts,
    migration_verdict,
    migrations,
    quarantines,
)
from pipeline.verdict_table import load_table

__all__ = ["SimulateError", "SimulateOptions", "SimulationResult", "parse_size", "simulate"]

PADDING_PER_HOUR = 1800.0
"""Event rate of the --size padding: a busy server's log, so 1 GB spans weeks, not years."""

_SIZE_CHECK_EVERY = 32
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMG]?)(?:I?B)?")


@dataclass(frozen=True)
class SimulationResult:
    """Where the bundle is, what it holds, and its ground truth (as written to JSON)."""

    out: Path
    ground_truth: dict[str, object]
    total_bytes: int


def parse_size(text: str) -> int:
    """``1GB``, ``500MB``, ``64KB`` or a byte count (binary units); ValueError otherwise."""
    match = _SIZE.fullmatch(text.strip().upper())
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 1GB, 500MB, 64KB)")
    value = int(float(match[1]) * _UNITS[match[2]])
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return value


def _lmtrace_version() -> str:
    try:
        return version("lmtrace")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class _FileJob:
    """One file to write: its machine, channel and share of the padding."""

    machine: Machine
    channel: str
    share: float  # fraction of the machine's noise rate this file gets


def _jobs(plan: Plan) -> list[_FileJob]:
    """The files of the bundle: each host's, each guest's, each unrelated machine's.

    Without ``--classification-logs`` a guest exported only System and Security.
    """
    exported = GUEST_CHANNELS if plan.options.classification_logs else GUEST_CORE_CHANNELS
    jobs = []
    for h in plan.hosts:
        jobs += [_FileJob(h, c, HOST_SHARE.get(c, 0.0)) for c in HOST_CHANNELS]
    for g in (*plan.guests, *plan.unrelated):
        jobs += [_FileJob(g, c, GUEST_SHARE.get(c, 0.0)) for c in exported]
    return jobs


class _Bundle:
    """Writes the files of one plan into ``out`` and records what it wrote."""

    def __init__(self, plan: Plan, rendered: Rendered, ids: dict[str, GuestIds], out: Path):
        self.plan = plan
        self.rendered = rendered
        self.ids = ids
        self.out = out
        self.files: list[dict[str, object]] = []
        self.wfp_events: dict[str, int] = {}
        self.drop_lines: dict[str, list[int]] = {}
        self.pfirewall_drops: list[dict[str, object]] = []

    def _clock(self, m: Machine, host_us: int) -> int:
        """Where host time ``host_us`` falls in the machine's logs' order."""
        return m.order_us(host_us) if m.role != "host" else host_us

    def _events(
        self, job: _FileJob, rng: random.Random, budget: int | None, path: Path
    ) -> Iterator[Item]:
        """Boot events, incident events and noise of one file, merged in the order they
        happened (Machine.order_us; the boot history precedes every clock step)."""
        plan, m = self.plan, job.machine
        rel = f"{m.folder}/{file_name(job.channel)}"
        history = self._clock(m, to_us(plan.options.start) - HISTORY_US)
        end = self._clock(m, plan.end_us)
        boot: list[Item] = []
        first_boot = history + (60 if m.role == "host" else 5) * US
        renamed_at = first_boot + 10 * 60 * US  # a renamed guest's second boot
        if m.role != "host":
            events = history_events(m, self.ids[m.name], first_boot, rng)
            for i, (t, spec) in enumerate(as_former(events, m, renamed_at)):
                if spec.channel == job.channel:
                    boot.append((t, -1000 + i, spec, None))
            boot.sort(key=lambda item: (item[0], item[1]))
        # What the System log says about the machine (boots, OS, zone, updates, renames,
        # clock steps) has its own random stream and is merged after the neighbour swaps,
        # so the incident, its noise and every other file stay exactly as they were.
        facts: list[Item] = []
        if job.channel == "System":
            own = feature_rng(plan.options.seed, f"facts:{m.name}")
            found = system_facts(m, first_boot, plan.preset.host_update, own)
            facts = [(t, -2000 + i, spec, None) for i, (t, spec) in enumerate(found)]
        pool = variants(m, job.channel, self.ids.get(m.name), rng)
        rate = plan.preset.noise * job.share
        windows = [
            (m.guest_us(a), m.guest_us(b)) for a, b in plan.quarantine_windows(m)
        ] if m.role == "guest" else []  # fmt: skip
        noise = stream(m, pool, rate, history, end, windows, rng, 1_000_000_000)
        incident = merge(iter(boot), iter(self.rendered.events.get(rel, [])), noise)
        yield from merge(nearby_swaps(incident, rng, steps=m.steps_back_at()), iter(facts))
        if budget is None or not pool:
            return
        # Padding: the log keeps running after the incident until the file has its size.
        busy = max(rate, PADDING_PER_HOUR)
        padding = stream(m, pool, busy, end, 2**62, windows, rng, 2_000_000_000)
        for n, item in enumerate(padding):
            if n % _SIZE_CHECK_EVERY == 0 and os.path.getsize(path) + CHUNK_SIZE >= budget:
                return
            yield item

    def write_evtx(self, job: _FileJob, rng: random.Random, budget: int | None) -> int:
        m = job.machine
        rel = f"{m.folder}/{file_name(job.channel)}"
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        wfp = 0
        with EvtxWriter(path) as writer:
            for _, _, spec, tag in self._events(job, rng, budget, path):
                record_id = writer.write(spec)
                if tag is not None:
                    tag.record_id = record_id
                if spec.event_id in (5152, 5156, 5157) and spec.channel == "Security":
                    wfp += 1
        stats = writer.close()
        if job.channel == "Security":
            self.wfp_events[m.name] = wfp
        self.files.append({"path": rel, "records": stats.records, "bytes": stats.bytes})
        return stats.bytes

    def write_pfirewall(self, guest: Machine, rng: random.Random) -> int:
        rel = f"{guest.folder}/pfirewall.log"
        path = self.out / rel
        plan = self.plan
        history = guest.order_us(to_us(plan.options.start) - HISTORY_US)
        rendered = self.rendered.pfirewall.get(guest.name, [])
        incident = [(order, 0, line, None) for order, _, line in rendered]
        background = (
            (t, 1, line, None)
            for t, line in pfirewall_noise(
                guest, plan.preset.noise * 0.5, history, guest.order_us(plan.end_us), rng
            )
        )
        routine = [
            (t, 2, x, tag) for t, x, tag in self.rendered.routine_pfirewall.get(guest.name, [])
        ]
        lines = list(PFIREWALL_HEADER)
        self.drop_lines[guest.name] = [t for _, t, line in rendered if " DROP " in line]
        for _, kind, line, tag in merge_lines(incident, background, routine):
            lines.append(line)
            if tag is not None:
                tag.line = len(lines)
            if kind == 0 and " DROP " in line:
                fields = line.split(" ")
                self.pfirewall_drops.append(
                    {
                        "guest": guest.name,
                        "file": rel,
                        "line": len(lines),
                        "local_time": f"{fields[0]} {fields[1]}",
                        "protocol": fields[3].lower(),
                        "local_port": int(fields[7]),
                        "remote_address": fields[4],
                    }
                )
        data = ("\r\n".join(lines) + "\r\n").encode("ascii")
        path.write_bytes(data)
        self.files.append(
            {"path": rel, "records": len(lines) - len(PFIREWALL_HEADER), "bytes": len(data)}
        )
        return len(data)


# A pfirewall.log line: its place in the log's order (Machine.order_us), kind (0 incident,
# 1 noise, 2 routine), the line, its truth entry.
Line = tuple[int, int, str, Any]


def merge_lines(
    incident: list[Line], background: Iterator[Line], routine: list[Line]
) -> Iterator[Line]:
    """pfirewall.log lines of the three sources in the order they happened (incident first
    on ties): Windows appends them so, whatever the clock showed."""
    return heapq.merge(incident, background, routine, key=lambda x: (x[0], x[1]))


def simulate(options: SimulateOptions, out: Path) -> SimulationResult:
    """Write the bundle of ``options`` into ``out`` (created; files in it are replaced)."""
    check_zone(options.guest_tz)
    preset = resolve_preset(options, load_presets())
    rng = random.Random(options.seed)
    plan = plan_incident(preset, options, rng)
    rendered, ids = render(plan, rng)
    if preset.nla_chatter:
        add_nla_chatter(plan, rendered, ids)
    routine = add_routine_traffic(plan, rendered, ids)
    rendered.sort()
    out.mkdir(parents=True, exist_ok=True)
    bundle = _Bundle(plan, rendered, ids, out)
    jobs = _jobs(plan)
    total = 0
    unpadded = [j for j in jobs if j.share == 0.0]
    padded = [j for j in jobs if j.share > 0.0]
    for job in unpadded:
        total += bundle.write_evtx(job, rng, None)
    budgets: dict[int, int | None] = {}
    if options.size is not None:
        room = options.size - total
        weight = {id(j): PADDING_WEIGHT.get((j.machine.role, j.channel), 0.0) for j in padded}
        total_weight = sum(weight.values())
        budgets = {k: max(int(room * w / total_weight), 0) for k, w in weight.items()}
    for job in padded:
        total += bundle.write_evtx(job, rng, budgets.get(id(job)))
    if options.pfirewall:
        for g in plan.guests:
            bundle.write_pfirewall(g, rng)
    if options.size is not None and total > options.size * 1.05:
        raise SimulateError(
            f"--size {options.size} bytes is too small: this scenario needs {total} bytes of .evtx"
        )
    truth = _ground_truth(plan, bundle, routine)
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return SimulationResult(out, truth, total)


def _ground_truth(plan: Plan, bundle: _Bundle, routine: list[RoutineTruth]) -> dict[str, object]:
    blocked = bundle.rendered.blocked
    table = load_table()
    decided = {}
    table_facts = {}
    for r in plan.reactions:
        g = r.migration.guest
        observed = Observed(
            wfp_events=bundle.wfp_events.get(g.name, 0),
            pfirewall=plan.options.pfirewall,
            drop_lines=bundle.drop_lines.get(g.name, []),
        )
        decided[r.migration.id] = migration_verdict(plan, r, blocked, observed, table)
        table_facts[r.migration.id] = migration_facts(plan, r, blocked, observed)
    failed = failed_migration(table)
    verdicts = [decided.get(m.id, failed).verdict for m in plan.migrations]
    host_logs = any(
        f["records"] and not str(f["path"]).endswith(("/System.evtx", "/Security.evtx"))
        for f in bundle.files
        if any(str(f["path"]).startswith(f"{h.folder}/") for h in plan.hosts)
    )
    blocked_sorted = sorted(blocked, key=lambda b: (b.guest, b.time_us, b.event_id))
    return {
        "scenario": plan.preset.name,
        "description": plan.preset.description,
        "seed": plan.options.seed,
        "lmtrace_version": _lmtrace_version(),
        "arguments": plan.options.arguments(),
        "verdict": bundle_verdict(verdicts, table, host_logs),
        "machines": machines(plan),
        "migrations": migrations(plan, decided, failed, blocked, routine, table_facts),
        "quarantines": quarantines(plan, blocked, routine, bundle.rendered.end_events),
        "blocked_inbound": [b.as_json() for b in blocked_sorted],
        "pfirewall_drops": bundle.pfirewall_drops,
        "other_inbound": [
            e.as_json() for e in sorted(routine, key=lambda e: (e.guest, e.time_us, e.packet))
        ],
        "files": sorted(bundle.files, key=lambda f: str(f["path"])),
    }
