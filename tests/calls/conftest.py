"""Fixtures for end-to-end WhatsApp calls: the call lab with our trunk applied for real."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.calls.lab import CallLab, start_lab, stop_lab

BUSINESS = "+14155550123"
BUSINESS_PASSWORD = "SipSecret-0123-abcdef"
BUSINESS_NO_PORTAL = "+14155550124"
BUSINESS_NO_PORTAL_PASSWORD = "SipSecret-0124-abcdef"


async def apply_trunk(lab: CallLab, numbers: list[tuple[str, str, str | None]] | None = None) -> None:
    """Our trunk, rendered and applied by thoth-pbx's own Applier over AMI: `numbers` are
    (number, SIP password, sip_hostname or None), by default the two business numbers."""
    from thoth_pbx.clients.asterisk.ami import AmiClient
    from thoth_pbx.core.settings import AmiTarget
    from thoth_pbx.features.trunk.apply import Applier
    from thoth_pbx.features.trunk.render import TrunkPhone, parse_trunk, render

    wanted = numbers or [(BUSINESS, BUSINESS_PASSWORD, None), (BUSINESS_NO_PORTAL, BUSINESS_NO_PORTAL_PASSWORD, None)]
    b = lab.business
    ami = AmiClient(AmiTarget(b.host, b.ami_port, b.ami_user, b.ami_secret))
    ami.start()
    try:
        await ami.wait_connected(15)
        phones = [TrunkPhone(n, pw, host) if host else TrunkPhone(n, pw) for n, pw, host in wanted]
        rendered = render(parse_trunk(lab.trunk_settings()), phones)
        outcome = await Applier(ami, b.config_dir, "plain").apply(rendered)
        assert outcome.result in ("applied", "restart_required"), outcome.as_json()
    finally:
        await ami.stop()


def start_own_lab(name: str, numbers: list[tuple[str, str, str | None]] | None = None) -> CallLab:
    """A call lab with our trunk applied, as the session's `lab`; a unique `name` gives it
    instance names of its own, so other tests' labs can run at the same time."""
    lab = start_lab(name)
    wanted = numbers or [(BUSINESS, BUSINESS_PASSWORD, None), (BUSINESS_NO_PORTAL, BUSINESS_NO_PORTAL_PASSWORD, None)]
    for number, password, _host in wanted:
        lab.add_business_number(number, password)
    asyncio.run(apply_trunk(lab, wanted))
    lab.business.restart()  # our TLS transport is new: Asterisk creates transports at start
    return lab


@pytest.fixture(scope="session")
def lab() -> Iterator[CallLab]:
    lab = start_own_lab("calls")
    yield lab
    stop_lab(lab)
