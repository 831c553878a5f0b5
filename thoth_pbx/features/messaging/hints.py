"""Meta's message error codes in plain language for the operator's chat (pure).

Codes and meanings: developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes and
../shared/reference/meta-whatsapp-cloud-api.md §4. A code we do not know keeps Meta's own title."""

from __future__ import annotations

from thoth_pbx.features.messaging.template_command import SYNTAX

_WINDOW = (
    "more than 24 hours have passed since the customer last wrote: only an approved template can be sent now, "
    f"as {SYNTAX}"
)
HINTS: dict[int, str] = {
    131047: _WINDOW,
    470: _WINDOW,
    131026: "the message could not be delivered: the number may not be on WhatsApp, or the customer's app is too old",
    131053: "WhatsApp refused the file: check its type and size",
    131052: "WhatsApp could not download the customer's file",
    131051: "WhatsApp does not support this kind of message",
    130429: "too many messages per second from this number: it is retried automatically",
    131056: "too many messages to this customer in a short time: it is retried automatically",
    131048: "WhatsApp limited this number for spam: wait before writing again",
    131049: "WhatsApp chose not to deliver this message to keep engagement healthy: try later",
    131050: "the customer stopped receiving marketing messages from this business",
    131021: "the customer's number is the business number itself",
    131031: "the WhatsApp Business account is locked: see Meta Business Manager",
    131042: "a payment problem on the WhatsApp Business account: see Meta Business Manager",
    131008: "a required part of the message was missing",
    131009: "a part of the message had an invalid value",
    100: "WhatsApp did not accept the message's content",
    190: "the WhatsApp access token has expired: the admin must renew it in thoth-pbx",
    368: "the number is temporarily blocked for policy violations",
    133010: "the WhatsApp number is not registered with the Cloud API",
}


def hint(code: int | None, title: str | None = None) -> str:
    if code is not None and code in HINTS:
        return HINTS[code]
    return title or "WhatsApp refused the message"


def failure_notice(code: int | None, title: str | None, *, what: str = "The message was not delivered") -> str:
    """The system line an operator reads: what happened, Meta's code, and what it means."""
    code_part = f" (WhatsApp error {code})" if code is not None else ""
    return f"{what}{code_part}: {hint(code, title)}."
