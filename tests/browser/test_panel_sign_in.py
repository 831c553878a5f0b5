"""Signing in to the admin panel in a real Chromium: `/` leads to the sign-in page, a wrong
password is refused, the session cookie is HttpOnly + SameSite, a form posted without its
CSRF token is refused, signing out ends the session, Russian comes from Accept-Language or
the picker, and repeated failures are throttled (last: the address stays refused).

OWASP's session and CSRF cheat sheets name the cookie flags and the token rule:
https://cheatsheetseries.owasp.org/cheatsheets/Session_Management_Cheat_Sheet.html
https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser.support import (
    Loop,
    PanelProcess,
    chromium,
    click,
    find,
    go,
    open_panel,
    screenshot,
    sign_in,
    submit_and_wait,
    wait,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelProcess]:
    loop = Loop()
    process = open_panel(loop, tmp_path_factory.mktemp("panel-sign-in"))
    yield process
    loop.run(process.close())
    loop.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = chromium("en")
    yield driver
    driver.quit()


def test_wrong_password_refused_then_signed_in_with_a_strict_httponly_cookie(
    served: PanelProcess, browser: WebDriver
) -> None:
    sign_in(browser, served.public, password="not-the-password")
    assert find(browser, "#login-error").text == "Wrong user name or password."
    assert "/panel/login" in browser.current_url
    screenshot(browser, "login")
    sign_in(browser, served.public)
    assert find(browser, "#attention h2").text == "Needs your attention"
    assert browser.current_url == served.public + "/panel/"
    cookie = browser.get_cookie("thoth_session")
    assert cookie is not None and cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # public_url is http here; https sets Secure (unit test)
    assert browser.execute_script("return document.cookie").find("thoth_session") == -1  # out of scripts' reach


def test_a_form_without_its_csrf_token_is_refused(served: PanelProcess, browser: WebDriver) -> None:
    go(browser, served.public + "/panel/wabas/new", "#waba-form")
    find(browser, "#f-name").send_keys("Forged")
    find(browser, "#f-access_token").send_keys("EAAG" + "x" * 30)
    browser.execute_script("document.querySelector('#waba-form input[name=_csrf]').remove()")
    submit_and_wait(browser, "#save", "#refused")
    assert find(browser, "#refused").text == "Request refused"
    go(browser, served.public + "/panel/wabas", "h1")
    assert "Forged" not in browser.find_element(By.TAG_NAME, "main").text  # nothing was stored


def test_the_language_picker_and_accept_language_give_russian(served: PanelProcess, browser: WebDriver) -> None:
    go(browser, served.public + "/panel/", "#attention")
    click(browser, "a[lang=ru]")
    wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, "#attention h2").text == "Требует вашего внимания")
    assert browser.find_element(By.CSS_SELECTOR, "html").get_attribute("lang") == "ru"
    nav = browser.find_element(By.CSS_SELECTOR, ".main-nav").text
    assert "Телефоны" in nav and "Звонки" in nav
    screenshot(browser, "dashboard-ru")
    click(browser, "a[lang=en]")
    wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, "#attention h2").text == "Needs your attention")

    russian = chromium("ru")  # no pick yet: the browser's Accept-Language decides
    try:
        go(russian, served.public + "/", "#sign-in")
        assert find(russian, "h1").text == "Вход"
        assert find(russian, "#sign-in").text == "Войти"
    finally:
        russian.quit()


def test_sign_out_ends_the_session(served: PanelProcess, browser: WebDriver) -> None:
    go(browser, served.public + "/panel/", "#logout")
    token = browser.get_cookie("thoth_session")
    assert token is not None
    submit_and_wait(browser, "#logout", "#sign-in")
    browser.add_cookie({"name": "thoth_session", "value": token["value"], "path": "/panel"})  # the old cookie back
    go(browser, served.public + "/panel/phones", "#sign-in")  # it no longer opens anything
    assert "/panel/login?next=/panel/phones" in browser.current_url


def test_repeated_failures_are_throttled_even_for_the_right_password(served: PanelProcess, browser: WebDriver) -> None:
    """Runs last: the address stays refused for the throttle's window (5 failures / 300 s)."""
    for _ in range(5):
        sign_in(browser, served.public, password="guess")
        assert find(browser, "#login-error").text == "Wrong user name or password."
    sign_in(browser, served.public)
    assert find(browser, "#login-error").text.startswith("Too many failed sign-ins. Try again in ")
    assert "/panel/login" in browser.current_url
