"""Calling + SIP on Meta for one phone: enable, disable, show, reset the SIP password.

Every change is read back (`GET /{phone_number_id}/settings?include_sip_credentials=true`)
and compared with what we hold: Meta must report our hostname and port, SIP and calling
enabled, SDES key exchange. The SIP password Meta generates is stored encrypted; the
read-back state (without the password) is kept in `Phone.calling_state` for the admin.
Any failure lands in `Phone.last_error` with Meta's code/subcode/message/fbtrace_id and an
admin-readable hint. Changing hostname/port/password marks the trunk for re-apply (the
Phone model does that itself).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, NoReturn

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.meta.graph import GraphClient, GraphError
from thoth_pbx.core.logs import register_secret
from thoth_pbx.core.shapes import sub
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory import Phone, WabaAccount
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

DEFAULT_SIP_PORT = 5061  # Meta's default when a server has no port

# Hints by (code, subcode) first, then by code. Facts: the Meta fact sheet (troubleshooting,
# SIP and call-settings pages) and Meta's WhatsApp error-code list.
_SUBCODE_HINTS: dict[tuple[int, int], str] = {
    (100, 33): "Meta does not know this phone number id, or the token cannot see it: check phone_number_id "
    "and that the token belongs to the WABA that owns the number.",
}
_CODE_HINTS: dict[int, str] = {
    0: "Meta could not authenticate the token: create a new access token for this WABA account.",
    3: "The app lacks the capability for this call: check the token's permissions with the token debugger.",
    10: "Permission denied: the token needs whatsapp_business_management on this WABA (token debugger shows its scopes).",
    100: "Meta rejected a parameter of the settings. Check the SIP hostname (a public DNS name with a CA-valid TLS "
    "certificate, not an IP address) and the TLS port.",
    104: "No access token was sent: set the access token of this WABA account.",
    190: "The access token is invalid or expired: paste a new one (a permanent system-user token is best) into the WABA account.",
    1: "Meta had a temporary problem; try again in a few minutes.",
    2: "Meta had a temporary problem; try again in a few minutes.",
    4: "Meta is rate-limiting this app; wait a few minutes and try again.",
    80007: "Meta is rate-limiting this WhatsApp Business Account; wait a few minutes and try again.",
    130429: "Meta is rate-limiting this number; wait a moment and try again.",
    131000: "Meta reported an internal error; try again, and give Meta support the fbtrace_id if it repeats.",
    131016: "Meta's service is unavailable right now; try again in a few minutes.",
    131055: "This number has SIP enabled, so Meta refuses Graph call actions: its calls go over SIP to your Asterisk. "
    "Disable SIP only if you want Graph (WebRTC) calling instead.",
    133010: "The phone number is not registered with the Cloud API: register it in WhatsApp Manager first.",
    138000: "Calling is not enabled for this number: enable Calling first.",
    138015: "Meta will not enable Calling for this number: its messaging limit must be at least 2,000 "
    "business-initiated conversations per 24 h. Raise the number's messaging tier, then try again.",
    138018: "Technical prerequisites are not met: set a SIP hostname and enable SIP (or subscribe an app to the "
    "WABA's 'calls' webhook field); the Meta app must be Live and allowed to message from this number.",
}


def hint_for(code: int | None, subcode: int | None = None, details: str | None = None) -> str:
    """An admin-readable explanation of a Graph error (pure)."""
    if code is None:
        return "Meta could not be reached or answered without an error code; check the network and try again."
    hint = _SUBCODE_HINTS.get((code, subcode or 0)) or _CODE_HINTS.get(code)
    if hint is None and 200 <= code <= 299:
        hint = _CODE_HINTS[10]
    if hint is None:
        hint = f"Meta refused the request with error {code}; see the message."
    if details and code == 100:
        hint = f"{hint} Meta says: {details}"
    return hint


def error_record(exc: GraphError, step: str) -> dict[str, Any]:
    """What goes into Phone.last_error for a Graph failure."""
    return {
        **exc.as_json(),
        "hint": hint_for(exc.code, exc.subcode, exc.details),
        "step": step,
        "at": utcnow().isoformat(),
    }


def enable_body(hostname: str, port: int) -> dict[str, Any]:
    return {
        "calling": {
            "status": "ENABLED",
            "srtp_key_exchange_protocol": "SDES",
            "sip": {"status": "ENABLED", "servers": [{"hostname": hostname, "port": port}]},
        }
    }


DISABLE_BODY: dict[str, Any] = {"calling": {"status": "DISABLED", "sip": {"status": "DISABLED"}}}
# Meta's documented way to get a new password: clear the servers, then enable again.
RESET_BODY: dict[str, Any] = {"calling": {"status": "DISABLED", "sip": {"status": "DISABLED", "servers": []}}}


@dataclass
class ReadBack:
    """Meta's settings without secrets, the password it holds for our app, and mismatches."""

    state: dict[str, Any]
    password: str | None
    problems: list[str] = field(default_factory=list)


