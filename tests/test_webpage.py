"""The web page end to end: headless Chromium (Playwright) against uvicorn on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference_runs import isic_sample, live_server, responsive_run_dir
from skinlesion import INTENDED_USE
from skinlesion.service.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_server(create_app(responsive_run_dir(tmp_path_factory), max_upload_mb=5)) as url:
        yield url


@pytest.fixture(scope="module")
def page(chromium: str) -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 1000})
            yield context.new_page()
        finally:
            browser.close()


def test_upload_shows_probability_decision_heatmap_and_warning(
        server: str, page, isic_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    photo = isic_sample(isic_dev, 2)[0][0]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/")
    # The intended-use warning is on the page before anything is uploaded.
    assert INTENDED_USE[:60] in page.locator("#intended-use").inner_text()
    # Locator waits, not wait_for_function: the page's CSP forbids the eval that a string
    # predicate needs once Playwright polls it (it failed whenever the model card was slow).
    page.locator("#model-info", has_text="test-").wait_for()

    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    probability = page.locator("#probability").inner_text()
    assert probability.endswith("%")
    assert 0.0 <= float(probability.lstrip("<> ").rstrip(" %")) <= 100.0
    assert page.locator("#decision").inner_text().lower() in ("benign", "malignant", "inconclusive")
    heatmap = page.locator("#heatmap[src^='data:image/png']")
    heatmap.wait_for(state="attached", timeout=60_000)
    deadline = time.monotonic() + 30
    while not heatmap.evaluate("i => i.complete && i.naturalWidth > 0"):
        assert time.monotonic() < deadline, "the heatmap image never finished loading"
        time.sleep(0.1)
    assert page.locator("#heatmap-figure").is_visible()
    assert page.locator("#preview").evaluate("img => img.naturalWidth") > 0
    assert INTENDED_USE[:60] in page.locator("#result-warning").inner_text()
    assert page.locator("#error").is_hidden() and errors == []
    shots = tmp_path_factory.mktemp("screenshots")
    page.screenshot(path=str(shots / "webpage.png"), full_page=True)
    assert (shots / "webpage.png").stat().st_size > 10_000


def test_a_non_image_shows_the_servers_error(server: str, page, tmp_path: Path) -> None:
    fake = tmp_path / "notes.jpg"
    fake.write_text("not a photo")
    page.goto(server + "/")
    page.set_input_files("#file-input", str(fake))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "not an image" in page.locator("#error").inner_text()
    assert page.locator("#result").is_hidden()
