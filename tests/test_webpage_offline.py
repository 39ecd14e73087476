"""API documentation without internet, and the web page's note on what the probability means."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_runs import isic_sample
from test_webpage import page, server  # noqa: F401 - shared browser and server fixtures

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_swagger_ui_renders_operations_offline(server: str, page) -> None:  # noqa: F811
    outside: list[str] = []

    def only_local(route) -> None:  # every request off this server fails, as offline
        if route.request.url.startswith(server):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    try:
        page.goto(server + "/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        text = page.locator("#swagger-ui").inner_text()
        assert "/v1/predict" in text and "/v1/model" in text
        assert outside == []
        page.goto(server + "/redoc")
        # Locator waits, not wait_for_function: the page's CSP forbids the eval that a
        # string predicate needs once Playwright polls it.
        page.locator("body", has_text="/v1/predict").wait_for(timeout=30_000)
        # ReDoc's bundle links its "powered by" logo from its site: an image, nothing more.
        assert [u for u in outside if not u.endswith(".svg")] == []
    finally:
        page.unroute("**/*")


def test_probability_note_says_it_is_not_a_risk(server: str, page, isic_dev: Path) -> None:  # noqa: F811
    page.goto(server + "/")
    page.locator("#model-info", has_text="test-").wait_for()
    page.set_input_files("#file-input", str(isic_sample(isic_dev, 1)[0][0]))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    note = page.locator("#probability-note").inner_text()
    assert "training data" in note and "not this patient's risk" in note
