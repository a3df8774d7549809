"""What the machines' OS, updates and boots mean for each migration and each host's fix.

The verdict rules (findings.py) measure what happened; this module adds what the
machine facts (machine_facts.py) say about why, without changing a verdict:

* the quarantine bug is known on Windows Server 2012 R2 (6.3.9600) and 2016
  (10.0.14393) guests [C: wiki.webperfect.ch, docs/domain.md §1]: a guest on another
  version gets that said plainly, and is measured all the same;
* the host fix is KB4338822 (Windows Server 2016, OS build 14393.2395, 2018-07-24)
  plus the registry value SendLmNetworkChangeIndication=0 [C: docs/domain.md §2]. Every
  later Windows Server 2016 release is a cumulative update with a higher 14393
  revision and so carries it [C: MicrosoftDocs/windowsserverdocs,
  WindowsServerDocs/get-started/windows-server-release-info.md: 2018-07 C 14393.2395
  KB4338822, then 14393.2396 KB4346877, 2018-08 B 14393.2430 KB4343887, ...]. A host
  whose logs show it (an installed update, or a boot at revision >= 2395) while its
  guest still logs Netvsc 14 after a migration lacks the registry value or a restart;
* for Windows Server 2012 R2 hosts no public source names a fix: lmtrace says "not
  known" rather than guess a KB.

The versions, the update, its build and the registry value are the catalog's ``[fix]``
table (pipeline/catalog.toml, with their sources), not constants here: a later source
is a ``--catalog`` change. Per-host remediation entries name what each host involved in
a network change lacks.
"""

from __future__ import annotations

from dataclasses import replace

import polars as pl

from pipeline.catalog import FixFacts
from pipeline.findings import Summary
from pipeline.machine_facts import MachineFacts

REASON_NOT_SET = (
    "the update is installed but the registry value SendLmNetworkChangeIndication=0 is not"
    " set, or the host was not restarted since"
)


def _carrying_fix(updates: pl.DataFrame, fix: FixFacts) -> pl.DataFrame:
    """The updates (machine_facts.updates rows) that carry the host fix."""
    month = pl.col("title").str.extract(fix.later_updates)
    return updates.filter(pl.col("kb").is_in(list(fix.kbs)) | (month >= fix.later_since))


def _unfinished(facts: MachineFacts, host: str, fix: FixFacts) -> list[str]:
    """Updates carrying the fix whose download or install started on ``host`` with no
    result logged after it, as words: a step the remediation should name."""
    rows = _carrying_fix(
        facts.updates.filter(
            (pl.col("machine") == host) & pl.col("status").is_in(["started", "downloading"])
        ),
        fix,
    )
    return [
        f"Its System log shows {r['kb']} {r['status']} on"
        f" {r['timestamp']:%Y-%m-%d %H:%M} UTC and no install after it: finish that install"
        " (WindowsUpdateClient 19 says it is done), then restart."
        for r in rows.iter_rows(named=True)
    ]


def fix_evidence(facts: MachineFacts, fix: FixFacts) -> pl.DataFrame:
    """Per host and time: the first sign that the fix is on it (``machine``, ``fixed_at``,
    ``evidence``, ``by_boot``): an installed update that carries it, or a boot whose
    kernel revision is 14393.2395 or later (then it is running, restarted by definition)."""
    installed = facts.updates.filter(pl.col("status") == "installed")
    by_update = _carrying_fix(installed, fix).select(
        "machine",
        pl.col("timestamp").alias("fixed_at"),
        pl.format(
            "{} installed {}", "kb", pl.col("timestamp").dt.strftime("%Y-%m-%d %H:%M UTC")
        ).alias("evidence"),
        pl.lit(False).alias("by_boot"),
    )
    by_boot = facts.boots.filter(
        (pl.col("os_build") == fix.build) & (pl.col("os_revision") >= fix.revision)
    ).select(
        "machine",
        pl.col("timestamp").alias("fixed_at"),
        pl.format(
            f"booted at OS build {fix.build}.{{}} on {{}}",
            "os_revision",
            pl.col("timestamp").dt.strftime("%Y-%m-%d %H:%M UTC"),
        ).alias("evidence"),
        pl.lit(True).alias("by_boot"),
    )
    return pl.concat([by_update, by_boot]).sort("fixed_at")


def _restarted_between(boots: pl.DataFrame, machine: str, after: object, before: object) -> bool:
    return (
        boots.filter(
            (pl.col("machine") == machine)
            & (pl.col("timestamp") > after)
            & (pl.col("timestamp") < before)
        ).height
        > 0
    )


def _host_note(host: str, start: object, facts: MachineFacts, evidence: pl.DataFrame) -> str | None:
    """The fix-installed-yet-Netvsc-14 note for one host of one migration, or None."""
    before = evidence.filter((pl.col("machine") == host) & (pl.col("fixed_at") < start))
    if before.is_empty():
        return None
    first = before.row(0, named=True)
    note = (
        f"{host} has the host fix ({first['evidence']}), yet the guest logged the network"
        f" change (Netvsc 14) after this migration: {REASON_NOT_SET}"
    )
    if not first["by_boot"] and not _restarted_between(facts.boots, host, first["fixed_at"], start):
        note += f" (no boot of {host} is logged between the install and the migration)"
    return note