def read_back(
    settings: dict[str, Any], *, hostname: str | None, port: int, want_enabled: bool, app_id: str | None = None
) -> ReadBack:
    """Compare Meta's settings with ours (pure). Passwords are removed from `state`."""
    calling = sub(settings, "calling")
    sip = sub(calling, "sip")
    servers = [s for s in sip.get("servers", []) if isinstance(s, dict)] if isinstance(sip.get("servers"), list) else []
    password = None
    clean_servers = []
    for server in servers:
        clean_servers.append({k: v for k, v in server.items() if k != "sip_user_password"})
    state = {**calling, "sip": {**sip, "servers": clean_servers}} if calling else {}
    problems: list[str] = []
    want = "ENABLED" if want_enabled else "DISABLED"
    if calling.get("status") != want:
        problems.append(f"Meta reports calling.status {calling.get('status')!r}, expected {want}")
    if sip.get("status") != want:
        problems.append(f"Meta reports calling.sip.status {sip.get('status')!r}, expected {want}")
    if want_enabled:
        ours = [s for s in servers if str(s.get("hostname", "")).lower() == (hostname or "").lower()]
        if not ours:
            held = ", ".join(str(s.get("hostname")) for s in servers) or "none"
            problems.append(f"Meta holds SIP server(s) {held}, expected {hostname}")
        else:
            server = ours[0]
            held_port = server.get("port", DEFAULT_SIP_PORT)
            if held_port != port:
                problems.append(f"Meta holds port {held_port} for {hostname}, expected {port}")
            if app_id and server.get("app_id") and str(server["app_id"]) != app_id:
                problems.append(
                    f"the SIP server was configured by app {server['app_id']}, not this account's app {app_id}"
                )
            password = server.get("sip_user_password") if isinstance(server.get("sip_user_password"), str) else None
            if not password:
                problems.append("Meta did not return sip_user_password for our SIP server")
        if len(servers) > 1:
            problems.append("Meta holds more than one SIP server; only one per number is supported")
        if calling.get("srtp_key_exchange_protocol") != "SDES":
            problems.append(
                f"Meta reports srtp_key_exchange_protocol {calling.get('srtp_key_exchange_protocol')!r}, expected SDES"
            )
    register_secret(password)
    return ReadBack(state, password, problems)


@dataclass
class CallingResult:
    phone_id: int
    ok: bool
    action: str
    state: dict[str, Any]
    problems: list[str]
    error: dict[str, Any] | None


class CallingFailed(Exception):
    """Meta refused or the read-back did not match; the error is stored on the phone."""

    def __init__(self, result: CallingResult) -> None:
        self.result = result
        super().__init__((result.error or {}).get("message", "calling update failed"))


async def find_phone(session: AsyncSession, ref: str | int) -> Phone:
    """A phone by database id (an int), or by a string: E.164 number (with or without +),
    Meta phone number id, or a short database id."""
    if isinstance(ref, int):
        phone = await session.get(Phone, ref)
        if phone is None:
            raise FieldError("id", f"no phone with id {ref}", 404)
        return phone
    text = ref.strip()
    conditions = [Phone.phone_number_id == text, Phone.number == ("+" + text.lstrip("+"))]
    if text.isdigit() and len(text) < 10:
        conditions.append(Phone.id == int(text))
    phones = (await session.scalars(select(Phone).where(or_(*conditions)))).all()
    if not phones:
        raise FieldError("phone", f"no phone with id, number or phone_number_id {text!r}", 404)
    if len(phones) > 1:
        raise FieldError("phone", f"{text!r} matches several phones; use the number in E.164 form", 409)
    return phones[0]


