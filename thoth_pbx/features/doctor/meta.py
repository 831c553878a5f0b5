"""Meta checks: each phone's Calling + SIP settings against our trunk, the app's webhook
subscription, each token's validity and permissions.

Facts: the Meta fact sheet §1 (`GET /{PHONE_NUMBER_ID}/settings?include_sip_credentials=true`;
`srtp_key_exchange_protocol` is DTLS unless set, and GET omits it then), the webhooks pages:
`GET /{WABA_ID}/subscribed_apps` answers `{"data": [{"whatsapp_business_api_data": {"id",
"link", "name"}}]}` (which apps get the WABA's webhooks; no fields), and the app's fields come
from `GET /{APP_ID}/subscriptions` with the app access token (`{"data": [{"object",
"callback_url", "active", "fields": [{"name", "version"}]}]}`,
https://developers.facebook.com/docs/graph-api/reference/app/subscriptions/ and
https://developers.facebook.com/documentation/business-messaging/whatsapp/solution-providers/manage-webhooks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from thoth_pbx.features.doctor.verdicts import Verdict, cannot, fail, ok, warn

DEFAULT_PORT = 5061  # Meta's default when a server has no port
WEBHOOK_FIELDS = ("messages", "calls")
WABA_OBJECT = "whatsapp_business_account"


@dataclass(frozen=True)
class PhoneFacts:
    """What we hold for one number (the directory's Phone row, without anything else)."""

    number: str
    sip_hostname: str | None
    sip_port: int
    sip_password: str | None = field(default=None, repr=False)


def _sub(doc: Any, key: str) -> dict[str, Any]:
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, dict) else {}


def phone_verdicts(
    phone: PhoneFacts, settings: Mapping[str, Any], media_encryption: str | None, bind_port: int
) -> list[Verdict]:
    """Meta's settings of one number against what our trunk and our store hold (pure)."""
    who = phone.number
    calling = _sub(settings, "calling")
    sip = _sub(calling, "sip")
    enable = f"`thoth-pbx calling enable {who}`"
    out: list[Verdict] = []
    if calling.get("status") != "ENABLED" or sip.get("status") != "ENABLED":
        out.append(
            fail(
                "meta.calling",
                f"Meta reports calling {calling.get('status')!r} and SIP {sip.get('status')!r}: Meta sends no calls to SIP",
                enable,
                who,
            )
        )
        return out
    out.append(ok("meta.calling", "calling and SIP are enabled at Meta", who))
    # SDES vs DTLS: Meta defaults to DTLS and omits the field until it was set
    theirs = str(calling.get("srtp_key_exchange_protocol") or "DTLS").upper()
    ours = (media_encryption or "no").upper()
    if ours == "SDES" and theirs != "SDES":
        out.append(
            fail(
                "meta.srtp",
                f"Meta uses {theirs} key exchange, our trunk SDES: Meta offers ICE+DTLS, Asterisk answers SDES, no audio",
                f"{enable} (it sets srtp_key_exchange_protocol SDES)",
                who,
            )
        )
    elif ours == "DTLS" and theirs != "DTLS":
        out.append(
            fail(
                "meta.srtp",
                f"Meta uses {theirs}, our trunk DTLS",
                "set the trunk's media_encryption to sdes (thoth-pbx's supported mode) and `thoth-pbx pbx apply`",
                who,
            )
        )
    elif ours not in ("SDES", "DTLS"):
        out.append(
            fail(
                "meta.srtp",
                f"our trunk's media_encryption is {media_encryption!r}: Meta only sends encrypted media",
                "set the trunk's media_encryption to sdes and `thoth-pbx pbx apply`",
                who,
            )
        )
    else:
        out.append(ok("meta.srtp", f"Meta and our trunk both use {theirs}", who))
    servers = [s for s in sip.get("servers", []) if isinstance(s, dict)] if isinstance(sip.get("servers"), list) else []
    host = (phone.sip_hostname or "").lower()
    ours_at_meta = [s for s in servers if str(s.get("hostname", "")).lower() == host] if host else []
    if not phone.sip_hostname:
        out.append(
            fail("meta.hostname", "the phone has no sip_hostname", "set sip_hostname on the phone, then " + enable, who)
        )
        return out
    if not ours_at_meta:
        held = ", ".join(str(s.get("hostname")) for s in servers) or "none"
        out.append(
            fail(
                "meta.hostname",
                f"Meta sends calls to {held}, our phone says {phone.sip_hostname}",
                enable,
                who,
            )
        )
        return out
    out.append(ok("meta.hostname", f"Meta sends calls to {phone.sip_hostname}", who))
    server = ours_at_meta[0]
    port = server.get("port", DEFAULT_PORT)
    if port != phone.sip_port:
        out.append(fail("meta.port", f"Meta dials port {port}, our phone says {phone.sip_port}", enable, who))
    elif port != bind_port:
        out.append(
            warn(
                "meta.port",
                f"Meta dials port {port} but the transport listens on {bind_port}",
                f"fine only if your router forwards {port} to {bind_port}; otherwise set bind_port or sip_port to match",
                who,
            )
        )
    else:
        out.append(ok("meta.port", f"Meta dials port {port}, where the transport listens", who))
    theirs_pw = server.get("sip_user_password")
    if not isinstance(theirs_pw, str) or not theirs_pw:
        out.append(
            fail(
                "meta.password",
                "Meta returned no sip_user_password for our SIP server (was it set up by another app?)",
                f"`thoth-pbx calling reset-password {who}` with this WABA's token",
                who,
            )
        )
    elif not phone.sip_password:
        out.append(
            fail(
                "meta.password",
                "we hold no SIP password for this number: digest auth with Meta fails",
                f"`thoth-pbx calling show {who}` (stores Meta's password), then `thoth-pbx pbx apply`",
                who,
            )
        )
    elif theirs_pw != phone.sip_password:
        out.append(
            fail(
                "meta.password",
                "the SIP password we hold differs from Meta's: digest auth fails both ways",
                f"`thoth-pbx calling show {who}` (stores Meta's password), then `thoth-pbx pbx apply`",
                who,
            )
        )
    else:
        out.append(ok("meta.password", "the SIP password we hold is Meta's", who))
    return out


