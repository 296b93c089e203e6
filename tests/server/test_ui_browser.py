"""The Prefect UI, in headless Chromium, shows what a finished run of the served batch left behind.

The UI is a single-page app that renders after its API calls return: every check waits for the
text it needs (explicit waits), never for a fixed time. Screenshots go to the test's tmp dir and,
when INVERSA_SCREENSHOTS names a directory, there too (CI can keep them as artifacts).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from inversa.data.store import ResultStore
from tests.server.conftest import RECIPE

pytestmark = pytest.mark.server

CHROMIUM = os.environ.get("INVERSA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("INVERSA_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT_S = 60


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.skip(f"headless browser check needs {' and '.join(missing)} "
                    "(Debian: apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-dev-shm-usage", "--window-size=1400,1600"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _text(element) -> str:
    # textContent, not .text: cards below the fold of a virtual scroller have no rendered text yet
    return " ".join((element.get_attribute("textContent") or "").split())


def _wait_for_text(driver, locator, *needles: str, scroll: bool = False):
    """The element at `locator` once it contains every needle; the page text on timeout."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d):
        found = d.find_elements(*locator)
        if not found:
            return False
        if scroll:  # the artifact lists are virtual scrollers: cards render once scrolled into view
            d.execute_script("arguments[0].scrollIntoView({block: 'end'});", found[0])
        return found[0] if all(n in _text(found[0]) for n in needles) else False

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.25).until(ready)
    except TimeoutException:
        body = _text(driver.find_element("tag name", "body"))[:3000]
        pytest.fail(f"{driver.current_url}: no {needles} in {locator} after {WAIT_S} s; page text: {body}")


def _screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    assert path.stat().st_size > 10_000, f"{path} is suspiciously small for a rendered page"
    keep = os.environ.get("INVERSA_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    return path


def test_flow_run_page_shows_progress_and_metrics_artifacts(browser, finished_run, tmp_path):
    from selenium.webdriver.common.by import By

    served = finished_run.deployment
    browser.get(f"{served.info.url}/runs/flow-run/{finished_run.flow_run_id}")
    _wait_for_text(browser, (By.TAG_NAME, "body"), "Completed", "Artifacts")
    # the tab only opens by click: the UI rewrites an unknown ?tab= to the logs
    _wait_for_text(browser, (By.CSS_SELECTOR, "li#artifacts"), "Artifacts").click()
    progress_key, metrics_key = f"batch-{RECIPE}-progress", f"{RECIPE}-scan-a-metrics"
    panel = _wait_for_text(browser, (By.CSS_SELECTOR, "#artifacts-content"), progress_key, metrics_key, scroll=True)
    text = _text(panel)
    assert "progress" in text and "table" in text  # the cards' artifact types
    assert "1/1 regions" in text  # the progress card's description once every region is written
    _screenshot(browser, tmp_path, "flow-run-artifacts.png")

    # the metrics card opens the table itself: its values are the store's summary
    link = panel.find_element(By.XPATH, f".//a[.//*[normalize-space(text())='{metrics_key}']]")
    browser.get(link.get_attribute("href"))
    store = ResultStore.open(served.output / "scan-a.zarr")
    psnr = f"{store.summary['psnr']:.4g}"
    page = _wait_for_text(browser, (By.TAG_NAME, "body"), metrics_key, "psnr", psnr, "regions_done")
    assert "slices" in _text(page)
    _screenshot(browser, tmp_path, "metrics-artifact.png")