class CallingService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], graph: GraphClient) -> None:
        self._sessions = sessions
        self._graph = graph

    async def run(self, ref: str | int, action: str) -> CallingResult:
        """`enable`, `disable`, `show` or `reset-password`; raises CallingFailed on a Meta error."""
        actions = {"enable": self._enable, "disable": self._disable, "show": self._show, "reset-password": self._reset}
        if action not in actions:
            raise FieldError("action", f"must be one of {', '.join(actions)}")
        async with self._sessions() as session:
            phone = await find_phone(session, ref)
            account = await session.get(WabaAccount, phone.waba_account_id)
            assert account is not None  # foreign key
            target = _Target(
                phone.id,
                phone.phone_number_id,
                phone.sip_hostname,
                phone.sip_port,
                account.access_token,
                account.app_id,
            )
        return await actions[action](target)

    async def _enable(self, t: _Target) -> CallingResult:
        if not t.hostname:
            raise FieldError("sip_hostname", "set the SIP hostname of this phone before enabling calling")
        await self._update(t, "enable", enable_body(t.hostname, t.port), "update settings")
        return await self._verify(t, "enable", want_enabled=True)

    async def _disable(self, t: _Target) -> CallingResult:
        await self._update(t, "disable", DISABLE_BODY, "update settings")
        return await self._verify(t, "disable", want_enabled=False)

    async def _reset(self, t: _Target) -> CallingResult:
        await self._update(t, "reset-password", RESET_BODY, "clear SIP servers")
        return await self._enable(t)

    async def _read(self, t: _Target, action: str, step: str) -> dict[str, Any]:
        """Meta's settings with the SIP password; a refusal is stored and raised as CallingFailed."""
        try:
            return await self._graph.get(f"{t.pnid}/settings", t.token, {"include_sip_credentials": "true"})
        except GraphError as exc:
            await self._failed(t, action, exc, step)

    async def _update(self, t: _Target, action: str, body: dict[str, Any], step: str) -> None:
        """POST the settings (safe to repeat); a refusal is stored and raised as CallingFailed."""
        try:
            await self._graph.post(f"{t.pnid}/settings", t.token, body, idempotent=True)
        except GraphError as exc:
            await self._failed(t, action, exc, step)

    async def _show(self, t: _Target) -> CallingResult:
        settings = await self._read(t, "show", "read settings")
        calling = sub(settings, "calling")
        enabled = calling.get("status") == "ENABLED"
        back = read_back(settings, hostname=t.hostname, port=t.port, want_enabled=enabled, app_id=t.app_id)
        async with self._sessions() as session, session.begin():
            phone = await session.get(Phone, t.phone_id)
            assert phone is not None
            phone.calling_state = {**back.state, "checked_at": utcnow().isoformat(), "problems": back.problems}
            phone.calling_enabled = enabled
            phone.sip_enabled = (calling.get("sip") or {}).get("status") == "ENABLED"
            if back.password and back.password != phone.sip_user_password:
                phone.sip_user_password = back.password
        return CallingResult(t.phone_id, not back.problems, "show", back.state, back.problems, None)

    async def _verify(self, t: _Target, action: str, *, want_enabled: bool) -> CallingResult:
        settings = await self._read(t, action, "read back")
        back = read_back(settings, hostname=t.hostname, port=t.port, want_enabled=want_enabled, app_id=t.app_id)
        error = None
        if back.problems:
            error = {
                "code": None,
                "subcode": None,
                "type": None,
                "fbtrace_id": None,
                "http_status": None,
                "message": "; ".join(back.problems),
                "details": None,
                "step": "read back",
                "at": utcnow().isoformat(),
                "hint": "Meta accepted the change but does not hold our settings; run `thoth-pbx calling show` and "
                "compare, then enable again.",
            }
        async with self._sessions() as session, session.begin():
            phone = await session.get(Phone, t.phone_id)
            assert phone is not None
            phone.calling_state = {**back.state, "checked_at": utcnow().isoformat(), "problems": back.problems}
            phone.last_error = error
            if not back.problems:
                phone.calling_enabled = want_enabled
                phone.sip_enabled = want_enabled
            if back.password and back.password != phone.sip_user_password:
                phone.sip_user_password = back.password
        log.info(
            "calling settings applied" if not error else "calling settings read-back mismatch",
            extra={"phone_id": t.phone_id, "action": action, "problems": back.problems},
        )
        result = CallingResult(t.phone_id, error is None, action, back.state, back.problems, error)
        if error:
            raise CallingFailed(result)
        return result

    async def _failed(self, t: _Target, action: str, exc: GraphError, step: str) -> NoReturn:
        record = error_record(exc, step)
        async with self._sessions() as session, session.begin():
            phone = await session.get(Phone, t.phone_id)
            assert phone is not None
            phone.last_error = record
        log.warning(
            "calling settings refused by Meta",
            extra={
                "phone_id": t.phone_id,
                "action": action,
                "code": exc.code,
                "subcode": exc.subcode,
                "fbtrace_id": exc.fbtrace_id,
            },
        )
        raise CallingFailed(CallingResult(t.phone_id, False, action, {}, [], record))


@dataclass(frozen=True)
class _Target:
    phone_id: int
    pnid: str
    hostname: str | None
    port: int
    token: str
    app_id: str | None
