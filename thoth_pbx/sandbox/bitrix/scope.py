"""The `scope` method: which scopes the caller (the application, or an incoming webhook) holds.

https://dev.1c-bitrix.ru/rest_help/general/scope.php: callable by everyone (no scope needed);
without parameters it answers the permissions available to this application, e.g.
`{"result": ["entity", "user", "log", "department"]}`; with `full=true` the full list of
permissions the portal knows (the scopes table of premissions_scope.php, the ones in use here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from thoth_pbx.sandbox.bitrix.methods import _flag, method
from thoth_pbx.sandbox.bitrix.state import Portal

if TYPE_CHECKING:
    from thoth_pbx.sandbox.bitrix.server import BitrixSimulator

# rest_sum/premissions_scope.php (abridged to the scopes an integration like ours meets)
ALL_SCOPES = (
    "bizproc",
    "calendar",
    "call",
    "contact_center",
    "crm",
    "department",
    "disk",
    "entity",
    "im",
    "imbot",
    "imconnector",
    "imopenlines",
    "intranet",
    "log",
    "messageservice",
    "placement",
    "task",
    "telephony",
    "user",
)


@method("scope", "basic")
def scope(sim: BitrixSimulator, portal: Portal, params: dict[str, Any]) -> Any:
    if _flag(params.get("full"), False):
        return list(ALL_SCOPES)
    caller = sim.current_caller
    held = caller.scope if caller is not None else portal.scope
    return [s for s in dict.fromkeys(held.replace(" ", ",").split(",")) if s]
