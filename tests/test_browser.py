"""The pages in a real headless Chromium with the network blocked: they render, match the
findings, and log text cannot run as script.

The bundle is a simulated cluster drain (two VMs, two migrations) rewritten with
the project's own EVTX writer so that a VM name and a host name are HTML
payloads: ``<img src=x onerror=...>`` and ``<script>...</script>``, both of which
would set ``window.__pwned`` if they ever became markup. analyze then writes the
timelines and the report from those logs, as for any customer bundle.

Needs Debian's ``chromium`` and ``chromium-driver`` (installed by .ci/run) and
selenium + pillow (the ``test`` extras); skips with the reason otherwise.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from parsers.evtx_reader import ReadSettings
from pipeline.analyze import Analysis, AnalyzeSettings, analyze
from pipeline.ingest import ingest
from pipeline.simulate import SimulateOptions, simulate
from pipeline.simulate.facts import FIX_TITLE
from pipeline.simulate.layouts import layout
from tests.graft import graft
from tests.samples import renamed_bundle

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
Image = pytest.importorskip("PIL.Image", reason="pillow is not installed")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed "
        "(apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--proxy-server=127.0.0.1:9",  # nothing listens there: any fetch fails
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--window-size=1400,1000",
    "--hide-scrollbars",
)
# No dots: computer names are cut at the first dot into host names. The quote must show
# as a quote (plotly does not decode &quot;).
EVIL_VM = "<img src=x title=\"q\" onerror=self['__pwned']=1>"
EVIL_HOST = "<script>self['__pwned']=2</script>"
NAMES = {"APP-VM01": EVIL_VM, "HV-NODE1": EVIL_HOST}
EVIL_ZONE = "<img src=x onerror=self['__pwned']=3> Standard Time"
ZONE = {"Coordinated Universal Time": EVIL_ZONE}  # the guests' zone name in 6013: log text too


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    """simulate --scenario cluster-drain --vms 2 --migrations 2 --rename-guest --seed 1,
    a host that logged KB4338822 installed (WindowsUpdateClient 19), names swapped."""
    root = tmp_path_factory.mktemp("hostile")
    clean = root / "clean"
    options = SimulateOptions("cluster-drain", seed=1, vms=2, migrations=2, rename_guest=True)
    simulate(options, clean)
    update = (FIX_TITLE, uuid.UUID(int=7), 200, uuid.UUID(int=1))
    when = options.start - timedelta(days=3)
    installed = layout("wuc.installed").event(when, "HV-NODE1", update)
    graft(clean, "HV-NODE1", "update", [installed])
    ingest([clean], root / "clean-store", ReadSettings(), 1)
    renamed_bundle(clean, root / "clean-store", root / "bundle", {**NAMES, **ZONE})
    return analyze([root / "bundle"], root / "out", AnalyzeSettings())


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _open(driver, page: Path) -> list[dict]:
    """Load ``page``, wait for plotly if it has a plot; return the console entries."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop what an earlier page logged
    driver.get(page.resolve().as_uri())
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script(
            "return document.readyState === 'complete' && (!document.getElementById('timeline')"
            " || !!document.querySelector('#timeline .main-svg'))"
        )
    )
    return driver.get_log("browser")


def _ink(driver, path: Path) -> float:
    """Share of screenshot pixels that are not near-white background."""
    png = driver.get_screenshot_as_png()
    path.write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("L")
    histogram = image.histogram()
    return 1 - sum(histogram[245:]) / (image.width * image.height)


def _pwned(driver) -> object:
    return driver.execute_script("return window.__pwned === undefined ? null : window.__pwned")


def _fetched(driver) -> list[str]:
    return driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith('file:') && !n.startsWith('data:'))"
    )


