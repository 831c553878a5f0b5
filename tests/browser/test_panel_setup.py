"""Setting up WhatsApp calls in the admin panel, in a real Chromium, the way our users' guide
walks through it: add a WABA and copy its callback URL into Meta; add its phone and turn
Calling + SIP on at Meta (the Meta simulator), read Meta's error in the Error field when Meta
refuses; change a trunk setting, see the diff against the disk, apply it to a real Asterisk 22
and read the verified result. The tests run in order on one service and one browser (a walk
through the panel, each step building on the last).

Meta's webhook set-up: https://developers.facebook.com/docs/graph-api/webhooks/getting-started
Calling + SIP settings: https://developers.facebook.com/docs/whatsapp/cloud-api/calling/sip
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec

from tests.browser.support import (
    Loop,
    PanelProcess,
    chromium,
    click,
    error_beside,
    fill,
    find,
    go,
    open_panel,
    press_and_wait,
    screenshot,
    sign_in,
    submit_and_wait,
    wait,
)
from tests.harness import asterisk as ah
from tests.harness.asterisk import AsteriskInstance
from tests.integration.conftest import tls_files
from tests.support.bitrix import USERS, free_port, wait_until
from tests.support.messaging import SEED
from thoth_pbx.sandbox import meta as meta_sim

SIP_HOST = "pbx.example.com"
ACTIVE = [u for u in USERS if u.active]  # the portal's employees we keep


@pytest.fixture(scope="module")
def asterisk() -> Iterator[AsteriskInstance]:
    inst = ah.acquire(f"panel-{os.getpid()}")
    yield inst
    ah.release(inst)
    if inst.managed:
        ah.sandbox.remove(inst.name)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, asterisk: AsteriskInstance) -> Iterator[tuple[Loop, PanelProcess]]:
    tmp = tmp_path_factory.mktemp("panel-setup")
    tls = tls_files(asterisk)
    port = free_port()
    # what an admin keeps in the config file; the panel shows these as "config file"
    trunk = {
        "transport_name": f"panel-{port}",
        "bind_address": "127.0.0.1",
        "bind_port": port,
        "cert_file": tls.cert,
        "priv_key_file": tls.key,
        "ca_list_file": tls.ca,
        "identify_match": ["127.0.0.2"],
        "contact": "sip:127.0.0.2:5061",
    }
    config = tmp / "thoth.toml"
    config.write_text("[trunk]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in trunk.items()))
    loop = Loop()
    process = open_panel(
        loop,
        tmp,
        {
            "THOTH_CONFIG": str(config),
            "THOTH_AMI_URL": f"tcp://{asterisk.ami_user}:{asterisk.ami_secret}@{asterisk.host}:{asterisk.ami_port}",
            "THOTH_ASTERISK_CONFIG_DIR": str(asterisk.config_dir),
            "THOTH_ARI_APP": f"panel-{port}",
        },
    )
    yield loop, process
    loop.run(process.close())
    loop.close()


@pytest.fixture(scope="module")
def browser(served: tuple[Loop, PanelProcess]) -> Iterator[WebDriver]:
    driver = chromium("en")
    sign_in(driver, served[1].public)
    find(driver, "#attention")
    yield driver
    driver.quit()


def text(driver: WebDriver, css: str) -> str:
    return find(driver, css).text


def test_add_a_waba_see_the_error_beside_the_field_then_copy_its_callback_url(
    served: tuple[Loop, PanelProcess], browser: WebDriver
) -> None:
    _, process = served
    go(browser, process.public + "/panel/wabas", "#add-waba")
    submit_and_wait(browser, "#add-waba", "#waba-form")
    fill(browser, {"name": "Main", "waba_id": SEED.waba_id, "app_id": SEED.app_id, "access_token": "EAA-too-short"})
    submit_and_wait(browser, "#save", "#waba-form")
    # the API's own rule and message, beside the field it names; what was typed is kept
    assert error_beside(browser, "access_token") == "must be at least 16 characters"
    assert browser.find_elements(By.CSS_SELECTOR, "#field-name .field-error") == []
    assert find(browser, "#f-name").get_attribute("value") == "Main"
    screenshot(browser, "waba-form-error")

    fill(browser, {"access_token": SEED.token, "app_secret": SEED.app_secret})
    submit_and_wait(browser, "#save", "#callback-url")
    callback = text(browser, "#callback-url")
    verify_token = text(browser, "#verify-token")
    assert callback.startswith(process.public + "/api/waba/?api-key=") and len(verify_token) >= 24
    # secrets are never put back into the page in clear: masked, with an empty "replace" field
    assert SEED.token not in browser.page_source and SEED.app_secret not in browser.page_source
    assert find(browser, "#f-access_token").get_attribute("value") == ""
    assert "EAAS…000" in text(browser, "#field-access_token")
    screenshot(browser, "waba")

    browser.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": process.public, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    click(browser, "button[data-copy=callback-url]")
    wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, "button[data-copy=callback-url]").text == "Copied")
    copied = browser.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('!' + e))"
    )
    assert copied == callback

    # the copied URL is the one Meta verifies: its handshake answers with the challenge
    query = urllib.parse.urlencode({"hub.mode": "subscribe", "hub.verify_token": verify_token, "hub.challenge": "4242"})
    with urllib.request.urlopen(f"{callback}&{query}", timeout=10) as resp:
        assert resp.read() == b"4242"


def test_check_the_token_at_meta_and_rotate_the_verify_token_after_a_confirmation(
    served: tuple[Loop, PanelProcess], browser: WebDriver
) -> None:
    _, process = served
    go(browser, process.public + "/panel/wabas/1", "#check-token")
    assert text(browser, "#token .badge") == "not checked yet"
    submit_and_wait(browser, "#check-token", "#token")
    assert text(browser, ".flash.ok") == "The access token is valid."
    assert text(browser, "#token .badge") == "valid"  # debug_token at the Meta simulator
    old = text(browser, "#verify-token")
    submit_and_wait(browser, "#rotate-verify_token", "#verify-token", confirm=True)
    assert text(browser, "#verify-token") not in ("", old)


def test_add_a_phone_enable_calling_and_sip_then_read_metas_error(
    served: tuple[Loop, PanelProcess], browser: WebDriver
) -> None:
    loop, process = served
    go(browser, process.public + "/panel/phones/new", "#phone-form")
    fill(browser, {"number": "12", "phone_number_id": SEED.phone_number_id, "sip_hostname": SIP_HOST})
    fill(browser, {"waba_account_id": "1", "app_instance_id": str(process.instance_id)})
    submit_and_wait(browser, "#save", "#phone-form")
    assert error_beside(browser, "number") == "'12' is not an E.164 number (+ country code and 7 to 15 digits)"

    fill(browser, {"number": SEED.display_phone_number})
    submit_and_wait(browser, "#save", "#calling")
    assert text(browser, "h1") == SEED.display_phone_number
    assert text(browser, "#no-error") == "None."

    submit_and_wait(browser, "#calling-enable", "#calling")
    switches = text(browser, "#calling .switches")
    assert "Calling Enabled" in switches and "SIP Enabled" in switches and f"{SIP_HOST}:5061" in switches
    assert text(browser, ".flash.ok") == "Done: Meta's settings were read back and match."
    password = process.meta.password(SEED.phone_number_id, SEED.app_id)
    assert password and password not in browser.page_source  # Meta's SIP password: masked
    assert "The trunk needs an apply for this phone." in text(browser, "#needs-apply")
    screenshot(browser, "phone-calling-enabled")

    async def refuse() -> None:  # on the simulators' loop, like every request they answer
        process.meta.fail_next(meta_sim.FailRule(code=138018, details="sandbox: prerequisites", method="POST"))

    loop.run(refuse())
    submit_and_wait(browser, "#calling-enable", "#error-field")
    assert text(browser, ".flash.error") == "Meta refused the change: see the Error field."
    assert text(browser, "#meta-code") == "138018"
    assert text(browser, "#meta-message")  # Meta's own words
    assert text(browser, "#meta-hint").startswith("Technical prerequisites are not met")
    screenshot(browser, "phone-meta-error")

    go(browser, process.public + "/panel/phones", "#phone-list")
    row = text(browser, "#phone-list tbody tr")
    assert "138018" in row and "needs apply" in row


def test_change_a_trunk_setting_see_the_diff_apply_to_asterisk_and_read_the_verified_result(
    served: tuple[Loop, PanelProcess], browser: WebDriver, asterisk: AsteriskInstance
) -> None:
    _, process = served
    go(browser, process.public + "/panel/trunk", "#trunk-form")
    assert text(browser, "#field-bind_port .source") == "config file"
    assert text(browser, "#field-language .source") == "default"
    # the first apply writes the files (the phone's SIP credentials included) and verifies them
    submit_and_wait(browser, "#preview", "#apply")
    assert "+++ b/pjsip_thoth.conf" in text(browser, "#diff")
    submit_and_wait(browser, "#apply", "#apply-result", confirm=True)
    assert find(browser, "#apply-result .badge").text == "applied", text(browser, "#apply-result")
    assert text(browser, "#verified") == "Asterisk loaded the files and every option was read back and verified."

    go(browser, process.public + "/panel/trunk", "#trunk-form")
    fill(browser, {"language": "ru"})
    screenshot(browser, "trunk")
    submit_and_wait(browser, "#save", "#diff")
    diff = text(browser, "#diff")
    assert "-language=en" in diff and "+language=ru" in diff
    changed = {line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")}
    assert changed == {"-language=en", "+language=ru"}  # nothing else moves
    screenshot(browser, "trunk-preview")
    submit_and_wait(browser, "#apply", "#apply-result", confirm=True)
    assert find(browser, "#apply-result .badge").text == "applied", text(browser, "#apply-result")
    assert "verified" in text(browser, "#verified")
    screenshot(browser, "trunk-applied")

    go(browser, process.public + "/panel/trunk", "#trunk-form")
    assert text(browser, "#field-language .source") == "admin"
    status = text(browser, "#trunk-status")
    assert "needs apply" not in status and "drift" not in status
    go(browser, process.public + "/panel/trunk/revisions", "main")
    assert len(browser.find_elements(By.CSS_SELECTOR, "details.revision")) == 2
    go(browser, process.public + "/panel/phones", "#phone-list")
    assert "needs apply" not in text(browser, "#phone-list tbody tr")

    # a value our rules accept but Asterisk refuses: rolled back, and the page says why
    go(browser, process.public + "/panel/trunk", "#trunk-form")
    fill(browser, {"codecs": "opus, nosuchcodec"})
    submit_and_wait(browser, "#save", "#diff")
    submit_and_wait(browser, "#apply", "#apply-result", confirm=True)
    assert find(browser, "#apply-result .badge").text == "rolled back"
    assert text(browser, "#rollback") == "Not applied: the previous files were put back. Rollback verified."
    assert any(
        "endpoint wa.meta.vc" in m.text and "allow" in m.text
        for m in browser.find_elements(By.CSS_SELECTOR, ".mismatch")
    )
    screenshot(browser, "trunk-rolled-back")
    go(browser, process.public + "/panel/trunk", "#trunk-form")
    fill(browser, {"codecs": "opus"})
    submit_and_wait(browser, "#save", "#no-diff")  # the files on disk are still the verified ones

    # someone edits our file by hand: the trunk page (and the dashboard) say so
    pjsip = asterisk.config_dir / "pjsip_thoth.conf"
    pjsip.write_text(pjsip.read_text() + "; edited by hand\n")
    go(browser, process.public + "/panel/trunk", "#trunk-status")
    assert "changed by someone else (drift)" in text(browser, "#trunk-status")


def test_a_customer_message_shows_in_the_chats_of_its_line(
    served: tuple[Loop, PanelProcess], browser: WebDriver
) -> None:
    loop, process = served
    go(browser, process.public + "/panel/wabas/1", "#callback-url")
    process.webhook = text(browser, "#callback-url").removeprefix(process.public)
    loop.run(process.customers_write([("15551234567", "Hello from WhatsApp", "wamid.panel-1")]))

    async def stored() -> bool:
        return bool((await process._admin("GET", "/api/admin/phones/1/chats"))["chats"])

    loop.run(wait_until(stored, what="the message stored on the line"))
    go(browser, process.public + "/panel/chats", "main h1")
    assert "THOTH_15550100001" in text(browser, "main table")
    go(browser, process.public + "/panel/chats/1", "main table")
    submit_and_wait(browser, "a[href='/panel/chats/1/15551234567']", ".chat")
    message = text(browser, ".chat .message.in")
    assert "Hello from WhatsApp" in message and "customer" in message
    screenshot(browser, "chat")


def test_a_job_waiting_on_a_bitrix24_outage_is_shown_and_retried_from_the_outbox(
    served: tuple[Loop, PanelProcess], browser: WebDriver
) -> None:
    loop, process = served

    async def outage(on: bool) -> None:
        process.sim.outage = on

    loop.run(outage(True))
    loop.run(process.customers_write([("15551234567", "Sent while Bitrix24 is down", "wamid.panel-2")]))

    async def backing_off() -> dict[str, Any] | None:
        jobs = (await process._admin("GET", "/api/admin/outbox?status=pending"))["items"]
        return next((j for j in jobs if j["attempts"] >= 1 and j["last_error"]), None)

    job = loop.run(wait_until(backing_off, what="a job backing off"))
    go(browser, process.public + "/panel/outbox", "#job-list")
    row = browser.find_element(By.XPATH, f"//table[@id='job-list']//tr[td[1][normalize-space()='{job['id']}']]")
    assert job["kind"] in row.text and "pending" in row.text
    screenshot(browser, "outbox")

    loop.run(outage(False))
    press_and_wait(browser, row.find_element(By.CSS_SELECTOR, "button"), ".flash.ok")
    assert text(browser, ".flash.ok") == f"Job {job['id']} runs again now."

    async def delivered() -> bool:
        return any(m["message"]["text"] == "Sent while Bitrix24 is down" for m in process.in_bitrix())

    loop.run(wait_until(delivered, what="the message in Bitrix24 after the retry"))


def test_dashboard_and_the_other_pages(served: tuple[Loop, PanelProcess], browser: WebDriver) -> None:
    loop, process = served
    go(browser, process.public + "/panel/", "#health")
    health = text(browser, "#health")
    assert "Database ok" in health and "AMI connected" in health
    assert "active" in text(browser, "#portals")
    attention = text(browser, "#attention")
    assert f"Phone {SEED.display_phone_number} has an error from Meta." in attention
    link = browser.find_element(By.LINK_TEXT, f"Phone {SEED.display_phone_number} has an error from Meta.")
    assert link.get_attribute("href").endswith("/panel/phones/1")
    drift = browser.find_element(By.LINK_TEXT, "Someone changed our files on disk since the last apply (drift).")
    assert drift.get_attribute("href").endswith("/panel/trunk")
    screenshot(browser, "dashboard")
    go(browser, process.public + "/panel/portals", "#install-url")
    assert text(browser, "#install-url") == process.public + "/api/bitrix/install"
    screenshot(browser, "portals")
    users = f"/api/admin/bitrix/instances/{process.instance_id}/users"

    async def loaded() -> bool:
        return len((await process._admin("GET", users))["items"]) == len(ACTIVE)

    loop.run(wait_until(loaded, what="the portal's users loaded"))
    go(browser, f"{process.public}/panel/portals/{process.instance_id}", "main h1")
    assert "+15550100001" in text(browser, "main")  # its phone
    rows = [r.text.split() for r in browser.find_elements(By.CSS_SELECTOR, "main table.list tbody tr")]
    assert rows == [[str(u.id), u.name, u.last_name, u.extension or "–", "yes"] for u in ACTIVE]
    screenshot(browser, "portal")
    for path, ready in (("/panel/calls", "#call-filters"), ("/panel/outbox", ".tabs"), ("/panel/chats", "main h1")):
        go(browser, process.public + path, ready)
    go(browser, process.public + "/panel/calls?since=yesterday", "#call-filters")
    assert error_beside(browser, "since") == "must be a date like 2026-12-01"
    screenshot(browser, "calls")


@pytest.mark.parametrize("width", [1024, 1280])
def test_every_page_fits_a_laptop_screen(served: tuple[Loop, PanelProcess], browser: WebDriver, width: int) -> None:
    """No page scrolls sideways at laptop widths (long values wrap, tables fit)."""
    _, process = served
    browser.set_window_size(width, 800)
    try:
        for path in (
            "/panel/", "/panel/wabas", "/panel/wabas/1", "/panel/phones", "/panel/phones/1", "/panel/trunk",
            "/panel/trunk/preview", "/panel/trunk/revisions", "/panel/calls", "/panel/chats", "/panel/chats/1",
            "/panel/outbox", "/panel/portals", f"/panel/portals/{process.instance_id}",
        ):  # fmt: skip
            go(browser, process.public + path, "footer")
            overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow}px wider than a {width}px window"
    finally:
        browser.set_window_size(1366, 860)


def test_disabling_calling_asks_first_then_meta_turns_it_off(
    served: tuple[Loop, PanelProcess], browser: WebDriver
) -> None:
    """Last: it changes the phone the other tests look at."""
    _, process = served
    go(browser, process.public + "/panel/phones/1", "#calling-disable")
    click(browser, "#calling-disable")
    alert = wait(browser).until(ec.alert_is_present())
    assert alert.text.startswith("Disable Calling and SIP at Meta?")
    alert.dismiss()  # "no": nothing is sent
    assert "Calling Enabled" in text(browser, "#calling .switches")
    submit_and_wait(browser, "#calling-disable", "#calling", confirm=True)
    switches = text(browser, "#calling .switches")
    assert "Calling Disabled" in switches and "SIP Disabled" in switches
    assert text(browser, ".flash.ok") == "Done: Meta's settings were read back and match."
    at_meta = process.meta.phones[SEED.phone_number_id]
    assert at_meta.calling["status"] == "DISABLED" and at_meta.sip_status == "DISABLED"
