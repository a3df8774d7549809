"""Timeline figures and pages, checked against the findings analyze wrote for a real bundle.

The bundle is simulated (cluster-drain: three hosts, four overlapping migrations,
guest clocks 2.5 s ahead), written as .evtx, ingested and correlated by
``analyze``; expectations come from findings.json and the Parquet tables analyze
wrote, never from the timeline code. Browser rendering is in test_browser.py.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import psutil
import pytest
from typer.testing import CliRunner

from parsers.model import LmtraceError
from parsers.time_values import parse_zone
from pipeline import __version__
from pipeline.analyze import Analysis, AnalyzeSettings, analyze
from pipeline.cli import app
from pipeline.simulate import SimulateOptions, simulate
from pipeline.timeline import (
    TimelineError,
    TimelineSettings,
    timeline_figure,
    write_static,
    write_timeline,
)
from pipeline.timeline.figure import _overview_table, timeline_plot
from pipeline.timeline.plot import to_json
from pipeline.wording import clock_words


@pytest.fixture(scope="module")
def drain(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    """simulate --scenario cluster-drain --seed 3 --guest-clock-offset 2.5, then analyze."""
    root = tmp_path_factory.mktemp("drain")
    simulate(SimulateOptions("cluster-drain", seed=3, guest_clock_offset=2.5), root / "bundle")
    return analyze([root / "bundle"], root / "out", AnalyzeSettings())


@pytest.fixture(scope="module")
def findings(drain: Analysis) -> dict:
    return json.loads((drain.out / "findings.json").read_text(encoding="utf-8"))


def _traces(fig, role: str) -> list:
    return [t for t in fig.data if (t.meta or {}).get("lmtrace") == role]


def _segments(trace) -> list[list]:
    """Runs of non-None x values: one per drawn span or shape."""
    runs, run = [], []
    for x in trace.x:
        if x is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append(x)
    return runs + ([run] if run else [])


def _naive(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(timezone.utc).replace(tzinfo=None)


def test_one_lane_per_machine_hosts_above_guests(drain: Analysis, findings: dict) -> None:
    fig = timeline_figure(drain.result, TimelineSettings())
    labels = fig.layout.yaxis.ticktext
    assert len(labels) == len(findings["machines"]) == 7
    roles = {m["computer"]: m["role"] for m in findings["machines"]}
    lane_roles = [roles[re.match(r"<b>(.*?)</b>", label)[1]] for label in labels]
    assert lane_roles == sorted(lane_roles, key=lambda r: r != "host")  # hosts first
    assert lane_roles.count("host") == 3


def test_each_migration_spans_its_hosts_from_start_to_end(drain: Analysis, findings: dict) -> None:
    fig = timeline_figure(drain.result, TimelineSettings())
    spans = [s for t in _traces(fig, "migration") for s in _segments(t)]
    # Every migration is drawn on its source and its destination lane.
    assert len(spans) == 2 * len(findings["migrations"]) == 8
    drawn = sorted((s[0], s[-1]) for s in spans)
    expected = sorted(
        (_naive(m["start"]), _naive(m["end"])) for m in findings["migrations"] for _ in (0, 1)
    )
    assert drawn == expected
    verdicts = {m["verdict"] for m in findings["migrations"]}
    assert {t.name.split(",")[1].split("(")[0].strip() for t in _traces(fig, "migration")} == (
        verdicts
    )
    blackouts = [s for t in _traces(fig, "blackout") for s in _segments(t)]
    assert len(blackouts) == 8
    for m in findings["migrations"]:
        end = _naive(m["end"])
        mine = [b for b in blackouts if b[-1] == end]
        assert mine and all(
            abs((b[-1] - b[0]).total_seconds() - m["blackout_s"]) < 1e-5 for b in mine
        )


def test_quarantine_windows_and_markers_on_the_host_clock(drain: Analysis, findings: dict) -> None:
    fig = timeline_figure(drain.result, TimelineSettings())
    shapes = [s for t in _traces(fig, "quarantine") for s in _segments(t)]
    windows = [m for m in findings["migrations"] if m["q0_host"] and m["q_end_host"]]
    assert len(shapes) == len(windows) == 4
    assert sorted((min(s), max(s)) for s in shapes) == sorted(
        (_naive(m["q0_host"]), _naive(m["q_end_host"])) for m in windows
    )
    blocked = pl.read_parquet(drain.out / "blocked.parquet")
    xs = sorted(x for t in _traces(fig, "blocked") for x in t.x)
    assert len(xs) == blocked.height > 0
    host_clock = sorted(blocked["timestamp_host"].dt.replace_time_zone(None).to_list())
    assert xs == host_clock
    assert xs != sorted(blocked["timestamp"].dt.replace_time_zone(None).to_list())
    # One Netvsc 14 per migration, drawn at the guest's estimated host time.
    triggers = [x for t in _traces(fig, "trigger") for x in t.x]
    assert sorted(triggers) == sorted(_naive(m["q0_host"]) for m in windows)


def test_blocked_per_second_counts_every_blocked_event(drain: Analysis) -> None:
    fig = timeline_figure(drain.result, TimelineSettings())
    bars = _traces(fig, "count")
    blocked = pl.read_parquet(drain.out / "blocked.parquet")
    assert sum(sum(t.y) for t in bars) == blocked.height
    tcp = next(t for t in bars if "TCP" in t.name)
    assert sum(tcp.y) == blocked.filter(pl.col("protocol") == 6).height
    assert "per 1 s" in fig.layout.yaxis2.title.text


def test_legend_states_each_guest_offset(drain: Analysis, findings: dict) -> None:
    fig = timeline_figure(drain.result, TimelineSettings())
    names = " ".join(t.name for t in _traces(fig, "offset"))
    for m in findings["migrations"]:
        assert clock_words(m["clock_offset_s"], m["offset_method"]) in names


def test_time_zone_moves_the_axis_and_names_itself(drain: Analysis, findings: dict) -> None:
    first = findings["migrations"][0]
    for tz, shift, label in (
        ("Europe/Berlin", timedelta(hours=1), "Europe/Berlin, UTC+01:00"),
        ("+05:30", timedelta(hours=5, minutes=30), "UTC+05:30"),
        ("UTC", timedelta(0), "Time (UTC)"),
    ):
        fig = timeline_figure(drain.result, TimelineSettings(zone=parse_zone(tz)))
        assert label in fig.layout.xaxis2.title.text
        starts = [s[0] for t in _traces(fig, "migration") for s in _segments(t)]
        assert _naive(first["start"]) + shift in starts


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (TimelineSettings(around="M999"), "neither a migration id"),
        (TimelineSettings(around="2025-13-40T00:00"), "not an ISO 8601 time"),
    ],
)
def test_bad_options_are_one_clear_error(
    drain: Analysis, settings: TimelineSettings, message: str
) -> None:
    with pytest.raises(LmtraceError, match=message):
        timeline_figure(drain.result, settings)


def test_around_a_migration_zooms_on_it(drain: Analysis, findings: dict) -> None:
    m = findings["migrations"][1]
    fig = timeline_figure(drain.result, TimelineSettings(around=m["migration_id"], window_s=10))
    lo, hi = fig.layout.xaxis.range
    assert lo == _naive(m["start"]) - timedelta(seconds=10)
    assert hi == max(_naive(m["end"]), _naive(m["q_end_host"])) + timedelta(seconds=10)
    lanes = " ".join(fig.layout.yaxis.ticktext)
    for name in (m["source"], m["destination"], m["vm_name"]):
        assert f"<b>{name}</b>" in lanes
    by_time = timeline_figure(drain.result, TimelineSettings(around=m["end"], window_s=5))
    assert by_time.layout.xaxis.range[0] == _naive(m["end"]) - timedelta(seconds=5)


def test_pages_overview_links_every_migration(drain: Analysis, findings: dict) -> None:
    pages = [p for p in drain.written if p.suffix == ".html" and "timeline" in str(p)]
    main = drain.out / "timeline.html"
    assert main in pages
    text = main.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc=", text)  # plotly.js is embedded, not fetched
    links = re.findall(r'<a href="(timelines/[^"]+)">(M\d+)</a>', text)
    assert sorted(mid for _, mid in links) == sorted(
        m["migration_id"] for m in findings["migrations"]
    )
    # The Quarantine column words each window's class as the reports do, never its code.
    rows = re.findall(r"<tr><td><a [^>]*>(M\d+)</a>(?:</td><td>[^<]*){3}</td><td>([^<]*)", text)
    words = {m["migration_id"]: m["window_words"] for m in findings["migrations"]}
    assert len(rows) == len(words) and any(words.values())
    for mid, cell in rows:
        assert html.unescape(cell).startswith(words[mid] or "—"), (mid, cell)
    for href, _ in links:
        page = (drain.out / href).read_text(encoding="utf-8")
        assert '<script charset="utf-8" src="plotly.min.js"></script>' in page
        assert f"Generated by lmtrace {html.escape(__version__)}." in page  # as the overview
    assert (drain.out / "timelines" / "plotly.min.js").stat().st_size > 1_000_000
    assert main.stat().st_size < 10_000_000


def test_overview_shows_a_dash_where_nothing_was_logged_or_counted(drain: Analysis) -> None:
    """A migration whose source was not logged and whose guest was not found: its row
    says so with dashes (the reports' and the terminal's way), not '' and a reassuring 0."""
    first = pl.col("migration_id") == drain.result.migrations["migration_id"][0]
    migrations = drain.result.migrations.with_columns(
        pl.when(first).then(None).otherwise(pl.col(c)).alias(c) for c in ("source", "machine")
    )
    table = _overview_table(replace(drain.result, migrations=migrations), "timelines")
    rows = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows]
    row = next(c for c in cells if drain.result.migrations["migration_id"][0] in c[0])
    assert row[2].startswith("— → ") and row[5] == "—", row
    assert all(c[5].isdigit() for c in cells if c is not row)


def test_dense_markers_are_binned_and_the_legend_says_so(drain: Analysis, tmp_path: Path) -> None:
    """100,000 blocked events: markers aggregated, counts exact, page under 10 MB."""
    blocked = drain.result.blocked
    n = 100_000
    reps = -(-n // blocked.height)
    dense = pl.concat(
        [
            blocked.with_columns(
                pl.col("timestamp_host") + pl.duration(milliseconds=37 * i),
                (pl.col("record_id") + i * 1_000_000),
            )
            for i in range(reps)
        ]
    ).head(n)
    result = replace(drain.result, blocked=dense)
    settings = TimelineSettings(detail_max=2000)
    fig = timeline_figure(result, settings)
    markers = _traces(fig, "blocked")
    assert sum(t.meta["events"] for t in markers) == n
    for t in markers:
        assert len(t.x) <= 2000
        assert t.meta["binned_s"] and "1 marker per" in t.name
    assert sum(sum(t.y) for t in _traces(fig, "count")) == n
    page = write_timeline(result, tmp_path / "dense.html", settings)[0]
    assert page.stat().st_size < 10_000_000


def test_log_text_is_escaped_in_every_label(drain: Analysis) -> None:
    evil = "<img src=x onerror=alert(1)>"
    migs = drain.result.migrations.with_columns(pl.lit(evil).alias("vm_name"))
    machines = drain.result.machines.with_columns(
        pl.when(pl.col("role") == "guest")
        .then(pl.lit("<script>x()</script>"))
        .otherwise(pl.col("computer"))
        .alias("computer")
    )
    result = replace(drain.result, migrations=migs, machines=machines)
    fig = timeline_figure(result, TimelineSettings())
    text = json.dumps(fig.to_plotly_json(), default=str)
    assert "<img" not in text and "<script" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "&lt;script&gt;x()&lt;/script&gt;" in text


@pytest.mark.parametrize("around", [None, 0])
def test_the_page_figure_is_what_plotly_validates(drain: Analysis, around: int | None) -> None:
    """The timeline is written as plain JSON, without plotly's validation (issue 12: it cost
    a third of a small analysis). Handed to plotly's Figure, it must be accepted (plotly
    refuses an unknown property) and come back unchanged (nothing coerced), so the page
    draws what plotly itself would have drawn. Byte equality with the pages plotly wrote
    is tests/test_same_outputs.py's."""
    import plotly.graph_objects as go

    ids = drain.result.migrations["migration_id"].to_list()
    settings = TimelineSettings(around=None if around is None else ids[around])
    plot = timeline_plot(drain.result, settings).to_dict()
    validated = go.Figure(plot).to_plotly_json()
    assert json.loads(to_json(validated)) == json.loads(to_json(plot))
    assert len(plot["data"]) > 5 and plot["layout"]["template"]["layout"]["plot_bgcolor"]