def test_timeline_renders_and_matches_the_findings(
    hostile: Analysis, browser, tmp_path: Path
) -> None:
    findings = json.loads((hostile.out / "findings.json").read_text(encoding="utf-8"))
    logs = _open(browser, hostile.out / "timeline.html")
    assert [e for e in logs if e["level"] == "SEVERE"] == []
    assert _fetched(browser) == []
    figure = browser.execute_script(
        "const gd = document.getElementById('timeline');"
        "return {lanes: gd.layout.yaxis.ticktext.length,"
        " traces: gd.data.map(t => ({role: t.meta && t.meta.lmtrace, x: t.x}))};"
    )
    assert figure["lanes"] == len(findings["machines"]) == 5
    spans = sum(
        sum(
            1
            for a, b in zip(t["x"], [*t["x"][1:], None], strict=True)
            if a is not None and b is None
        )
        for t in figure["traces"]
        if t["role"] == "migration"
    )
    assert spans == 2 * len(findings["migrations"]) == 4
    rendered_lanes = browser.execute_script(
        "return document.querySelectorAll('#timeline .yaxislayer-above .ytick').length"
    )
    assert rendered_lanes == figure["lanes"]
    assert _ink(browser, tmp_path / "timeline.png") > 0.03


def test_log_payloads_show_as_text_and_never_run(hostile: Analysis, browser) -> None:
    _open(browser, hostile.out / "timeline.html")
    labels = browser.execute_script(
        "return Array.from(document.querySelectorAll('#timeline .ytick text'))"
        ".map(t => t.textContent)"
    )
    assert any(EVIL_VM in label for label in labels)
    assert any(EVIL_HOST in label for label in labels)
    # Hover every kind of trace: hover labels are where payload text is drawn.
    hovered = browser.execute_script(
        "const gd = document.getElementById('timeline'); const seen = [];"
        "gd.data.forEach((t, i) => { if (!t.hovertext) return;"
        "  const p = t.hovertext.findIndex(h => h);"
        "  Plotly.Fx.hover(gd, [{curveNumber: i, pointNumber: p}]);"
        "  const l = document.querySelector('.hoverlayer'); seen.push(l ? l.textContent : '');"
        "}); return seen.join('\\n');"
    )
    assert EVIL_VM in hovered
    assert browser.execute_script(
        "return document.querySelectorAll('img, script[src]').length"
    ) in (0,)
    overview = browser.execute_script("return document.getElementById('migrations').innerText")
    assert EVIL_VM in overview
    assert _pwned(browser) is None


def test_every_zoomed_page_renders_offline(hostile: Analysis, browser, tmp_path: Path) -> None:
    pages = sorted((hostile.out / "timelines").glob("*.html"))
    migrations = pl.read_parquet(hostile.out / "migrations.parquet")
    assert [p.stem for p in pages] == sorted(migrations["migration_id"].to_list())
    for page in pages:
        logs = _open(browser, page)
        assert [e for e in logs if e["level"] == "SEVERE"] == [], page.name
        assert _fetched(browser) == []
        assert _ink(browser, tmp_path / f"{page.stem}.png") > 0.03
        assert _pwned(browser) is None


def test_report_shows_payloads_as_text(hostile: Analysis, browser, tmp_path: Path) -> None:
    logs = _open(browser, hostile.out / "report.html")
    assert [e for e in logs if e["level"] == "SEVERE"] == []
    text = browser.execute_script("return document.body.innerText")
    assert EVIL_VM in text and EVIL_HOST in text
    assert text.index("Affected") < text.index("Migrations")  # the verdict comes first
    # Machine facts (issue 14): OS and build, zone, names, as text in the machines table.
    machines = browser.execute_script(
        "return document.querySelector('#machines + table').innerText"
    )
    assert "Windows Server 2016 Datacenter, 10.0.14393" in machines
    assert f"{EVIL_ZONE} (standard UTC+00:00, no known IANA zone)" in machines
    assert EVIL_HOST in machines
    assert "KB4338822 installed 2025-03-01" in machines  # the host's update, by its date
    (renamed,) = hostile.result.machines.filter(pl.col("renames").list.len() > 0).iter_rows(
        named=True
    )
    former = renamed["renames"][0]["old"]
    assert f"renamed {former} → {EVIL_VM} (" in machines  # the guest, one row, both names
    assert browser.execute_script("return document.querySelectorAll('img, script').length") == 0
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('#timelines ~ ul a')).map(a => a.href)"
    )
    assert links and all(Path(link.removeprefix("file://")).is_file() for link in links)
    assert _ink(browser, tmp_path / "report.png") > 0.02
    assert _pwned(browser) is None
