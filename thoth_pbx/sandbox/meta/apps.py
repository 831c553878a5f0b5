"""The simulated Meta's webhook subscriptions: which apps a WABA sends its webhooks to, and
which webhook fields an app subscribed to.

- `GET /{WABA_ID}/subscribed_apps` -> `{"data": [{"whatsapp_business_api_data": {"id", "link",
  "name"}}]}`; `POST` subscribes the token's app, `DELETE` unsubscribes it, both `{"success":
  true}`; a token with whatsapp_business_management that reaches the WABA
  (https://developers.facebook.com/documentation/business-messaging/whatsapp/solution-providers/manage-webhooks,
  https://developers.facebook.com/docs/graph-api/reference/whats-app-business-account/subscribed_apps/).
- `GET /{APP_ID}/subscriptions` with the app access token `APP_ID|APP_SECRET` only ->
  `{"data": [{"object": "whatsapp_business_account", "callback_url", "active": true, "fields":
  [{"name", "version"}]}]}` (https://developers.facebook.com/docs/graph-api/reference/app/subscriptions/).

A WABA starts with no subscribed app, as on Meta until the business (or its solution partner)
subscribes one. The app's fields are `SimApp.subscribed_fields` (set with `PATCH
/_sandbox/apps/{app_id}`).
"""

from __future__ import annotations

import hmac
import time
import weakref
from typing import TYPE_CHECKING, Any

from aiohttp import web

from thoth_pbx.sandbox.meta.state import GRAPH_VERSION_RE, GraphFail, SimApp, SimToken, check_waba_reach

if TYPE_CHECKING:
    from thoth_pbx.sandbox.meta.server import MetaSimulator

WABA_OBJECT = "whatsapp_business_account"

# simulator -> WABA id -> ids of the apps subscribed to it (kept beside the simulator's own state)
_SUBSCRIBED: weakref.WeakKeyDictionary[MetaSimulator, dict[str, list[str]]] = weakref.WeakKeyDictionary()


def subscribed(sim: MetaSimulator, waba_id: str) -> list[str]:
    """The ids of the apps subscribed to `waba_id` (a live list: tests may read it)."""
    return _SUBSCRIBED.setdefault(sim, {}).setdefault(waba_id, [])


def subscribe(sim: MetaSimulator, waba_id: str, app_id: str) -> None:
    """Seed a subscription, as `POST /{waba_id}/subscribed_apps` with a token of `app_id` would."""
    if app_id not in sim.apps:
        raise ValueError(f"unknown app {app_id}")
    apps = subscribed(sim, waba_id)
    if app_id not in apps:
        apps.append(app_id)


def routes(sim: MetaSimulator) -> list[web.RouteDef]:
    """Register before the simulator's catch-all Graph route."""

    async def waba_apps(request: web.Request) -> web.Response:
        token = _enter(sim, request)
        waba_id = request.match_info["waba_id"]
        known = any(p.waba_id == waba_id for p in sim.phones.values())
        check_waba_reach(token, waba_id, known=known, method=request.method)
        apps = subscribed(sim, waba_id)
        if request.method == "GET":
            data = [{"whatsapp_business_api_data": _app_data(sim.apps[a])} for a in apps if a in sim.apps]
            return web.json_response({"data": data})
        if request.method == "POST":
            if token.app_id not in apps:
                apps.append(token.app_id)
            return web.json_response({"success": True})
        if token.app_id in apps:
            apps.remove(token.app_id)
        return web.json_response({"success": True})

    async def app_subscriptions(request: web.Request) -> web.Response:
        _log(sim, request)
        app_id = request.match_info["app_id"]
        app = sim.apps.get(app_id)
        access = sim._token(request, None) or ""
        caller_id, _, secret = access.partition("|")
        if not access:
            raise GraphFail(104)
        if app is None:
            raise GraphFail(
                100,
                f"Unsupported get request. Object with ID '{app_id}' does not exist, cannot be loaded due to "
                "missing permissions, or does not support this operation.",
                subcode=33,
                type_="GraphMethodException",
            )
        caller = sim.apps.get(caller_id)
        if caller is None or not hmac.compare_digest(caller.app_secret, secret):
            if access in sim.tokens:  # a user or system-user token: the edge needs the app's own token
                raise GraphFail(15, "(#15) This method must be called with an app access_token.", http_status=400)
            raise GraphFail(190)
        if caller.app_id != app_id:
            raise GraphFail(10, details="an app access token can only read its own app's subscriptions")
        _fail_injected(sim, request)
        return web.json_response({"data": _subscriptions(app)})

    return [
        web.route("*", "/{version}/{waba_id}/subscribed_apps", waba_apps),
        web.get("/{version}/{app_id}/subscriptions", app_subscriptions),
    ]


def _log(sim: MetaSimulator, request: web.Request) -> None:
    version = request.match_info["version"]
    path = request.path.split("/", 2)[2] if request.path.count("/") >= 2 else ""
    sim.requests.append(
        {
            "method": request.method,
            "path": f"/{version}/{path}",
            "query": {k: v for k, v in request.query.items() if k != "access_token"},
            "json": None,
            "at": time.time(),
        }
    )
    if not GRAPH_VERSION_RE.match(version):
        raise GraphFail(2500, f"Unknown path components: /{version}/{path}", http_status=400)


def _fail_injected(sim: MetaSimulator, request: web.Request) -> None:
    rule = sim.take_failure(request.method, request.path.split("/", 2)[2])
    if rule is not None:
        raise GraphFail(
            rule.code,
            rule.message,
            subcode=rule.subcode,
            details=rule.details,
            http_status=rule.http_status,
            type_=rule.type,
        )


def _enter(sim: MetaSimulator, request: web.Request) -> SimToken:
    _log(sim, request)
    if request.method not in ("GET", "POST", "DELETE"):
        raise GraphFail(100, f"Unsupported {request.method.lower()} request.", type_="GraphMethodException")
    token = sim.authenticate(request, None)
    _fail_injected(sim, request)
    return token


def _app_data(app: SimApp) -> dict[str, Any]:
    return {"id": app.app_id, "link": f"https://www.facebook.com/games/?app_id={app.app_id}", "name": app.name}


def _subscriptions(app: SimApp) -> list[dict[str, Any]]:
    if not app.subscribed_fields:
        return []
    fields = [{"name": name, "version": app.webhook_version} for name in sorted(app.subscribed_fields)]
    return [{"object": WABA_OBJECT, "callback_url": app.callback_url, "active": True, "fields": fields}]
