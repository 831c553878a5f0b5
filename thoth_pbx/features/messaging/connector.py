"""What our Open Lines connector is to Bitrix24, and how its status reads (pure).

Facts (../shared/reference/bitrix24-rest.md §2; apidocs.bitrix24.com/api-reference/imopenlines/
imconnector/): `imconnector.*` works only in an installed app's context (OAuth; a webhook gets
"Application context required"); the connector ID is `[a-z0-9_]`; `imconnector.register`
answers errors with HTTP 200 and `result: false`; `imconnector.activate` alone turns the tile
green; `imconnector.status` answers `{LINE, CONNECTOR, ERROR, CONFIGURED, STATUS}`."""

from __future__ import annotations

from typing import Any

CONNECTOR_ID = "thoth_whatsapp"
CONNECTOR_NAME = "WhatsApp (thoth-pbx)"
PLACEMENT_PATH = "/api/bitrix/connector"
# A WhatsApp-green speech bubble (imconnector.register ICON: DATA_IMAGE is a data: URI).
ICON = {
    "DATA_IMAGE": "data:image/svg+xml;charset=US-ASCII,%3Csvg%20xmlns%3D%22http%3A%2F%2Fwww.w3.org%2F2000%2Fsvg%22"
    "%20viewBox%3D%220%200%2070%2071%22%3E%3Cpath%20fill%3D%22%23FFF%22%20d%3D%22M35%2010C21%2010%2010%2021%2010%2035"
    "c0%205%201%209%204%2013l-3%2011%2011-3c4%202%208%203%2013%203%2014%200%2025-11%2025-25S49%2010%2035%2010z%22%2F%3E"
    "%3C%2Fsvg%3E",
    "COLOR": "#25D366",
    "SIZE": "100%",
    "POSITION": "center",
}
# Bound on the portal for the connector (the bridge handles ONIMCONNECTORMESSAGEADD; issue 12).
LINE_EVENTS = ("ONIMCONNECTORLINEDELETE", "ONIMCONNECTORSTATUSDELETE")


def line_name(number: str) -> str:
    """`THOTH_<number>`: the Open Line a WhatsApp number feeds, digits only (+14155550123 -> THOTH_14155550123)."""
    return "THOTH_" + "".join(ch for ch in number if ch.isascii() and ch.isdigit())


def register_params(public_url: str) -> dict[str, Any]:
    return {
        "ID": CONNECTOR_ID,
        "NAME": CONNECTOR_NAME,
        "ICON": ICON,
        "PLACEMENT_HANDLER": public_url.rstrip("/") + PLACEMENT_PATH,
    }


def register_error(result: Any) -> str | None:
    """imconnector.register's refusal (HTTP 200, `result: false`), or None when it registered."""
    if isinstance(result, dict) and result.get("result") is False:
        code = str(result.get("error") or "REGISTER_FAILED")
        description = str(result.get("error_description") or "")
        return f"{code}: {description}" if description else code
    return None


def state_of(status: Any) -> tuple[str, str | None]:
    """imconnector.status -> (green | yellow | red, reason)."""
    if not isinstance(status, dict):
        return "red", f"imconnector.status answered {status!r}"
    if _yes(status.get("ERROR")):
        return "red", "Bitrix24 reports an error on the connector (open the line's settings in the Contact Center)"
    if _yes(status.get("STATUS")) and _yes(status.get("CONFIGURED")):
        return "green", None
    if _yes(status.get("CONFIGURED")) or _yes(status.get("STATUS")):
        return "yellow", "the connector is configured but not active on the line"
    return "red", "the connector is not active on the line"


def _yes(value: Any) -> bool:
    return value is True or value in (1, "1", "Y", "y", "true")