def test_static_export_rejects_other_formats(drain: Analysis, tmp_path: Path) -> None:
    fig = timeline_figure(drain.result, TimelineSettings())
    with pytest.raises(TimelineError, match=r"\.png or \.svg"):
        write_static(fig, tmp_path / "t.gif")
    assert not (tmp_path / "t.gif").exists()


def test_static_png_and_svg_export(drain: Analysis, tmp_path: Path) -> None:
    pytest.importorskip("kaleido", reason="static export needs kaleido (in the test extras)")
    if not shutil.which("chromium") and not shutil.which("google-chrome"):
        pytest.skip("static export needs a Chrome for kaleido to drive (Debian's chromium)")
    # PNG as the docs show it (lmtrace timeline OUT --image timeline.png), SVG from Python.
    png = tmp_path / "timeline.png"
    run = CliRunner().invoke(
        app, ["timeline", str(drain.out), "--image", str(png), "--out", str(tmp_path / "t.html")]
    )
    assert run.exit_code == 0, run.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # a drawn figure, not an empty canvas
    # One SVG (each export starts a browser): the figure, with an incomplete store's warning.
    fig = timeline_figure(drain.result, TimelineSettings())
    svg = write_static(fig, tmp_path / "w.svg", "the store is incomplete: <x>").read_text("utf-8")
    assert "<svg" in svg[:500]
    assert "APP-VM01" in svg or "app-vm01" in svg.lower()
    assert "Warning: the store is incomplete: &#60;x&#62;." in svg


