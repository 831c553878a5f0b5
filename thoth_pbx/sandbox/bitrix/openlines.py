"""The Open Lines chat side of a simulated portal: chats, files, statuses, operators.

Built from b24restdocs (paths relative to api-reference/):
- imopenlines/imconnector/imconnector-send-messages.md: each MESSAGES item lands in the chat of
  its (connector, line, chat.id), which keeps one im chat id and session; each external user.id
  keeps one Bitrix user. `message.files: [{url, name}]` "must be accessible from Bitrix24": the
  portal downloads them itself after answering (`BitrixSimulator.files_fetched()` waits for it).
- imconnector-update-messages.md, imconnector-delete-messages.md: the external side edits or
  removes what it sent, by the same message.id and chat.id.
- imconnector-send-status-delivery.md, imconnector-send-status-reading.md: MESSAGES items of
  `{im: {chat_id, message_id}, message: {id: [...], date}, chat: {id}}`; "even for a single
  message, pass an array"; "delivered" also marks the message read; the answer is
  `{SUCCESS: true, DATA: []}`.
- chats/messages/im-message-add.md: DIALOG_ID `chat<N>`, MESSAGE or ATTACH, SYSTEM Y/N; the
  answer is the new message id; an unknown chat is `CHAT_ID` "Error creating message".
- imopenlines/imconnector/events/on-im-connector-message-{add,update,delete}.md: what an
  operator's message, edit and deletion post to the app. Files are not in the docs; real payloads
  carry `[message][files][i][name|link|downloadLink|type|mime|size|sizef]` (estvita/separator,
  ../shared/reference/bitrix24-rest.md §2), which the simulator serves at /_sandbox/disk/<token>.
- imopenlines/openlines/sessions/imopenlines-dialog-get.md: the chat's data; a new chat is bound
  to CRM as its line's settings say (imopenlines-config-add.md: CRM, CRM_CREATE, default `lead`).

As in the module source (rest/customconnectors.php), MESSAGES keys are lower-cased recursively and
every item's structure is checked before anything is stored. Where the pages are silent (the
wording of per-item errors, statuses naming no known message) the choice is noted inline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from thoth_pbx.sandbox.bitrix.methods import Run, _as_int, _connector_line, _null_arg, _text, method
from thoth_pbx.sandbox.bitrix.state import (
    APP,
    INCOMING,
    OPERATOR,
    SYSTEM,
    ChatFile,
    ChatMessage,
    DiskFile,
    OpenLinesChat,
    Portal,
    SimError,
)

if TYPE_CHECKING:
    from thoth_pbx.sandbox.bitrix.server import BitrixSimulator

log = logging.getLogger(__name__)

# imconnector-*.md, "Possible Error Codes": these methods work only in an application's context
_WRONG_AUTH = (
    "WRONG_AUTH_TYPE",
    "Current authorization type is denied for this method Application context required",
    403,
)
_STRUCTURE = "The incorrect structure of a message inside MESSAGES parameter"
FILE_NOT_LOADED = "File could not be loaded"

# ids look like the docs' examples: im chat 1767 / session 323, user 585, message 86497
_CHAT_BASE, _SESSION_BASE, _USER_BASE, _MESSAGE_BASE = 1700, 300, 500, 86000


# ---------------------------------------------------------------------------- helpers


def _argument(description: str) -> SimError:
    return SimError("ERROR_ARGUMENT", description, 400)


def _lower_keys(value: Any) -> Any:
    """Converter::TO_LOWER | KEYS | RECURSIVE, as the module applies it to MESSAGES."""
    if isinstance(value, dict):
        return {str(k).lower(): _lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_keys(v) for v in value]
    return value


def _as_list(value: Any) -> list[Any]:
    """A PHP array either way: a JSON list, or an object / form keys that are not 0..n-1."""
    if isinstance(value, dict):
        return list(value.values())
    return value if isinstance(value, list) else []


def _messages(params: dict[str, Any]) -> list[dict[str, Any]]:
    """MESSAGES as a list of lower-cased items (the errors imconnector-send-messages.md lists)."""
    raw = params.get("MESSAGES")
    if raw is None or raw == "" or raw == [] or raw == {}:
        raise _null_arg("MESSAGES")
    if not isinstance(raw, (list, dict)):
        raise _argument("The value of an argument 'MESSAGES' must be of type array")
    items = [_lower_keys(item) for item in _as_list(raw)]
    if not all(isinstance(item, dict) for item in items):
        raise _argument("The MESSAGES parameter must be an array of messages (arrays)")
    return items


def _blocks(items: list[dict[str, Any]], names: tuple[str, ...]) -> None:
    for item in items:
        if not all(isinstance(item.get(name), dict) for name in names):
            raise _argument(_STRUCTURE)


def _require_active(portal: Portal, connector: str, line: int) -> None:
    state = portal.connector_lines.get((connector, line))
    if not state or not state["active"] or state["error"]:
        raise SimError("NOT_ACTIVE_LINE", "The line with this ID is inactive or does not exist", 400)


def _raw_text(block: dict[str, Any], key: str) -> str:
    """A text as sent (not stripped: BB-code and line breaks are the message)."""
    value = block.get(key)
    return "" if value is None or isinstance(value, (dict, list)) else str(value)


def _bind_crm(portal: Portal, chat: OpenLinesChat, phone: str, name: str) -> None:
    """A new chat is bound as the line's CRM settings say (imopenlines-config-add.md: CRM
    "search for the client in CRM", CRM_CREATE "what to create in CRM for a new client", default
    `lead`): an entity already holding the client's phone, else a new lead (for `deal`, a contact
    and its deal; the chat's own entity is then the deal). Where the pages are silent (which of
    several entities wins) the first one known for the number does."""
    settings = portal.open_lines.get(chat.line, {})
    if settings.get("CRM", "Y") != "Y":
        return
    digits = re.sub(r"\D", "", phone)
    found = portal.crm.get(digits) if digits else None
    if found:
        chat.crm[str(found[0]["CRM_ENTITY_TYPE"])] = int(found[0]["CRM_ENTITY_ID"])
        return
    create = settings.get("CRM_CREATE", "lead")
    if create == "none":
        return
    owner = min(portal.users, default=1)
    if create == "deal":
        contact_id = portal.next_id("contact") + 500
        portal.contacts[contact_id] = {"ID": contact_id, "NAME": name, "ASSIGNED_BY_ID": owner}
        chat.crm["DEAL"] = portal.next_id("deal") + 2000
        entity: dict[str, Any] = {"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": contact_id}
    else:
        entity = {"CRM_ENTITY_TYPE": "LEAD", "CRM_ENTITY_ID": portal.next_id("lead") + 1000}
        portal.leads[entity["CRM_ENTITY_ID"]] = {
            "ID": entity["CRM_ENTITY_ID"],
            "TITLE": f"{name} - Open Lines",
            "ASSIGNED_BY_ID": owner,
        }
    chat.crm[entity["CRM_ENTITY_TYPE"]] = entity["CRM_ENTITY_ID"]
    if digits:  # findable by number like any CRM entity (telephony register, searchCrmEntities)
        portal.crm.setdefault(digits, []).append(entity | {"NAME": name, "ASSIGNED_BY_ID": owner})


def _chat_for(
    portal: Portal, connector: str, line: int, chat_block: dict[str, Any], user_block: dict[str, Any]
) -> OpenLinesChat:
    external_id = _text(chat_block, "id")
    chat = portal.chat(connector, line, external_id)
    if chat is None:
        chat = OpenLinesChat(
            connector=connector,
            line=line,
            external_id=external_id,
            chat_id=portal.next_id("chat") + _CHAT_BASE,
            session_id=portal.next_id("session") + _SESSION_BASE,
        )
        portal.chats[(connector, line, external_id)] = chat
        phone = _text(user_block, "phone")
        _bind_crm(portal, chat, phone, _text(user_block, "name") or phone or "Open Lines client")
    if _text(chat_block, "name"):
        chat.name = _text(chat_block, "name")
    if _text(chat_block, "url"):
        chat.url = _text(chat_block, "url")
    return chat


def _im_user(portal: Portal, connector: str, external_user: str) -> int:
    """One Bitrix user per external user.id of a connector (the module keys them by both)."""
    key = (connector, external_user)
    if key not in portal.im_users:
        portal.im_users[key] = portal.next_id("im_user") + _USER_BASE
    return portal.im_users[key]


def _next_message_id(portal: Portal) -> int:
    return portal.next_id("im_message") + _MESSAGE_BASE


def _item_problems(item: dict[str, Any]) -> list[str]:
    """Per-item checks of the fields the page marks required (the page gives no wording)."""
    problems = []
    if not _text(item["user"], "id"):
        problems.append("The user ID in the external system is not specified")
    if not _text(item["chat"], "id"):
        problems.append("The chat ID in the external system is not specified")
    return problems


def _files(sim: BitrixSimulator, message: ChatMessage, block: dict[str, Any]) -> None:
    """Attach `block["files"]` to `message` and start fetching each (after the answer)."""
    for raw in _as_list(block.get("files")):
        if not isinstance(raw, dict):
            continue
        url = _text(raw, "url")
        name = _text(raw, "name") or url.rsplit("/", 1)[-1].split("?", 1)[0]
        chat_file = ChatFile(url=url, name=name)
        message.files.append(chat_file)
        sim.start_download(fetch_file(sim, message, chat_file))


async def fetch_file(sim: BitrixSimulator, message: ChatMessage, chat_file: ChatFile) -> None:
    """GET the URL as the portal does; a failure stays on the message as a visible marker."""
    try:
        if not re.match(r"^https?://", chat_file.url):
            raise ValueError("not an http(s) URL")
        timeout = aiohttp.ClientTimeout(total=sim.file_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(chat_file.url) as resp:
            body = await resp.read()
            chat_file.status = resp.status
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            chat_file.sha256 = hashlib.sha256(body).hexdigest()
            chat_file.size = len(body)
            chat_file.mime = resp.content_type
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        chat_file.error = str(exc) or type(exc).__name__
        message.markers.append(f"{FILE_NOT_LOADED}: {chat_file.name}")
        log.info("file not loaded", extra={"url": chat_file.url, "error": chat_file.error})
    finally:
        chat_file.done = True


def _result(
    portal: Portal,
    connector: str,
    item: dict[str, Any],
    problems: list[str],
    chat: OpenLinesChat | None = None,
) -> dict[str, Any]:
    """One DATA.RESULT[] entry: user, message, chat, SUCCESS, ERRORS when it failed, session when known."""
    known = portal.im_users.get((connector, _text(item["user"], "id")))  # only send.messages makes users
    entry: dict[str, Any] = {
        "user": str(known) if known else "",
        "message": item["message"],
        "chat": item["chat"],
        "SUCCESS": not problems,
    }
    if problems:
        entry["ERRORS"] = problems
    if chat is not None:
        entry["session"] = {"ID": str(chat.session_id), "CHAT_ID": str(chat.chat_id)}
    return entry


def _answer(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"SUCCESS": all(r["SUCCESS"] for r in results), "DATA": {"RESULT": results}}


# ---------------------------------------------------------------------------- the external side


@method("imconnector.send.messages", "imconnector", app_only=_WRONG_AUTH)
def connector_send(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    """imconnector-send-messages.md: every item into its chat; files fetched after the answer."""
    connector, line = _connector_line(params)
    items = _messages(params)
    _blocks(items, ("user", "message", "chat"))
    _require_active(portal, connector, line)
    results = []
    for item in items:
        message_block = item["message"]
        problems = _item_problems(item)
        if not problems and not _raw_text(message_block, "text").strip() and not _as_list(message_block.get("files")):
            problems.append("The message has neither text nor files")  # "pass either text or files"
        if problems:
            results.append(_result(portal, connector, item, problems))
            continue
        chat = _chat_for(portal, connector, line, item["chat"], item["user"])
        external_user = _text(item["user"], "id")
        chat.users[external_user] = _im_user(portal, connector, external_user)
        message = ChatMessage(
            id=_next_message_id(portal),
            kind=INCOMING,
            author_id=chat.users[external_user],
            text=_raw_text(message_block, "text"),
            date=_as_int(message_block.get("date")) or int(sim.clock()),
            external_id=_text(message_block, "id") or None,
            external_user=external_user,
        )
        chat.messages.append(message)
        _files(sim, message, message_block)
        results.append(_result(portal, connector, item, [], chat))
    return _answer(results)


def _own_message(portal: Portal, connector: str, line: int, item: dict[str, Any]) -> ChatMessage | None:
    chat = portal.chat(connector, line, _text(item["chat"], "id"))
    return chat.incoming(_text(item["message"], "id")) if chat else None


def _target(portal: Portal, connector: str, line: int, item: dict[str, Any]) -> tuple[ChatMessage | None, list[str]]:
    """The message an update/delete item names, or why it names none (the item fails alone)."""
    problems = _item_problems(item)
    message = None if problems else _own_message(portal, connector, line, item)
    if not problems and message is None:
        problems.append("The message was not found")
    return message, problems


@method("imconnector.update.messages", "imconnector", app_only=_WRONG_AUTH)
def connector_update(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    """imconnector-update-messages.md: new text and/or files for a message sent before, by message.id and chat.id.

    A message.id the chat never received fails that item (SUCCESS false, ERRORS; the page is silent)."""
    connector, line = _connector_line(params)
    items = _messages(params)
    _blocks(items, ("user", "message", "chat"))
    _require_active(portal, connector, line)
    results = []
    for item in items:
        message, problems = _target(portal, connector, line, item)
        if message is None:
            results.append(_result(portal, connector, item, problems))
            continue
        block = item["message"]
        if "text" in block:
            message.edits.append(message.text)
            message.text = _raw_text(block, "text")
        if "files" in block:
            message.files.clear()
            message.markers = [m for m in message.markers if not m.startswith(FILE_NOT_LOADED)]
            _files(sim, message, block)
        results.append(_result(portal, connector, item, []))
    return _answer(results)


@method("imconnector.delete.messages", "imconnector", app_only=_WRONG_AUTH)
def connector_delete(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    """imconnector-delete-messages.md: the message stays in the record, marked deleted."""
    connector, line = _connector_line(params)
    items = _messages(params)
    _blocks(items, ("user", "message", "chat"))
    _require_active(portal, connector, line)
    results = []
    for item in items:
        message, problems = _target(portal, connector, line, item)
        if message is not None:
            message.deleted = True
        results.append(_result(portal, connector, item, problems))
    return _answer(results)


def _status_item(item: dict[str, Any]) -> tuple[int, int, list[str], int | None, str]:
    """Check one status item's documented shape; (im chat id, im message id, external ids, date, chat.id)."""
    im, message, chat = item["im"], item["message"], item["chat"]
    chat_id, message_id = _as_int(im.get("chat_id")), _as_int(im.get("message_id"))
    if chat_id is None or message_id is None:
        raise _argument("im.chat_id and im.message_id must be integers (from OnImConnectorMessageAdd)")
    ids = message.get("id")
    if not isinstance(ids, list):  # "Even for a single message, pass an array"
        raise _argument("The value of message.id must be an array of external message IDs")
    if not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in ids):
        raise _argument("message.id must hold external message IDs (strings)")
    date = message.get("date")
    if date is not None and _as_int(date) is None:
        raise _argument("message.date must be a Unix timestamp in seconds")
    if not _text(chat, "id"):
        raise _argument(_STRUCTURE)
    return chat_id, message_id, [str(i) for i in ids], _as_int(date), _text(chat, "id")


