"""WABA accounts: list, add, edit; the verify token and callback URL to copy into Meta's
dashboard, rotation, the token check. Secrets are never put back into a page: the form shows
them masked with an empty "replace" field."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from thoth_pbx.core.http import object_id
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory.service import PHONES, WABAS
from thoth_pbx.web.panel import forms
from thoth_pbx.web.panel.auth import PANEL, SESSION
from thoth_pbx.web.panel.deps import PanelDeps
from thoth_pbx.web.panel.render import N_, Pages
from thoth_pbx.web.panel.views_dashboard import token_state

PLAIN = ("name", "waba_id", "app_id", "token_expires_at")
SECRETS = ("access_token", "app_secret")
SHOWN = PLAIN + SECRETS


def waba_routes(deps: PanelDeps, pages: Pages) -> list[web.RouteDef]:
    base = f"{PANEL}/wabas"

    async def list_(request: web.Request) -> web.Response:
        wabas = [{**w, "token_state": token_state(w)} for w in await deps.directory.list(WABAS)]
        return pages.render(request, "wabas.html", {"nav": "wabas", "wabas": wabas})

    def form_page(
        request: web.Request, waba: dict[str, Any] | None, values: dict[str, Any], exc: FieldError | None = None
    ) -> web.Response:
        errors, form_error = forms.errors_of(exc.field, exc.message, SHOWN) if exc else ({}, None)
        context = {"nav": "wabas", "waba": waba, "values": values, "errors": errors, "form_error": form_error}
        phones = values.pop("_phones", [])
        return pages.render(request, "waba.html", {**context, "phones": phones}, status=exc.status if exc else 200)

    async def new(request: web.Request) -> web.Response:
        return form_page(request, None, {})

    async def create(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        try:
            created = await deps.directory.create(WABAS, forms.filled(form, SHOWN))
        except FieldError as exc:
            return form_page(request, None, {n: forms.text(form, n) for n in PLAIN}, exc)
        pages.flash(
            request, N_("WABA account added. Copy the callback URL and the verify token into Meta's app dashboard.")
        )
        raise web.HTTPSeeOther(f"{base}/{created['id']}")

    async def _view(waba_id: int) -> dict[str, Any]:
        waba = await deps.directory.get(WABAS, waba_id)  # verify token and api-key in full: to copy
        return {**waba, "token_state": token_state(waba)}

    async def _phones(waba_id: int) -> list[dict[str, Any]]:
        return [p for p in await deps.directory.list(PHONES) if p["waba_account_id"] == waba_id]

    async def show(request: web.Request) -> web.Response:
        waba = await _view(object_id(request))
        return form_page(request, waba, {**{n: waba[n] or "" for n in PLAIN}, "_phones": await _phones(waba["id"])})

    async def update(request: web.Request) -> web.StreamResponse:
        waba_id = object_id(request)
        form = await request.post()
        body = {**forms.as_typed(form, PLAIN), **forms.filled(form, SECRETS)}
        try:
            await deps.directory.update(WABAS, waba_id, body)
        except FieldError as exc:
            waba = await _view(waba_id)
            return form_page(
                request, waba, {**{n: forms.text(form, n) for n in PLAIN}, "_phones": await _phones(waba_id)}, exc
            )
        pages.flash(request, N_("Saved."))
        raise web.HTTPSeeOther(f"{base}/{waba_id}")

    async def rotate(request: web.Request) -> web.StreamResponse:
        waba_id = object_id(request)
        form = await request.post()
        await deps.directory.rotate_waba_secret(waba_id, forms.text(form, "secret"))
        _ = pages.translator(request)
        request[SESSION].flash(
            _("A new value was issued; the old one stopped working. Paste the new one into Meta's dashboard.")
        )
        raise web.HTTPSeeOther(f"{base}/{waba_id}")

    async def check_token(request: web.Request) -> web.StreamResponse:
        waba_id = object_id(request)
        verdict = await deps.meta.tokens.check(waba_id)
        _ = pages.translator(request)
        session = request[SESSION]
        if verdict.get("warning"):
            session.flash(verdict["warning"], "error")
        elif verdict.get("is_valid"):
            session.flash(_("The access token is valid."))
        else:
            session.flash(_("The token could not be checked: {error}").format(error=verdict.get("error")), "error")
        raise web.HTTPSeeOther(f"{base}/{waba_id}")

    async def delete(request: web.Request) -> web.StreamResponse:
        waba_id = object_id(request)
        session = request[SESSION]
        try:
            await deps.directory.delete(WABAS, waba_id)
        except FieldError as exc:
            session.flash(exc.message, "error")
            raise web.HTTPSeeOther(f"{base}/{waba_id}") from None
        pages.flash(request, N_("Deleted."))
        raise web.HTTPSeeOther(base)

    return [
        web.get(base, list_),
        web.get(base + "/new", new),
        web.post(base + "/new", create),
        web.get(base + "/{id}", show),
        web.post(base + "/{id}", update),
        web.post(base + "/{id}/rotate", rotate),
        web.post(base + "/{id}/check-token", check_token),
        web.post(base + "/{id}/delete", delete),
    ]