def test_a_static_export_past_its_deadline_is_stopped_and_said(
    drain: Analysis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kaleido's Chrome once did not answer in a loaded test run, and the export waited
    for ever. A deadline shorter than any export here stands for that: each try is
    stopped, the second too, and the error says so; no partial file is left."""
    pytest.importorskip("kaleido", reason="static export needs kaleido (in the test extras)")
    from pipeline.timeline import static_image

    monkeypatch.setattr(static_image, "DEADLINE_S", 1.0)
    png = tmp_path / "t.png"
    started = time.monotonic()
    with pytest.raises(TimelineError, match=r"did not finish in 1 s, 2 tries"):
        write_static(timeline_figure(drain.result, TimelineSettings()), png)
    assert time.monotonic() - started < 20
    assert not png.exists()
    running = [p.info["cmdline"] or [] for p in psutil.process_iter(["cmdline"])]
    children = [line for line in running if str(png) in line]
    assert not children  # the exporting process was killed, not left behind


def test_a_static_export_that_fails_once_is_tried_again(
    drain: Analysis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kaleido's Chrome once started but was not ready, and the export failed at once
    ("ReferenceError: kaleido_scopes is not defined", a fresh clone's CI run). A child
    that fails its first try the same way stands for that: the second try writes the
    image. A child that always fails is given up after two tries, with its last line."""
    pytest.importorskip("kaleido", reason="static export needs kaleido (in the test extras)")
    from pipeline.timeline import static_image

    first_fails = (
        "import pathlib\n"
        "tried = pathlib.Path(sys.argv[1] + '.tried')\n"
        "if not tried.exists():\n"
        "    tried.touch()\n"
        "    sys.exit('ReferenceError: kaleido_scopes is not defined')\n"
    )
    child = static_image._CHILD.replace(
        "import plotly.io as pio\n", first_fails + "import plotly.io as pio\n"
    )
    assert child != static_image._CHILD
    monkeypatch.setattr(static_image, "_CHILD", child)
    png = tmp_path / "t.png"
    write_static(timeline_figure(drain.result, TimelineSettings()), png)
    assert (tmp_path / "t.png.tried").exists()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    monkeypatch.setattr(static_image, "_CHILD", "import sys\nsys.exit('always broken')\n")
    with pytest.raises(TimelineError, match=r"static export failed, 2 tries: always broken"):
        write_static(timeline_figure(drain.result, TimelineSettings()), tmp_path / "u.png")
    assert not (tmp_path / "u.png").exists()


def test_cli_timeline(drain: Analysis, tmp_path: Path, findings: dict) -> None:
    mid = findings["migrations"][0]["migration_id"]
    page = tmp_path / "zoom.html"
    run = CliRunner().invoke(
        app,
        ["timeline", str(drain.out), "--around", mid, "--window", "10s", "--tz", "+02:00",
         "--out", str(page)],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    assert str(page) in run.output
    assert "UTC+02:00" in page.read_text(encoding="utf-8")
    bad = CliRunner().invoke(app, ["timeline", str(drain.out), "--tz", "Nowhere/City"])
    assert bad.exit_code == 2
    assert "not a time zone" in bad.output and "Traceback" not in bad.output


def test_a_bundle_without_migrations_says_so(drain: Analysis, findings: dict) -> None:
    result = replace(
        drain.result,
        migrations=drain.result.migrations.head(0),
        blocked=drain.result.blocked.head(0),
        context=drain.result.context.head(0),
    )
    fig = timeline_figure(result, TimelineSettings())
    assert "No live migration was found" in fig.layout.annotations[-1].text
    assert len(fig.layout.yaxis.ticktext) == len(findings["machines"])
    lo, hi = fig.layout.xaxis.range
    first = min(_naive(m["first_ts"]) for m in findings["machines"])
    last = max(_naive(m["last_ts"]) for m in findings["machines"])
    assert lo < first and hi > last  # the logs' coverage, padded
    assert _traces(fig, "migration") == [] and _traces(fig, "blocked") == []
