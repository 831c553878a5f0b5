"""The portal as an SMS provider's host: `messageservice.*` and a CRM "send SMS" that calls the HANDLER.

Pages (b24restdocs, api-reference/messageservice/; published under apidocs.bitrix24.com):
- messageservice-sender-add.md: CODE* (a-zA-Z0-9._-), TYPE* (only SMS), HANDLER*, NAME* (string or
  {lang: text}), DESCRIPTION; errors ERROR_SENDER_VALIDATION_FAILURE ("Empty data!", "Empty sender
  code!", "Wrong sender code!", "Empty sender NAME!", "Empty sender message TYPE!", "Unknown sender
  message TYPE!"), ERROR_SENDER_ALREADY_INSTALLED ("Sender already installed!" for the current
  application); "What comes to the handler" (#handler): module_id, bindings (crm), workflow_id /
  document_id / document_type (bizproc), properties{phone_number, message_text}, type, code,
  message_id, message_to, message_body, ts, auth;
- messageservice-sender-update.md, -sender-list.md (the codes of the calling application),
  -sender-delete.md (ERROR_SENDER_NOT_FOUND "Sender not found!");
- messageservice-message-status-update.md: CODE*, MESSAGE_ID* (the handler's message_id), STATUS*
  in queued|sent|delivered|undelivered|failed; ERROR_MESSAGE_NOT_FOUND "Message not found!",
  ERROR_MESSAGE_STATUS_INCORRECT "Message status incorrect!";
- tutorials/messageservice/index.md: a CRM card's handler request (the example payload), app
  context only (an incoming webhook gets ACCESS_DENIED "Application context required").

Every method works in an application's context only. Senders belong to the portal and to the app
that added them (`APP_ID`, the simulator's client id)."""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any

from thoth_pbx.sandbox.bitrix.methods import _APP_CONTEXT, _text, method
from thoth_pbx.sandbox.bitrix.state import Portal, SimError

if TYPE_CHECKING:
    from thoth_pbx.sandbox.bitrix.server import BitrixSimulator

SMS_STATUSES = ("queued", "sent", "delivered", "undelivered", "failed")
_CODE = re.compile(r"[a-zA-Z0-9._-]+")


def _validation(description: str) -> SimError:
    return SimError("ERROR_SENDER_VALIDATION_FAILURE", description, 400)


def _code(params: dict[str, Any]) -> str:
    code = _text(params, "CODE")
    if not code:
        raise _validation("Empty sender code!")
    if not _CODE.fullmatch(code):
        raise _validation("Wrong sender code!")
    return code


def _mine(sim: BitrixSimulator, portal: Portal) -> dict[str, dict[str, Any]]:
    """The senders of the calling application on this portal, by code."""
    return {code: s for code, s in portal.senders.items() if s.get("APP_ID") == sim.client_id}


