"""Access-token health: when does a WABA token expire, is it still valid, has it the scopes.

Graph's `GET /debug_token?input_token=T` answers `{"data": {app_id, type, is_valid,
expires_at (0 = never), scopes, error?}}`. It is called with the app access token
`APP_ID|APP_SECRET` when the account has both (the documented way), else with the token
itself. The answer (never the token) is kept in `WabaAccount.token_info`, the expiry in
`token_expires_at`, and the admin sees a warning days before a temporary token dies.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.meta.graph import GraphAuthError, GraphClient, GraphError
from thoth_pbx.core.shapes import sub, sub_or_none
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory.models import WabaAccount
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

REQUIRED_SCOPES = ("whatsapp_business_management", "whatsapp_business_messaging")
WARN_BEFORE = dt.timedelta(days=7)


@dataclass
class TokenInfo:
    is_valid: bool
    expires_at: dt.datetime | None  # None: never expires
    type: str | None = None
    app_id: str | None = None
    scopes: list[str] = field(default_factory=list)
    error: str | None = None
    checked_with: str = "token"  # "app" when the app access token was used

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["expires_at"] = self.expires_at.isoformat() if self.expires_at else None
        out["missing_scopes"] = [s for s in REQUIRED_SCOPES if s not in self.scopes] if self.is_valid else []
        return out


def parse_debug_token(body: dict[str, Any], checked_with: str = "token") -> TokenInfo:
    """debug_token's `data` -> TokenInfo (pure)."""
    data = sub(body, "data")
    expires = data.get("expires_at")
    expires_at = (
        dt.datetime.fromtimestamp(expires, dt.UTC)
        if isinstance(expires, int) and not isinstance(expires, bool) and expires > 0
        else None
    )
    error = sub_or_none(data, "error")
    scopes = [s for s in data.get("scopes", []) if isinstance(s, str)] if isinstance(data.get("scopes"), list) else []
    return TokenInfo(
        is_valid=data.get("is_valid") is True,
        expires_at=expires_at,
        type=data.get("type") if isinstance(data.get("type"), str) else None,
        app_id=str(data["app_id"]) if data.get("app_id") is not None else None,
        scopes=scopes,
        error=(f"{error.get('code')}: {error.get('message')}" if error else None),
        checked_with=checked_with,
    )


def token_warning(
    expires_at: dt.datetime | None,
    now: dt.datetime,
    info: dict[str, Any] | None = None,
    warn_before: dt.timedelta = WARN_BEFORE,
) -> str | None:
    """What the admin should be told about the token, or None when all is well (pure)."""
    if info and info.get("is_valid") is False:
        return (
            f"the access token is not valid ({info.get('error') or 'debug_token says is_valid=false'}); paste a new one"
        )
    if expires_at is not None:
        left = expires_at - now
        if left <= dt.timedelta(0):
            return f"the access token expired at {expires_at.isoformat()}; paste a new one"
        if left <= warn_before:
            hours = int(left.total_seconds() // 3600)
            when = f"{hours // 24} day(s)" if hours >= 24 else f"{hours} hour(s)"
            return f"the access token expires in {when} ({expires_at.isoformat()}); replace it with a permanent system-user token"
    if info and info.get("missing_scopes"):
        return f"the access token lacks the permission(s) {', '.join(info['missing_scopes'])}"
    return None


async def debug_token(graph: GraphClient, token: str, app_id: str | None, app_secret: str | None) -> TokenInfo:
    if app_id and app_secret:
        body = await graph.get("debug_token", f"{app_id}|{app_secret}", {"input_token": token})
        return parse_debug_token(body, "app")
    body = await graph.get("debug_token", token, {"input_token": token})
    return parse_debug_token(body, "token")


class TokenChecker:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], graph: GraphClient) -> None:
        self._sessions = sessions
        self._graph = graph

    async def check(self, account_id: int) -> dict[str, Any]:
        """Ask Graph about the account's token; store expiry and verdict; return the verdict."""
        async with self._sessions() as session:
            account = await session.get(WabaAccount, account_id)
            if account is None:
                raise FieldError("id", f"no waba with id {account_id}", 404)
            token, app_id, app_secret = account.access_token, account.app_id, account.app_secret
        try:
            info = await debug_token(self._graph, token, app_id, app_secret)
            verdict = info.as_json()
        except GraphError as exc:
            # An auth error on debug_token with the token itself means the token is dead; with
            # the app credentials it may be the app secret that is wrong, so: unknown.
            dead = isinstance(exc, GraphAuthError) and not (app_id and app_secret)
            verdict = {
                "is_valid": False if dead else None,
                "error": str(exc),
                "graph_error": exc.as_json(),
                "expires_at": None,
                "checked_with": "app" if app_id and app_secret else "token",
            }
            info = None
        async with self._sessions() as session, session.begin():
            account = await session.get(WabaAccount, account_id)
            if account is None:
                raise FieldError("id", f"no waba with id {account_id}", 404)
            account.token_checked_at = utcnow()
            account.token_info = verdict
            if info is not None:
                account.token_expires_at = info.expires_at
        verdict["warning"] = token_warning(info.expires_at if info else None, utcnow(), verdict)
        log.log(
            logging.WARNING if verdict["warning"] else logging.INFO,
            "access token checked",
            extra={
                "waba_account_id": account_id,
                "is_valid": verdict.get("is_valid"),
                "expires_at": verdict.get("expires_at"),
                "warning": verdict["warning"],
            },
        )
        return verdict

    async def check_all(self) -> None:
        async with self._sessions() as session:
            ids = (await session.scalars(select(WabaAccount.id))).all()
        for account_id in ids:
            try:
                await self.check(account_id)
            except Exception:
                log.exception("access token check failed", extra={"waba_account_id": account_id})
