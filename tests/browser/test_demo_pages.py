"""`make demo` in a real browser: after one scene of scripts/demo.py, the simulators' pages and
the admin panel show it. Screenshots for docs/demo.md go to docs/img/demo/ (next to the folder
THOTH_SCREENSHOTS names, so `make screenshots` retakes them with the panel's)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import support
from tests.browser.support import chromium, find, go, sign_in
from tests.demo.run import DemoRun, start_demo


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoRun]:
    run = start_demo(tmp_path / "demo")
    try:
        yield run
        code, rest = run.stop()
        assert code == 0, rest
    finally:
        run.kill()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    driver = chromium()
    yield driver
    driver.quit()


def screenshot(driver: WebDriver, name: str) -> None:
    folder = os.environ.get("THOTH_SCREENSHOTS")
    if not folder:
        return
    os.environ["THOTH_SCREENSHOTS"] = str(Path(folder).parent / "demo")
    try:
        support.screenshot(driver, name)
    finally:
        os.environ["THOTH_SCREENSHOTS"] = folder


def text(driver: WebDriver, css: str) -> str:
    return find(driver, css).text


def test_the_scene_shows_in_the_simulators_pages_and_the_panel(demo: DemoRun, browser: WebDriver) -> None:
    go(browser, demo.bitrix + "/_sandbox/page", "h1")
    page = text(browser, "body")
    assert "Is the green chair still in stock?" in page and "Not sent to WhatsApp" in page
    assert "Yes, [b]two[/b] left" in page  # the operator's answer, BB-code as the chat keeps it
    call_log = browser.find_elements(By.CSS_SELECTOR, "table")[-1].text
    assert "+15551234567" in call_log and ".wav" in call_log and "200" in call_log
    screenshot(browser, "bitrix-page")

    go(browser, demo.meta + "/_sandbox/page", "h1")
    page = text(browser, "body")
    assert "Yes, *two* left" in page and "Calling: ENABLED" in page
    screenshot(browser, "meta-page")

    sign_in(browser, demo.panel, demo.password)
    find(browser, "main")
    screenshot(browser, "panel-dashboard")
    go(browser, demo.panel + "/panel/calls", "#call-list")
    calls = text(browser, "#call-list")
    assert "+15551234567" in calls
    screenshot(browser, "panel-calls")
    go(browser, demo.panel + "/panel/trunk", "#trunk-status")
    status = text(browser, "#trunk-status")
    assert "applied" in status and "needs apply" not in status and "drift" not in status, status
    screenshot(browser, "panel-trunk")
    go(browser, demo.panel + "/panel/chats/1/15557654321", ".chat")
    held = text(browser, ".chat")
    assert "failed" in held and "outside the 24-hour window" in held, held
    screenshot(browser, "panel-chat-held")