@method("messageservice.sender.add", "messageservice", app_only=_APP_CONTEXT)
def sender_add(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> bool:
    if not params:
        raise _validation("Empty data!")
    code = _code(params)
    if not params.get("NAME"):
        raise _validation("Empty sender NAME!")
    kind = _text(params, "TYPE")
    if not kind:
        raise _validation("Empty sender message TYPE!")
    if kind != "SMS":
        raise _validation("Unknown sender message TYPE!")
    handler = _text(params, "HANDLER")
    if not handler:
        raise _validation("Empty sender HANDLER!")  # the page marks HANDLER required; its text is not listed
    if code in _mine(sim, portal):
        raise SimError("ERROR_SENDER_ALREADY_INSTALLED", "Sender already installed!", 400)
    portal.senders[code] = {
        "CODE": code,
        "TYPE": kind,
        "NAME": params["NAME"],
        "HANDLER": handler,
        "DESCRIPTION": params.get("DESCRIPTION"),
        "APP_ID": sim.client_id,
    }
    return True


@method("messageservice.sender.update", "messageservice", app_only=_APP_CONTEXT)
def sender_update(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> bool:
    sender = _mine(sim, portal).get(_code(params))
    if sender is None:
        raise SimError("ERROR_SENDER_NOT_FOUND", "Sender not found!", 400)
    for key in ("HANDLER", "NAME", "DESCRIPTION"):
        if key in params:
            sender[key] = _text(params, key) if key == "HANDLER" else params[key]
    return True


@method("messageservice.sender.list", "messageservice", app_only=_APP_CONTEXT)
def sender_list(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> list[str]:
    return list(_mine(sim, portal))


@method("messageservice.sender.delete", "messageservice", app_only=_APP_CONTEXT)
def sender_delete(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> bool:
    code = _code(params)
    if code not in _mine(sim, portal):
        raise SimError("ERROR_SENDER_NOT_FOUND", "Sender not found!", 400)
    del portal.senders[code]
    return True


@method("messageservice.message.status.update", "messageservice", app_only=_APP_CONTEXT)
def message_status_update(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> bool:
    """Recorded in `portal.sms_status_updates` (in arrival order) and on the message. A message is
    found by its sender's CODE and MESSAGE_ID together; an unknown CODE finds no message."""
    code = _code(params)
    message_id = _text(params, "MESSAGE_ID")
    message = portal.sms_messages.get(message_id)
    if message is None or message["code"] != code or code not in _mine(sim, portal):
        raise SimError("ERROR_MESSAGE_NOT_FOUND", "Message not found!", 400)
    status = _text(params, "STATUS")
    if status not in SMS_STATUSES:
        raise SimError("ERROR_MESSAGE_STATUS_INCORRECT", "Message status incorrect!", 400)
    message["status"] = status
    message["statuses"].append(status)
    portal.sms_status_updates.append({"code": code, "message_id": message_id, "status": status, "at": sim.clock()})
    return True


# ---------------------------------------------------------------------------- the CRM sends an SMS


async def send_sms(
    sim: BitrixSimulator,
    portal: Portal,
    code: str,
    to: str,
    text: str,
    *,
    module_id: str = "crm",
    bindings: list[dict[str, Any]] | None = None,
    user_id: int = 1,
    application_token: str | None = None,
    document: tuple[str, str, str] = ("crm", "CCrmDocumentDeal", "DEAL_1"),
) -> dict[str, Any]:
    """A user (or an automation rule, `module_id="bizproc"`) sends an SMS through sender `code`:
    the portal POSTs the handler request to the sender's HANDLER, form-encoded, as the
    sender-add page's #handler section and the tutorial's example show it. `application_token`
    overrides the portal's (a forged request). Returns `{message_id, status, answer}` (our HTTP
    status and answer); the message is kept in `portal.sms_messages` for status updates."""
    sender = portal.senders.get(code)
    if sender is None:
        raise ValueError(f"no sender {code} on this portal")
    if module_id not in ("crm", "bizproc"):
        raise ValueError("module_id must be crm or bizproc")
    message_id = secrets.token_hex(16)
    form: dict[str, Any] = {"module_id": module_id}
    if module_id == "crm":
        form["bindings"] = bindings if bindings is not None else [{"OWNER_TYPE_ID": 3, "OWNER_ID": 1}]
    else:
        form["workflow_id"] = secrets.token_hex(10)
        form["document_id"] = list(document)
        form["document_type"] = [document[0], document[1], document[2].split("_")[0]]
    tokens = sim.issue_tokens(portal)
    form.update(
        properties={"phone_number": to, "message_text": text},
        type=sender["TYPE"],
        code=code,
        message_id=message_id,
        message_to=to,
        message_body=text,
        ts=str(int(sim.clock())),
        auth={
            "access_token": tokens["access_token"],
            "expires": str(tokens["expires"]),
            "expires_in": str(tokens["expires_in"]),
            "scope": portal.scope,
            "domain": portal.domain.split(":")[0],
            "server_endpoint": tokens["server_endpoint"],
            "status": "L",
            "client_endpoint": portal.client_endpoint,
            "member_id": portal.member_id,
            "user_id": str(user_id),
            "refresh_token": tokens["refresh_token"],
            "application_token": application_token or portal.application_token or "",
        },
    )
    portal.sms_messages[message_id] = {
        "message_id": message_id,
        "code": code,
        "to": to,
        "text": text,
        "module_id": module_id,
        "status": None,
        "statuses": [],
        "handler": sender["HANDLER"],
    }
    status, answer = await sim._post_form(sender["HANDLER"], form)
    portal.sms_messages[message_id].update(handler_status=status, handler_answer=answer)
    return {"message_id": message_id, "status": status, "answer": answer}


def sms_statuses(portal: Portal) -> list[dict[str, Any]]:
    """Every accepted `messageservice.message.status.update`: {code, message_id, status, at}."""
    return [dict(update) for update in portal.sms_status_updates]
