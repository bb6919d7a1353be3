"""The HTML comparison report, rendered in a real browser (headless Chromium through chromedriver):
plots and tables are there, the page logs no errors and loads nothing from the network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from convscope.analyses.deployment import compare
from convscope.reports.compare_report import write_comparison_html
from test_deployment import fake

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camera" / "plan.yaml"


def _driver():  # type: ignore[no-untyped-def]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver must be installed in CI (make test installs them)")
        pytest.skip("chromium/chromedriver not installed (make test installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,1600"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("report") / "report.html"
    write_comparison_html(compare(str(EXAMPLE), predictor=fake), str(out))
    return out


def test_report_renders_in_chromium_without_errors(report: Path) -> None:
    from selenium.webdriver.common.by import By

    drv = _driver()
    try:
        drv.get(report.as_uri())
        assert drv.title == "convscope compare — driveway-camera"
        plots = {e.get_attribute("data-plot") for e in drv.find_elements(By.CSS_SELECTOR, "svg[data-plot]")}
        assert {"candidate-latency", "rf-growth"} <= plots
        bars = drv.find_elements(By.CSS_SELECTOR, 'svg[data-plot="candidate-latency"] rect.bar')
        assert len(bars) == 5 and all(float(b.get_attribute("width")) > 0 for b in bars)
        rows = drv.find_elements(By.CSS_SELECTOR, "table.candidates tbody tr")
        assert len(rows) == 5
        best = drv.find_element(By.CSS_SELECTOR, "table.candidates tr.best td").text
        assert best == drv.find_element(By.CSS_SELECTOR, ".verdict b").text.removeprefix("Verdict: ")
        assert len(drv.find_elements(By.CSS_SELECTOR, "section.analysis")) >= 6
        size = drv.find_element(By.CSS_SELECTOR, 'svg[data-plot="candidate-latency"]').size
        assert size["width"] > 300 and size["height"] > 100  # laid out, not collapsed
        resources = drv.execute_script("return performance.getEntriesByType('resource').length")
        assert resources == 0  # self-contained: nothing fetched
        errors = [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == []
    finally:
        drv.quit()
