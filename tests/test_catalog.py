"""The event catalog: strict loading, user overrides, and entries checked against real events."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from parsers.evtx_reader import Provenance, ReadSettings, read_evtx
from parsers.model import EventFilter
from pipeline.catalog import CatalogError, load_catalog, tag


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extra.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_catalog_loads_and_every_entry_has_provenance() -> None:
    """What the loader does not enforce: a source that says something, the kinds the
    correlation needs, a trade-off for every workaround. (Known kinds and confidence
    words are the loader's own checks, tested below with bad files.)"""
    catalog = load_catalog()
    assert len(catalog.events) >= 40
    assert all(entry.source.strip() for entry in catalog.events)
    kinds = {e.kind for e in catalog.events}
    for needed in ("migration.completed", "guest.network_changed", "wfp.blocked_connection"):
        assert needed in kinds
    assert {r.id for r in catalog.remediation} >= {"host-fix", "guest-disable-quarantine"}
    assert all(r.tradeoff for r in catalog.remediation if not r.permanent)


def test_override_replaces_an_entry_without_code_change(tmp_path: Path) -> None:
    extra = _write(
        tmp_path,
        """
[[event]]
provider = "Microsoft-Windows-Hyper-V-VMMS"
event_id = 20415
kind = "migration.completed"
side = "source"
fields = { vm_name = "VmName", vmid = "VmId", blackout_s = "BlackoutTime" }
confidence = "seen"
source = "customer sample, build 17763"
""",
    )
    catalog = load_catalog([extra])
    entry = next(e for e in catalog.events if e.event_id == 20415)
    assert entry.fields["blackout_s"] == "BlackoutTime"
    assert entry.origin.startswith(str(extra))
    assert len(catalog.events) == len(load_catalog().events)


def test_override_adds_a_kind_and_an_entry(tmp_path: Path) -> None:
    extra = _write(
        tmp_path,
        """
[kinds]
"guest.custom" = "something a customer's build logs"

[[event]]
provider = "Contoso-Agent"
event_id = 7
kind = "guest.custom"
confidence = "inferred"
source = "test"
""",
    )
    catalog = load_catalog([extra])
    assert any(e.provider == "Contoso-Agent" for e in catalog.events)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[event]]\nprovider = "P"\nevent_id = 1\nkind = "nope"\nconfidence = "seen"\n'
            'source = "s"\n',
            "unknown kind 'nope'",
        ),
        (
            '[[event]]\nprovider = "P"\nevent_id = 1\nkind = "guest.network_changed"\n'
            'confidence = "seen"\nsource = "s"\ncolour = "red"\n',
            "extra.toml:1: unknown key colour",  # the [[event]] it belongs to
        ),
        (
            '[[event]]\nprovider = "P"\nevent_id = 1\nkind = "guest.network_changed"\n'
            'confidence = "sure"\nsource = "s"\n',
            "confidence must be one of",
        ),
        (
            '[[event]]\nprovider = "P"\nevent_id = 1\nkind = "guest.network_changed"\n'
            'confidence = "seen"\nsource = "s"\nfields = { shoe_size = "X" }\n',
            "unknown column(s) shoe_size",
        ),
        (
            '[[event]]\nprovider = "P"\nevent_id = 1\nkind = "guest.network_changed"\n'
            'confidence = "seen"\n',
            "missing key source",
        ),
        ("[model]\nsafety_timeout = 7\n", "extra.toml:2: unknown key safety_timeout"),
        ('[model]\nsafety_timeout_s = "7 s"\n', "extra.toml:2: safety_timeout_s: expected float"),
        ("[nonsense]\n", "extra.toml:1: unknown key nonsense"),
        # A wrong type is one line with file and line, never a traceback (issue 11).
        (
            '[[event]]\nprovider = 5\nevent_id = 1\nkind = "guest.network_changed"\n'
            'confidence = "seen"\nsource = "s"\n',
            "extra.toml:1: provider: expected str, got int",
        ),
        (
            '[[event]]\nprovider = "P"\nevent_id = "one"\nkind = "guest.network_changed"\n'
            'confidence = "seen"\nsource = "s"\n',
            "event_id: expected int, got str",
        ),
        ('[protocols]\nTCP = "six"\n', "extra.toml:1: protocols: expected int, got str"),
        ("schema_version = 99\n", "extra.toml:1: schema_version 99 is not one this lmtrace reads"),
        ("[[event]\n", "extra.toml"),
    ],
)
def test_bad_catalog_fails_with_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    extra = _write(tmp_path, text)
    with pytest.raises(CatalogError) as caught:
        load_catalog([extra])
    assert message in str(caught.value)
    assert str(extra) in str(caught.value)


