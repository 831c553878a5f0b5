"""Bitrix24 checks per installed portal: the app's scopes and the external line of each number.

`scope` (no parameters) answers the scopes granted to the calling app, e.g.
`{"result": ["crm", "telephony", ...]}` (https://dev.1c-bitrix.ru/rest_help/general/scope.php);
`telephony.externalLine.get` lists the app's lines (bitrix24-rest fact sheet §1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thoth_pbx.clients.bitrix.telephony import line_number_for
from thoth_pbx.features.doctor.verdicts import Verdict, fail, ok

REQUIRED_SCOPES = ("telephony", "imconnector", "imopenlines", "messageservice", "crm", "user")
REINSTALL = (
    "in Bitrix24: Developer resources > your local application > add the missing scope(s), save, "
    "then reinstall (open) the application so the portal grants them"
)


def scope_verdict(result: Any, portal: str) -> Verdict:
    check = "bitrix.scopes"
    granted = {str(s).strip() for s in result} if isinstance(result, list) else set()
    missing = [s for s in REQUIRED_SCOPES if s not in granted]
    if missing:
        return fail(check, f"the application lacks the scope(s) {', '.join(missing)}", REINSTALL, portal)
    return ok(check, f"the application has {', '.join(REQUIRED_SCOPES)}", portal)


def line_verdicts(lines: Any, numbers: Sequence[str], portal: str) -> list[Verdict]:
    check = "bitrix.external_line"
    have = {str(line.get("NUMBER")) for line in lines if isinstance(line, dict)} if isinstance(lines, list) else set()
    out = []
    for number in numbers:
        wanted = line_number_for(number)
        if wanted in have:
            out.append(ok(check, f"external line {wanted} exists", f"{portal} {number}"))
        else:
            out.append(
                fail(
                    check,
                    f"the portal has no external line {wanted}: calls of {number} cannot be logged as ours",
                    "link the number to the portal again through the admin API (it adds the line), "
                    "or `telephony.externalLine.add` NUMBER=" + wanted,
                    f"{portal} {number}",
                )
            )
    return out


def error_verdict(check: str, exc: BaseException, portal: str) -> Verdict:
    return fail(
        check,
        f"the portal refused or could not be reached: {exc}",
        "check the application is installed and active on the portal (reinstall it if its tokens were revoked)",
        portal,
    )
