"""The admin panel in a real browser: Debian's Chromium (headless) driven by Selenium through
/usr/bin/chromedriver, against `thoth-pbx serve` as its own process between the Meta and
Bitrix24 simulators (tests/support/bridge_process.py).

Selenium blocks, and the simulators answer the service from this test process, so they run on
an event loop of their own in a background thread (`Loop`); tests hand it coroutines.
Screenshots for docs/panel.md are written when THOTH_SCREENSHOTS names a folder
(`make screenshots`).
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.bitrix import USERS
from tests.support.bridge_process import BridgeProcess

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "correct-horse-battery"  # serve_environ's admin password
WIDTH, HEIGHT = 1366, 860  # a laptop screen
T = TypeVar("T")


class Loop:
    """An asyncio loop in a thread: the simulators live there while Selenium blocks this one."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="browser-test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 90) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class PanelProcess(BridgeProcess):
    """`serve` between the simulators, a portal installed, no number yet (the admin adds it in
    the panel); `extra` adds settings (Asterisk, a config file)."""

    extra: dict[str, str] = field(default_factory=dict)

    async def start_service(self) -> None:
        self.environ.update(self.extra)
        await super().start_service()

    async def _link(self) -> None:
        assert self.portal is not None
        status, body = await self.sim.install(self.portal, self.public + "/api/bitrix/install")
        assert status == 200, body
        self.instance_id = int(body["instance_id"])


def open_panel(loop: Loop, tmp: Path, extra: dict[str, str] | None = None) -> PanelProcess:
    process = PanelProcess(tmp, f"sqlite:///{tmp / 'thoth.sqlite3'}", extra=extra or {})
    loop.run(process.open())
    assert process.portal is not None and len(USERS) > 0
    return process


def chromium(lang: str = "en") -> WebDriver:
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--lang={lang}",
    ):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"intl.accept_languages": lang})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    return driver


def wait(driver: WebDriver, timeout: float = 20) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, timeout)


def find(driver: WebDriver, css: str, timeout: float = 20) -> WebElement:
    return wait(driver, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def click(driver: WebDriver, css: str) -> None:
    wait(driver).until(ec.element_to_be_clickable((By.CSS_SELECTOR, css))).click()


def fill(driver: WebDriver, values: dict[str, str]) -> None:
    """Type into the fields named by `values` (by their `name`), replacing what is there."""
    for name, value in values.items():
        element = driver.find_element(By.NAME, name)
        if element.tag_name == "select":
            from selenium.webdriver.support.ui import Select

            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)


def go(driver: WebDriver, url: str, ready: str = "main") -> None:
    driver.get(url)
    find(driver, ready)


def sign_in(driver: WebDriver, base: str, password: str = PASSWORD) -> None:
    go(driver, base + "/", "#sign-in")  # `/` goes to the panel, which asks to sign in
    fill(driver, {"user": "admin", "password": password})
    click(driver, "#sign-in")


def submit_and_wait(driver: WebDriver, button_css: str, ready: str = "main", *, confirm: bool = False) -> None:
    """Click a submit button (saying yes when the page asks first) and wait for the next page:
    the old page's window carries a mark the new one has not."""
    press_and_wait(
        driver, wait(driver).until(ec.element_to_be_clickable((By.CSS_SELECTOR, button_css))), ready, confirm=confirm
    )


def press_and_wait(driver: WebDriver, element: WebElement, ready: str = "main", *, confirm: bool = False) -> None:
    driver.execute_script("window.thothOldPage = true")
    element.click()
    if confirm:
        accept_confirm(driver)
    wait(driver).until(_new_page)
    find(driver, ready)


def _new_page(driver: WebDriver) -> bool:
    try:
        return bool(driver.execute_script("return window.thothOldPage !== true && document.readyState === 'complete'"))
    except WebDriverException:  # the page is being replaced under the script
        return False


def accept_confirm(driver: WebDriver) -> str:
    """The page asked "are you sure?" (destructive actions): say yes; returns the question."""
    alert = wait(driver).until(ec.alert_is_present())
    text = alert.text
    alert.accept()
    return text


def error_beside(driver: WebDriver, field: str) -> str:
    """The error shown inside the field's own block (its label, input and message)."""
    block = find(driver, f"#field-{field}")
    return block.find_element(By.CSS_SELECTOR, ".field-error").text


def screenshot(driver: WebDriver, name: str) -> None:
    """A full-page PNG for docs/panel.md, when THOTH_SCREENSHOTS names the folder."""
    folder = os.environ.get("THOTH_SCREENSHOTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    (Path(folder) / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))