def test_duplicate_entry_in_one_file_names_both_lines(tmp_path: Path) -> None:
    entry = (
        '[[event]]\nprovider = "P"\nevent_id = 1\nkind = "guest.network_changed"\n'
        'confidence = "seen"\nsource = "s"\n\n'
    )
    extra = _write(tmp_path, entry + entry)
    pattern = r"extra.toml:7: duplicate event .*also at .*extra.toml:1\)"
    with pytest.raises(CatalogError, match=pattern):
        load_catalog([extra])


def test_missing_catalog_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read catalog"):
        load_catalog([tmp_path / "absent.toml"])


def _real_events(corpus_dir: Path, sample: str, event_id: int) -> pl.DataFrame:
    path = corpus_dir / sample
    read = read_evtx(
        path,
        ReadSettings(filter=EventFilter(event_ids=frozenset({event_id}))),
        Provenance(str(path), None, "0" * 64),
    )
    return pl.concat(list(read))


def test_seen_entries_match_the_real_events_they_cite(corpus_dir: Path) -> None:
    """The simulator and the catalog must not agree on the same mistake: check against real logs."""
    catalog = load_catalog()
    checked = 0
    for entry in catalog.events:
        if entry.sample is None:
            continue
        real = _real_events(corpus_dir, entry.sample, entry.event_id)
        real = real.filter(pl.col("provider").str.to_lowercase() == entry.provider.lower())
        assert real.height > 0, f"{entry.origin}: no event {entry.event_id} in {entry.sample}"
        if entry.channel:
            assert set(real["channel"].str.to_lowercase()) == {entry.channel.lower()}
        keys = set().union(*(json.loads(d).keys() for d in real["data"]))
        required = {name for col, name in entry.fields.items() if col not in entry.optional}
        assert required <= keys, f"{entry.origin}: {sorted(required - keys)} not in real events"
        checked += 1
    assert checked >= 10


def test_tag_extracts_named_columns_from_real_security_events(corpus_dir: Path) -> None:
    catalog = load_catalog()
    path = corpus_dir / "parsers/omerbenamram-evtx__Security_short_selected.evtx"
    events = pl.concat(list(read_evtx(path, ReadSettings(), Provenance(str(path), None, "x"))))
    tagged = tag(events.lazy(), catalog)
    blocked = tagged.filter(pl.col("kind") == "wfp.blocked_connection")
    assert blocked.height == events.filter(pl.col("event_id") == 5157).height > 0
    row = blocked.row(0, named=True)
    payload = json.loads(events.filter(pl.col("record_id") == row["record_id"])["data"].item())
    assert row["protocol"] == int(payload["Protocol"])
    # 5157 names the local side Source (tests/test_wfp_sides.py checks every side).
    assert row["local_port"] == int(payload["SourcePort"])
    assert row["remote_address"] == payload["DestAddress"]
    assert row["inbound"] == (payload["Direction"] == "%%14592")
    # Events the catalog does not know are not tagged.
    assert (
        tagged.height
        == events.filter(
            pl.col("event_id").is_in([e.event_id for e in catalog.events])
            & pl.col("provider").is_in([e.provider for e in catalog.events])
        ).height
    )


def test_tag_reads_escaped_values_and_protocol_names() -> None:
    from parsers.model import EVENT_SCHEMA

    catalog = load_catalog()
    data = {
        "action": "DROP",
        "protocol": "UDP",
        "src-ip": 'a"b\\c',
        "dst-port": "53",
        "path": "RECEIVE",
    }
    row = {c: None for c in EVENT_SCHEMA} | {
        "provider": "pfirewall.log",
        "event_id": 1,
        "channel": "pfirewall.log",
        "data": json.dumps(data),
    }
    frame = pl.DataFrame([row], schema=EVENT_SCHEMA)
    tagged = tag(frame.lazy(), catalog)
    assert tagged["kind"].to_list() == ["pflog.drop"]
    assert tagged["remote_address"].to_list() == ['a"b\\c']
    assert tagged["protocol"].to_list() == [17]
    assert tagged["inbound"].to_list() == [True]


def test_every_section_the_catalog_cites_exists_in_the_repository() -> None:
    """The catalog's sources cite docs/domain.md by section; each section must be there."""
    import re

    root = Path(__file__).resolve().parents[1]
    text = (root / "pipeline" / "catalog.toml").read_text(encoding="utf-8")
    cited = set(re.findall(r"docs/domain\.md §(\d+)", text))
    domain = (root / "docs" / "domain.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\.", domain, re.MULTILINE))
    assert cited and cited <= sections, cited - sections