def migration_notes(
    assessed: pl.DataFrame, facts: MachineFacts, host_of: dict[str, str], fix: FixFacts
) -> pl.DataFrame:
    """``assessed`` with ``notes`` (list of text): the guest's OS, the hosts' fix status.

    ``host_of`` maps the computer names migrations log (source, destination) to machines.
    One row per migration, and few migrations per bundle: the loop is over migrations,
    never over events.
    """
    info = {r["machine"]: r for r in facts.facts.iter_rows(named=True)}
    evidence = fix_evidence(facts, fix)
    known = " and ".join(f"{product} ({version})" for version, product in fix.bug_versions.items())
    notes: list[list[str]] = []
    for m in assessed.iter_rows(named=True):
        found: list[str] = []
        guest = info.get(m["machine"] or "")
        if guest and guest["os_version"] and guest["os_version"] not in fix.bug_versions:
            product = guest["os_product"] or "Windows"
            found.append(
                f"{m['machine']} runs {product} ({guest['os_version']}): the quarantine bug is"
                f" known on {known} guests; this guest was measured all the same"
            )
        began = m.get("start") or m.get("end")
        if m.get("q0") is not None and began is not None:
            for side in ("source", "destination"):
                host = host_of.get((m[side] or "").lower())
                note = host and _host_note(host, began, facts, evidence)
                if note and note not in found:
                    found.append(note)
        notes.append(found)
    return assessed.with_columns(pl.Series("notes", notes, dtype=pl.List(pl.String)))


def _host_entry(
    host: str, row: dict | None, evidence: pl.DataFrame, facts: MachineFacts, fix: FixFacts
) -> dict[str, object]:
    """The remediation entry for one host: what its own logs say it lacks."""
    version = row["os_version"] if row else None
    build = f"{version}.{row['os_revision']}" if version and row and row["os_revision"] else version
    product = (row or {}).get("os_product") or "OS not logged"
    label = f"{host} ({product}, {build or 'build not logged'})"
    fixed = evidence.filter(pl.col("machine") == host)
    set_value = f"Set {fix.registry} = 0 (DWORD), then restart the host."
    fix_version = fix.fixed_version
    assert fix_version is not None, "load_catalog refuses a [fix] without it"
    fix_product = fix.bug_versions[fix_version]
    entry: dict[str, object] = {
        "id": f"host-fix:{host}",
        "where": "host",
        "host": host,
        "permanent": True,
        "tradeoff": None,
        "effect": "The guests no longer log the network change after a live migration to or"
        " from this host, so they do not quarantine.",
    }
    if version is None:
        return entry | {
            "title": f"{label}: not known whether the fix is installed",
            "steps": [
                "Its System log is not in the bundle (or names no OS): export it with"
                " wevtutil epl System System.evtx and analyse again.",
                f"If it runs {fix_product}: install {fix.kb} or a later cumulative update.",
                set_value,
            ],
            "confidence": "stated",
        }
    if version != fix_version and version in fix.bug_versions:
        product = fix.bug_versions[version]
        return entry | {
            "title": f"{label}: no public fix is known for {product} hosts",
            "steps": [
                f"{fix.kb} is for {fix_product}; no public source names an update for"
                f" {product} hosts, so whether one exists is not known.",
                "Until then, use a guest workaround below (temporary, a security trade-off).",
            ],
            "confidence": "stated",
        }
    if version != fix_version:
        return entry | {
            "title": f"{label}: {fix.kb} is for {fix_product}; not known for this version",
            "steps": [
                "Whether this version sends the network-change indication, and honours the"
                " registry value, is not known.",
                set_value,
            ],
            "confidence": "inferred",
        }
    if fixed.is_empty():
        return entry | {
            "title": f"{label}: missing {fix.kb} (or a later cumulative update) and the"
            " registry value",
            "steps": [
                *_unfinished(facts, host, fix),
                f"Install {fix.kb} (OS build {fix.build}.{fix.revision}) or any later cumulative"
                f" update for {fix_product}.",
                set_value,
            ],
            "confidence": "stated",
        }
    return entry | {
        "title": f"{label}: the update is in place ({fixed.row(0, named=True)['evidence']});"
        " missing: the registry value, or a restart since",
        "steps": [set_value],
        "confidence": "stated",
    }


def amend(
    summary: Summary,
    assessed: pl.DataFrame,
    facts: MachineFacts,
    host_of: dict[str, str],
    fix: FixFacts,
) -> Summary:
    """The summary with the notes of the migrations behind its verdict added to its reasons,
    and, when it recommends the fix, one entry per host involved in a network change."""
    chosen = assessed.filter(pl.col("verdict") == summary.verdict)
    notes = list(dict.fromkeys(chosen["notes"].explode().drop_nulls().to_list()))
    remediation = summary.remediation
    if remediation:
        changed = assessed.filter(pl.col("q0").is_not_null())
        hosts = sorted(
            {
                host_of[name.lower()]
                for name in changed["source"].to_list() + changed["destination"].to_list()
                if name and name.lower() in host_of
            }
        )
        info = {r["machine"]: r for r in facts.facts.iter_rows(named=True)}
        evidence = fix_evidence(facts, fix)
        entries = [_host_entry(h, info.get(h), evidence, facts, fix) for h in hosts]
        remediation = remediation + entries
    return replace(summary, reasons=summary.reasons + notes, remediation=remediation)