def subscribed_apps_verdict(body: Mapping[str, Any], app_id: str | None, waba: str) -> Verdict:
    check = "meta.webhook_app"
    data = body.get("data") if isinstance(body.get("data"), list) else []
    apps = [_sub(item, "whatsapp_business_api_data") for item in data or []]
    ids = [str(a.get("id")) for a in apps if a.get("id") is not None]
    fix = "subscribe the app to the WABA: `POST /{WABA_ID}/subscribed_apps` with this WABA's token (or in WhatsApp Manager)"
    if not ids:
        return fail(
            check, "no app is subscribed to this WABA: Meta sends its webhooks (messages, calls) nowhere", fix, waba
        )
    if app_id is None:
        return warn(
            check,
            f"app(s) {', '.join(ids)} are subscribed to this WABA, but the account has no app_id to tell if one is ours",
            "set app_id (and app_secret) on the WABA account",
            waba,
        )
    if app_id not in ids:
        return fail(check, f"our app {app_id} is not subscribed to this WABA (subscribed: {', '.join(ids)})", fix, waba)
    return ok(check, f"our app {app_id} is subscribed to this WABA", waba)


def webhook_fields_verdict(body: Mapping[str, Any], app_id: str, waba: str) -> Verdict:
    check = "meta.webhook_fields"
    data = body.get("data") if isinstance(body.get("data"), list) else []
    subs = [s for s in data or [] if isinstance(s, dict) and s.get("object") == WABA_OBJECT]
    fix = (
        f"App Dashboard > WhatsApp > Configuration > Webhook fields: subscribe {', '.join(WEBHOOK_FIELDS)} "
        f"(or `POST /{app_id}/subscriptions` with object={WABA_OBJECT})"
    )
    if not subs:
        return fail(check, f"app {app_id} has no webhook subscription for {WABA_OBJECT}", fix, waba)
    sub = subs[0]
    names = {str(f.get("name")) for f in sub.get("fields", []) if isinstance(f, dict)}
    missing = [f for f in WEBHOOK_FIELDS if f not in names]
    if missing:
        return fail(
            check,
            f"app {app_id} is not subscribed to the webhook field(s) {', '.join(missing)}"
            + (
                ": no call events, and Meta refuses to enable calling without SIP (138018)"
                if "calls" in missing
                else ""
            ),
            fix,
            waba,
        )
    if sub.get("active") is False:
        return fail(check, f"app {app_id}'s {WABA_OBJECT} subscription is not active", fix, waba)
    return ok(check, f"app {app_id} gets the {', '.join(WEBHOOK_FIELDS)} webhook fields", waba)


def fields_uncheckable(waba: str) -> Verdict:
    return cannot(
        "meta.webhook_fields",
        "the app's webhook fields can only be read with the app access token (app_id and app_secret), "
        "which this account lacks",
        "set app_id and app_secret on the WABA account, or check App Dashboard > WhatsApp > Configuration",
        waba,
    )


def token_verdict(verdict: Mapping[str, Any], waba: str) -> Verdict:
    """The directory's debug_token verdict as a doctor verdict. `GET /debug_token?input_token=`
    answers is_valid, expires_at and scopes; Meta documents it with an app access token (or an
    app developer's token): https://developers.facebook.com/docs/graph-api/reference/debug_token."""
    check = "meta.token"
    fix = "create a permanent system-user token with whatsapp_business_management and whatsapp_business_messaging, and store it on the WABA account"
    if verdict.get("is_valid") is None:
        return cannot(
            check,
            f"debug_token could not judge the token: {verdict.get('error')}",
            "check app_id/app_secret of the account",
            waba,
        )
    if verdict.get("is_valid") is False:
        return fail(check, str(verdict.get("warning") or f"the token is not valid ({verdict.get('error')})"), fix, waba)
    missing = verdict.get("missing_scopes") or []
    if missing:
        return fail(check, f"the token lacks the permission(s) {', '.join(missing)}", fix, waba)
    if verdict.get("warning"):
        return warn(check, str(verdict["warning"]), fix, waba)
    scopes = ", ".join(s for s in verdict.get("scopes") or [] if s.startswith("whatsapp"))
    how = (
        ""
        if verdict.get("checked_with") == "app"
        else " (asked with the token itself; Meta documents debug_token with the app access token: set app_secret)"
    )
    return ok(check, f"the token is valid with {scopes}{how}", waba)