def _status(kind: str) -> Run:
    def run(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
        connector, line = _connector_line(params)
        items = _messages(params)
        _blocks(items, ("im", "message", "chat"))
        checked = [_status_item(item) for item in items]
        for chat_id, message_id, ids, date, chat_external_id in checked:
            chat = portal.chat_by_id(chat_id)
            message = chat.message(message_id) if chat else None
            matched = bool(
                chat
                and message
                and message.kind == OPERATOR
                and (chat.connector, chat.line) == (connector, line)
                and chat.external_id == chat_external_id
            )
            # A status naming no operator message of this chat is accepted, as the module's
            # receiving code only raises an event; it is kept here so tests can see it.
            portal.status_reports.append(
                {
                    "status": kind,
                    "connector": connector,
                    "line": line,
                    "im": {"chat_id": chat_id, "message_id": message_id},
                    "ids": ids,
                    "date": date,
                    "chat_external_id": chat_external_id,
                    "matched": matched,
                }
            )
            if not matched or message is None:
                continue
            message.read = True  # "when processing the 'delivered' status, the message is also marked as 'read'"
            target = message.read_ids
            if kind == "delivery":
                message.delivered = True
                target = message.delivered_ids
            target.extend(i for i in ids if i not in target)
        return {"SUCCESS": True, "DATA": []}

    return run


method("imconnector.send.status.delivery", "imconnector", app_only=_WRONG_AUTH)(_status("delivery"))
method("imconnector.send.status.reading", "imconnector", app_only=_WRONG_AUTH)(_status("reading"))


# ---------------------------------------------------------------------------- im.message.add


@method("im.message.add", "im")
def im_message_add(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> int:
    """im-message-add.md into an Open Lines chat (`chat<N>`); SYSTEM=Y makes it a system message.

    Group chats do not exist here (`sg<N>` is CHAT_ID like an unknown chat); personal dialogs
    are refused rather than silently dropped."""
    dialog = _text(params, "DIALOG_ID")
    text = _raw_text(params, "MESSAGE")
    attach = params.get("ATTACH") or None
    chat_match = re.fullmatch(r"chat(\d+)", dialog)
    if chat_match:
        chat = portal.chat_by_id(int(chat_match.group(1)))
    elif re.fullmatch(r"sg\d+", dialog):
        chat = None
    elif dialog.isdigit():
        if portal.user(dialog) is None:
            raise SimError("USER_NOT_FOUND", "User not found", 400)
        raise SimError("ERROR_CORE", "Personal dialogs are not simulated", 400)
    else:
        raise SimError("USER_ID_EMPTY", "User ID can't be empty", 400)
    if not text.strip() and not attach:
        raise SimError("MESSAGE_EMPTY", "Message can't be empty", 400)
    if chat is None:
        raise SimError("CHAT_ID", "Error creating message", 400)
    caller = sim.current_caller
    author = caller.webhook.user_id if caller is not None and caller.webhook is not None else 1  # the app's user
    message = ChatMessage(
        id=_next_message_id(portal),
        kind=SYSTEM if _text(params, "SYSTEM").upper() == "Y" else APP,
        author_id=author,
        text=text,
        date=int(sim.clock()),
        attach=attach,
    )
    chat.messages.append(message)
    return message.id


# ---------------------------------------------------------------------------- imopenlines.dialog.get

_CRM_SLOTS = ("LEAD", "COMPANY", "CONTACT", "DEAL")


def _dialog_chat(portal: Portal, params: dict[str, Any]) -> OpenLinesChat | None:
    """The chat named by CHAT_ID, DIALOG_ID (chat<N>), SESSION_ID or USER_CODE (any one will do)."""
    chat_id = _as_int(params.get("CHAT_ID"))
    dialog = _text(params, "DIALOG_ID")
    if chat_id is None and dialog.startswith("chat"):
        chat_id = _as_int(dialog[4:])
    if chat_id is not None:
        return portal.chat_by_id(chat_id)
    session_id = _as_int(params.get("SESSION_ID"))
    if session_id is not None:
        return next((c for c in portal.chats.values() if c.session_id == session_id), None)
    code = _text(params, "USER_CODE").removeprefix("imol|").split("|")
    if len(code) == 4:
        return next((c for c in portal.chats.values() if [c.connector, str(c.line), c.external_id] == code[:3]), None)
    return None


@method("imopenlines.dialog.get", "imopenlines")
def dialog_get(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> dict[str, Any]:
    """imopenlines/openlines/sessions/imopenlines-dialog-get.md: the Open Lines chat's data, keys
    as in the page's example. `entity_data_1` is "Y|<TYPE>|<ID>|N|N|<SESSION_ID>|<ts>|<LINE>|0|0"
    when the chat is bound to CRM ("N|NONE|0|..." when not): the session id as the sixth value
    is what imopenlines-session-history-get.md says; type and ID second and third as in that
    page's example ("Y|LEAD|1205|N|N|321|1773223732|0|0|0"). `entity_data_2` lists the bindings
    "LEAD|<id>|COMPANY|<id>|CONTACT|<id>|DEAL|<id>" (0 for none; ../shared/reference
    bitrix24-rest.md §2). An unknown chat is ACCESS_ERROR: the app's user cannot see it."""
    if not any(_text(params, k) for k in ("CHAT_ID", "DIALOG_ID", "SESSION_ID", "USER_CODE")):
        raise SimError("DIALOG_ID_EMPTY", "Dialog ID can't be empty", 400)
    chat = _dialog_chat(portal, params)
    if chat is None:
        raise SimError("ACCESS_ERROR", "You do not have access to the specified dialog", 400)
    created = min((m.date for m in chat.messages), default=int(sim.clock()))
    own = next(iter(chat.crm.items()), None)
    head = f"Y|{own[0]}|{own[1]}" if own else "N|NONE|0"
    user = next(iter(chat.users.values()), 0)
    return {
        "avatar": "",
        "color": "#4ba984",
        "date_create": dt.datetime.fromtimestamp(created, dt.UTC).isoformat(),
        "dialog_id": f"chat{chat.chat_id}",
        "entity_data_1": f"{head}|N|N|{chat.session_id}|{created}|{chat.line}|0|0",
        "entity_data_2": "|".join(f"{slot}|{chat.crm.get(slot, 0)}" for slot in _CRM_SLOTS),
        "entity_data_3": "",
        "entity_id": f"{chat.connector}|{chat.line}|{chat.external_id}|{user}",
        "entity_type": "LINES",
        "extranet": False,
        "id": chat.chat_id,
        "manager_list": [],
        "message_type": "L",
        "name": chat.name or f"Open Lines chat {chat.chat_id}",
        "owner": 0,
        "type": "lines",
    }


# ---------------------------------------------------------------------------- operators


def _find_chat(portal: Portal, line_id: int, chat_external_id: str, connector: str | None) -> OpenLinesChat:
    found = [
        c
        for c in portal.chats.values()
        if c.line == line_id and c.external_id == chat_external_id and connector in (None, c.connector)
    ]
    if not found:
        raise ValueError(f"no Open Lines chat {chat_external_id!r} on line {line_id}")
    return found[0]


def _signed(portal: Portal, user_id: int, text: str, signature: bool) -> str:
    """NEED_SIGNATURE: `[b]Name Last name:[/b] [br]` before the text (on-im-connector-message-add.md)."""
    if not signature:
        return text
    operator = portal.users.get(user_id)
    if operator is None:
        raise ValueError(f"no user {user_id} on this portal")
    name = f"{operator.name} {operator.last_name}".strip()
    return f"[b]{name}:[/b] [br]{text}"


def _format_size(size: int) -> str:
    """CFile::FormatSize-like `sizef`."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{size} B"


def _file_entry(sim: BitrixSimulator, disk: DiskFile) -> dict[str, Any]:
    link = f"{sim.base_url}/_sandbox/disk/{disk.token}"
    return {
        "name": disk.name,
        "link": link,
        "downloadLink": f"{link}?download=1",
        "type": disk.type,
        "mime": disk.mime,
        "size": len(disk.content),
        "sizef": _format_size(len(disk.content)),
    }


async def _post(
    sim: BitrixSimulator, portal: Portal, event: str, chat: OpenLinesChat, entry: dict[str, Any], user_id: int
) -> dict[str, Any]:
    data = {"CONNECTOR": chat.connector, "LINE": chat.line, "MESSAGES": [entry]}
    sent = await sim.deliver_event(portal, event, data, auth_user_id=user_id)
    first = sent[0] if sent else None
    return {
        "chat_id": chat.chat_id,
        "message_id": entry["im"]["message_id"],
        "status": first[1] if first else None,
        "answer": first[2] if first else None,
        "sent": [{"handler": url, "status": status, "answer": answer} for url, status, answer in sent],
    }


async def operator_writes(
    sim: BitrixSimulator,
    portal: Portal,
    line_id: int,
    chat_external_id: str,
    text: str,
    *,
    files: Sequence[tuple[str, bytes, str]] | None = None,
    user_id: int = 1,
    signature: bool = True,
    connector: str | None = None,
) -> dict[str, Any]:
    """Record an operator's message in the chat, then POST ONIMCONNECTORMESSAGEADD to its handlers."""
    chat = _find_chat(portal, line_id, chat_external_id, connector)
    body = _signed(portal, user_id, text, signature)
    disk = [sim.disk_put(name, content, mime) for name, content, mime in files or ()]
    message = ChatMessage(
        id=_next_message_id(portal), kind=OPERATOR, author_id=user_id, text=body, date=int(sim.clock()), disk_files=disk
    )
    chat.messages.append(message)
    message_block: dict[str, Any] = {"user_id": user_id, "text": body}
    if disk:
        message_block["files"] = [_file_entry(sim, d) for d in disk]
    entry = {
        "im": {"chat_id": chat.chat_id, "message_id": message.id},
        "message": message_block,
        "chat": {"id": chat.external_id},
    }
    return await _post(sim, portal, "ONIMCONNECTORMESSAGEADD", chat, entry, user_id)


def _operator_message(chat: OpenLinesChat, message_id: int) -> ChatMessage:
    message = chat.message(message_id)
    if message is None or message.kind != OPERATOR:
        raise ValueError(f"no operator message {message_id} in chat {chat.chat_id}")
    return message


async def operator_edits(
    sim: BitrixSimulator,
    portal: Portal,
    line_id: int,
    chat_external_id: str,
    message_id: int,
    text: str,
    *,
    signature: bool = True,
    connector: str | None = None,
) -> dict[str, Any]:
    """Edit an operator's message, then POST ONIMCONNECTORMESSAGEUPDATE (on-im-connector-message-update.md).

    `[message][id]` is the array of external ids the app confirmed with send.status.delivery; with
    none confirmed the array is empty, which a PHP form leaves out."""
    chat = _find_chat(portal, line_id, chat_external_id, connector)
    message = _operator_message(chat, message_id)
    body = _signed(portal, message.author_id, text, signature)
    message.edits.append(message.text)
    message.text = body
    entry = {
        "im": {"chat_id": chat.chat_id, "message_id": message.id},
        "message": {"id": list(message.delivered_ids), "text": body},
        "chat": {"id": chat.external_id},
    }
    return await _post(sim, portal, "ONIMCONNECTORMESSAGEUPDATE", chat, entry, message.author_id)


async def operator_deletes(
    sim: BitrixSimulator,
    portal: Portal,
    line_id: int,
    chat_external_id: str,
    message_id: int,
    *,
    connector: str | None = None,
) -> dict[str, Any]:
    """Delete an operator's message, then POST ONIMCONNECTORMESSAGEDELETE (on-im-connector-message-delete.md).

    That page shows `[message][id]` as one string (the update event's is an array): the first
    external id confirmed by send.status.delivery, left out when there is none."""
    chat = _find_chat(portal, line_id, chat_external_id, connector)
    message = _operator_message(chat, message_id)
    message.deleted = True
    entry = {
        "im": {"chat_id": chat.chat_id, "message_id": message.id},
        "message": {"id": message.delivered_ids[0] if message.delivered_ids else None},
        "chat": {"id": chat.external_id},
    }
    return await _post(sim, portal, "ONIMCONNECTORMESSAGEDELETE", chat, entry, message.author_id)


def new_disk_file(name: str, content: bytes, mime: str) -> DiskFile:
    return DiskFile(token=secrets.token_urlsafe(16), name=name, content=content, mime=mime)


# ---------------------------------------------------------------------------- the read-only view


def view(portal: Portal) -> dict[str, Any]:
    """GET /_sandbox/portals/{member_id}/openlines: lines, connector status, chats, statuses, files."""
    chats = sorted(portal.chats.values(), key=lambda c: c.chat_id)
    return {
        "member_id": portal.member_id,
        "lines": [
            {"ID": line_id, "LINE_NAME": line["LINE_NAME"], "ACTIVE": line["ACTIVE"]}
            for line_id, line in sorted(portal.open_lines.items())
        ],
        "connectors": list(portal.connectors.values()),
        "connector_status": [
            {
                "connector": connector,
                "line": line,
                "active": state["active"],
                "error": state["error"],
                "STATUS": bool(state["active"] and not state["error"]),
                "data": state["data"],
            }
            for (connector, line), state in sorted(portal.connector_lines.items())
        ],
        "chats": [c.as_json() for c in chats],
        "system_messages": [
            {"chat_id": c.chat_id, **m.as_json()} for c in chats for m in c.messages if m.kind in (SYSTEM, APP)
        ],
        "statuses": list(portal.status_reports),
        "files": [
            {"chat_id": c.chat_id, "message_id": m.id, **f.as_json()}
            for c in chats
            for m in c.messages
            for f in m.files
        ],
    }
