"""Template commands, the 24-hour window and SMS statuses as pure rules.

Template object and parameter shapes: developers.facebook.com/docs/whatsapp/cloud-api/reference/messages#template-object;
the window: developers.facebook.com/docs/whatsapp/cloud-api/guides/send-messages#customer-service-windows;
SMS statuses: apidocs.bitrix24.com/api-reference/messageservice/messageservice-message-status-update.html."""

from __future__ import annotations

import datetime as dt

import pytest

from thoth_pbx.features.messaging import sms, template_command, window
from thoth_pbx.features.messaging.template_command import Command, CommandError, Refusal, Template, check, parse

ORDER = Template(
    "order_update", "en_US", "APPROVED", [{"type": "BODY", "text": "Hi {{1}}, your order {{2}} has shipped."}]
)
ORDER_RU = Template("order_update", "ru", "APPROVED", [{"type": "BODY", "text": "Здравствуйте, {{1}}! Заказ {{2}}."}])
HELLO = Template(
    "hello_world",
    "en_US",
    "APPROVED",
    [
        {"type": "HEADER", "format": "TEXT", "text": "Hello World"},
        {"type": "BODY", "text": "Welcome!"},
        {"type": "FOOTER", "text": "sample"},
    ],
)
INVOICE = Template(
    "invoice",
    "en_US",
    "APPROVED",
    [{"type": "HEADER", "format": "DOCUMENT"}, {"type": "BODY", "text": "Your invoice {{1}} is attached."}],
)
TRACK = Template(
    "track_parcel",
    "en_US",
    "APPROVED",
    [
        {"type": "BODY", "text": "Your parcel is on its way."},
        {
            "type": "BUTTONS",
            "buttons": [
                {"type": "URL", "text": "Track", "url": "https://track.example.com/p/{{1}}"},
                {"type": "QUICK_REPLY", "text": "Stop"},
            ],
        },
    ],
)
NAMED = Template("greet", "en", "APPROVED", [{"type": "BODY", "text": "Hello {{first_name}}, code {{code}}"}])
PROMO = Template("promo", "en_US", "PAUSED", [{"type": "BODY", "text": "Sale {{1}}"}])
KNOWN = [ORDER, ORDER_RU, HELLO, INVOICE, TRACK, NAMED, PROMO]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("template-hello_world+en_US", Command("hello_world", "en_US")),
        ("  template+hello_world+en_US  ", Command("hello_world", "en_US")),
        ("template-order_update+en_US+Anna|#77", Command("order_update", "en_US", ("Anna", "#77"))),
        ("template-order_update+ru+Анна|A+B", Command("order_update", "ru", ("Анна", "A+B"))),
        (
            "template-invoice+en_US+INV-1|header=https://f.example.com/a.pdf",
            Command("invoice", "en_US", ("INV-1",), "https://f.example.com/a.pdf"),
        ),
        ("template-track_parcel+en_US+button0=AB123", Command("track_parcel", "en_US", buttons={0: "AB123"})),
        ("template-hello_world+en_US+", Command("hello_world", "en_US")),
    ],
)
def test_each_command_form_is_read(text: str, expected: Command) -> None:
    assert parse(text) == expected


def test_plain_text_and_the_bare_form() -> None:
    assert parse("Hello, your order is ready") is None
    assert parse("hello_world+en_US") is None  # the bare form only where the caller allows it (SMS)
    assert parse("hello_world+en_US", prefixed=False) == Command("hello_world", "en_US")
    assert template_command.looks_like("template-anything at all")
    assert not template_command.looks_like("a template- in the middle")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("template-order_update+en_US+Anna||#77", "value 2 is empty"),
        ("template-invoice+en_US+x|header=a|header=b", "header= is given twice"),
        ("template-track_parcel+en_US+button0=", "button0= has no value"),
    ],
)
def test_unreadable_values_say_which(text: str, says: str) -> None:
    with pytest.raises(CommandError, match=says):
        parse(text)


def test_a_fitting_command_builds_meta_template_object_and_what_the_customer_reads() -> None:
    checked = check(Command("order_update", "en_US", ("Anna", "#77")), KNOWN)
    assert checked.template == {
        "name": "order_update",
        "language": {"code": "en_US"},
        "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Anna"}, {"type": "text", "text": "#77"}]}
        ],
    }
    assert checked.rendered == "Hi Anna, your order #77 has shipped."
    hello = check(Command("hello_world", "en_US"), KNOWN)
    assert hello.template == {"name": "hello_world", "language": {"code": "en_US"}}
    assert hello.rendered == "Hello World\nWelcome!\nsample"


