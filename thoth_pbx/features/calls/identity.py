"""Who is calling: the caller of a WhatsApp call as Meta's INVITE describes them (pure, no I/O).

Meta's business-scoped user ids page ("SIP invites for user-initiated calls",
developers.facebook.com/docs/whatsapp/business-scoped-user-ids): the From user is the
caller's phone number (`+<digits>`) while Meta shares it, else their BSUID
(`US.13491208655302741918`); the INVITE carries `x-wa-meta-user-id` (the BSUID),
`x-wa-meta-user-name` (the username) and `x-wa-meta-user-country-code` when Meta has them.
Meta documents no header with the caller's phone number: a phone comes only in the From user.

The dialplan (dialplan/from-meta.conf.j2) hands the three headers to the Stasis app as
arguments 3-5, each emptied there when it holds a character outside its alphabet; here every
value is checked again against its exact shape, and what does not fit is rejected (named in
`rejected`, never stored or sent anywhere).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from thoth_pbx.features.calls.callflow import normalise_number
from thoth_pbx.features.customers import clean_bsuid

# Meta's username rules (business-scoped user ids page, "Business usernames"; user usernames
# follow the same): a-z, 0-9, period and underscore, 3-35 characters, at least one letter.
_USERNAME = re.compile(r"(?=[0-9._]*[A-Za-z])[A-Za-z0-9._]{3,35}")
_COUNTRY = re.compile(r"[A-Z]{2}")  # ISO 3166 alpha-2, as the BSUID's prefix

# Stasis arguments after the dialled number and the WACID, in this order (from-meta.conf.j2)
HEADER_ARGS = ("x-wa-meta-user-id", "x-wa-meta-user-name", "x-wa-meta-user-country-code")


@dataclass(frozen=True)
class CallerIdentity:
    """The caller: `phone` (+E.164) when Meta gives one, the BSUID, the username and country
    when Meta shares them; `rejected` names the values that did not have their shape."""

    phone: str | None
    bsuid: str | None
    username: str | None = None
    country: str | None = None
    rejected: tuple[str, ...] = ()

    @property
    def caller(self) -> str:
        """What the call log's `caller` column shows: the number, else the BSUID (else "unknown")."""
        return self.phone or (self.bsuid or "unknown")[:64]

    @property
    def display(self) -> str:
        """How an operator recognises a caller without a number: @username, else the BSUID."""
        if self.username:
            return f"@{self.username}"
        return self.bsuid or self.caller


def caller_identity(
    from_user: str | None,
    user_id: str | None = None,
    username: str | None = None,
    country: str | None = None,
) -> CallerIdentity:
    """The caller from the From user and the three headers (each may be absent or empty)."""
    rejected: list[str] = []
    phone = normalise_number(from_user)
    from_bsuid = None if phone else clean_bsuid((from_user or "").strip())
    if from_user and not phone and not from_bsuid:
        rejected.append("from")
    bsuid = None
    if user_id:
        bsuid = clean_bsuid(user_id)
        if bsuid is None:
            rejected.append(HEADER_ARGS[0])
    name = None
    if username:
        name = username.lstrip("@")
        if not _USERNAME.fullmatch(name):
            name = None
            rejected.append(HEADER_ARGS[1])
    code = None
    if country:
        code = country if _COUNTRY.fullmatch(country) else None
        if code is None:
            rejected.append(HEADER_ARGS[2])
    return CallerIdentity(phone, bsuid or from_bsuid, name, code, tuple(rejected))


def from_stasis_args(from_user: str | None, args: Sequence[str]) -> CallerIdentity:
    """The caller from a StasisStart: args are [dialled number, WACID, user id, username, country]."""
    extra = [args[i] if len(args) > i else None for i in range(2, 2 + len(HEADER_ARGS))]
    return caller_identity(from_user, *extra)
