"""Phones: list, add, edit; Calling + SIP at Meta with the Error field (Meta's code, message and
our hint) beside the switches; the Open Line connector; whether the trunk needs an apply."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from thoth_pbx.core.http import object_id
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory.service import INSTANCES, PHONES, WABAS
from thoth_pbx.features.trunk.calling import DEFAULT_SIP_PORT, CallingFailed
from thoth_pbx.web.panel import forms
from thoth_pbx.web.panel.auth import PANEL, SESSION
from thoth_pbx.web.panel.deps import PanelDeps
from thoth_pbx.web.panel.render import N_, Pages

TEXTS = ("number", "phone_number_id", "waba_account_id", "app_instance_id", "sip_hostname", "sip_port")
SHOWN = (*TEXTS, "sms_service", "asterisk", "action")
ACTIONS = ("enable", "disable", "show", "reset-password")


def phone_routes(deps: PanelDeps, pages: Pages) -> list[web.RouteDef]:
    base = f"{PANEL}/phones"
    # several Asterisk servers (settings [[asterisk]]): the form asks which one carries the number
    servers = [server.name for server in deps.settings.asterisks]
    several = len(servers) > 1

    async def choices() -> dict[str, Any]:
        wabas = await deps.directory.list(WABAS)
        instances = await deps.directory.list(INSTANCES)
        return {
            "waba_options": [(w["id"], w["name"]) for w in wabas],
            "portal_options": [(i["id"], i["domain"]) for i in instances],
            "asterisk_options": [(name, name) for name in servers] if several else [],
        }

    async def list_(request: web.Request) -> web.Response:
        phones = await deps.directory.list(PHONES)
        wabas = {w["id"]: w["name"] for w in await deps.directory.list(WABAS)}
        return pages.render(request, "phones.html", {"nav": "phones", "phones": phones, "wabas": wabas})

    async def page(
        request: web.Request, phone: dict[str, Any] | None, values: dict[str, Any], exc: FieldError | None = None
    ) -> web.Response:
        errors, form_error = forms.errors_of(exc.field, exc.message, SHOWN) if exc else ({}, None)
        connector = await deps.messaging.view(phone["id"]) if phone else None
        context = {
            "nav": "phones",
            "phone": phone,
            "values": values,
            "errors": errors,
            "form_error": form_error,
            "connector": connector,
            **await choices(),
        }
        return pages.render(request, "phone.html", context, status=exc.status if exc else 200)

    def body_of(form: forms.Form, *, create: bool) -> dict[str, Any]:
        body = forms.filled(form, TEXTS) if create else forms.as_typed(form, TEXTS)
        if not create and body.get("sip_port") is None:
            body.pop("sip_port")  # not nullable: an emptied port keeps the stored one
        body["sms_service"] = forms.checkbox(form, "sms_service")
        if several and (forms.text(form, "asterisk") or not create):
            body["asterisk"] = forms.text(form, "asterisk") or None
        return body

    def typed(form: forms.Form) -> dict[str, Any]:
        return {
            **{n: forms.text(form, n) for n in TEXTS},
            "sms_service": forms.checkbox(form, "sms_service"),
            "asterisk": forms.text(form, "asterisk"),
        }

    async def new(request: web.Request) -> web.Response:
        return await page(request, None, {"sip_port": DEFAULT_SIP_PORT})

    async def create(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        try:
            created = await deps.directory.create(PHONES, body_of(form, create=True))
        except FieldError as exc:
            return await page(request, None, typed(form), exc)
        pages.flash(request, N_("Phone added."))
        raise web.HTTPSeeOther(f"{base}/{created['id']}")

    def stored(phone: dict[str, Any]) -> dict[str, Any]:
        return {n: "" if phone.get(n) is None else phone[n] for n in TEXTS} | {
            "sms_service": phone["sms_service"],
            "asterisk": phone["asterisk"],
        }

    async def show(request: web.Request) -> web.Response:
        phone = await deps.directory.get(PHONES, object_id(request))
        return await page(request, phone, stored(phone))

    async def update(request: web.Request) -> web.StreamResponse:
        phone_id = object_id(request)
        form = await request.post()
        try:
            await deps.directory.update(PHONES, phone_id, body_of(form, create=False))
        except FieldError as exc:
            return await page(request, await deps.directory.get(PHONES, phone_id), typed(form), exc)
        pages.flash(request, N_("Saved."))
        raise web.HTTPSeeOther(f"{base}/{phone_id}")

    async def calling(request: web.Request) -> web.StreamResponse:
        phone_id = object_id(request)
        phone = await deps.directory.get(PHONES, phone_id)  # 404 before talking to Meta
        form = await request.post()
        _ = pages.translator(request)
        session = request[SESSION]
        try:
            result = await deps.calling.run(phone_id, forms.text(form, "action"))
        except FieldError as exc:
            return await page(request, phone, stored(phone), exc)
        except CallingFailed:
            session.flash(_("Meta refused the change: see the Error field."), "error")
            raise web.HTTPSeeOther(f"{base}/{phone_id}#calling") from None
        if result.problems:
            session.flash(
                _("Meta's settings differ from ours: {problems}").format(problems="; ".join(result.problems)), "error"
            )
        else:
            session.flash(_("Done: Meta's settings were read back and match."))
        raise web.HTTPSeeOther(f"{base}/{phone_id}#calling")

    async def repair(request: web.Request) -> web.StreamResponse:
        phone_id = object_id(request)
        await deps.messaging.repair(phone_id)
        pages.flash(request, N_("The Open Line is being set up again."))
        raise web.HTTPSeeOther(f"{base}/{phone_id}")

    async def delete(request: web.Request) -> web.StreamResponse:
        await deps.directory.delete(PHONES, object_id(request))
        pages.flash(request, N_("Deleted."))
        raise web.HTTPSeeOther(base)

    return [
        web.get(base, list_),
        web.get(base + "/new", new),
        web.post(base + "/new", create),
        web.get(base + "/{id}", show),
        web.post(base + "/{id}", update),
        web.post(base + "/{id}/calling", calling),
        web.post(base + "/{id}/repair", repair),
        web.post(base + "/{id}/delete", delete),
    ]