def test_header_media_buttons_and_named_parameters() -> None:
    invoice = check(Command("invoice", "en_US", ("INV-1",), "https://f.example.com/a.pdf"), KNOWN)
    assert invoice.template["components"][0] == {
        "type": "header",
        "parameters": [{"type": "document", "document": {"link": "https://f.example.com/a.pdf"}}],
    }
    track = check(Command("track_parcel", "en_US", buttons={0: "AB123"}), KNOWN)
    assert track.template["components"] == [
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "AB123"}]}
    ]
    assert "[Track: https://track.example.com/p/AB123]" in track.rendered
    named = check(Command("greet", "en", ("Ann", "42")), KNOWN)
    assert named.template["components"][0]["parameters"] == [
        {"type": "text", "text": "Ann", "parameter_name": "first_name"},
        {"type": "text", "text": "42", "parameter_name": "code"},
    ]
    assert named.rendered == "Hello Ann, code 42"


@pytest.mark.parametrize(
    ("command", "says", "lists"),
    [
        (Command("no_such", "en_US"), "there is no template named no_such", "hello_world (en_US, 0 values)"),
        (Command("order_update", "de"), "has no language de (it has: en_US, ru)", "order_update (ru, 2 values)"),
        (Command("promo", "en_US", ("x",)), "is PAUSED, not APPROVED", "order_update (en_US, 2 values)"),
        (Command("order_update", "en_US", ("Anna",)), "it needs 2 values, the command gives 1", "order_update (en_US"),
        (Command("invoice", "en_US", ("INV-1",)), "its header needs header=URL", "header=document"),
        (Command("invoice", "en_US", ("INV-1",), "not a link"), "header= must be an http(s) link", "invoice"),
        (Command("track_parcel", "en_US"), "button0= is required (url button)", "button0="),
        (Command("hello_world", "en_US", header="x"), "has no header that takes a value", "hello_world"),
    ],
)
def test_each_wrong_command_says_what_is_wrong_and_what_fits(command: Command, says: str, lists: str) -> None:
    with pytest.raises(Refusal) as refused:
        check(command, KNOWN)
    assert says in str(refused.value)
    assert "Templates that fit: " in str(refused.value) and lists in str(refused.value)


T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def test_the_window_is_24_hours_from_the_customers_last_message() -> None:
    assert window.is_open(T0, T0 + 23 * HOUR + 59 * dt.timedelta(minutes=1))
    assert not window.is_open(T0, T0 + 24 * HOUR)
    assert not window.is_open(None, T0)
    assert window.opened_at(str(int(T0.timestamp())), T0 + HOUR) == T0  # the customer's send time
    assert window.opened_at("not a time", T0) == T0
    assert window.opened_at(str(int((T0 + 5 * HOUR).timestamp())), T0) == T0 + dt.timedelta(minutes=5)


def test_each_window_notice_is_due_once_and_a_late_scan_sends_only_closed() -> None:
    lead = HOUR
    assert window.due_notice(T0, T0 + 22 * HOUR, lead, None, None) is None
    assert window.due_notice(T0, T0 + 23 * HOUR, lead, None, None) == "closing"
    assert window.due_notice(T0, T0 + 23 * HOUR, lead, T0, None) is None
    assert window.due_notice(T0, T0 + 24 * HOUR, lead, T0, None) == "closed"
    assert window.due_notice(T0, T0 + 30 * HOUR, lead, None, None) == "closed"
    assert window.due_notice(T0, T0 + 30 * HOUR, lead, T0, T0) is None
    assert window.due_notice(T0, T0 + 23 * HOUR, dt.timedelta(0), None, None) is None  # closing notices off
    reopened = T0 + 2 * HOUR  # the customer wrote again: a new opening owes its own notices
    assert window.due_notice(reopened, reopened + 23 * HOUR, lead, T0, T0) == "closing"


def test_meta_statuses_become_the_crm_sms_statuses() -> None:
    assert [sms.bitrix_status(s) for s in ("sent", "delivered", "read", "failed")] == [
        "sent",
        "delivered",
        "delivered",
        "failed",
    ]
    assert sms.bitrix_status("failed", 131026) == "undelivered"
    assert sms.sender_code("+1 415 555-0123") == "thoth_14155550123"
