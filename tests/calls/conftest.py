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


async def apply_trunk(lab: CallLab) -> None:
    from thoth_pbx.clients.asterisk.ami import AmiClient
    from thoth_pbx.core.settings import AmiTarget
    from thoth_pbx.features.trunk.apply import Applier
    from thoth_pbx.features.trunk.render import TrunkPhone, parse_trunk, render

    b = lab.business
    ami = AmiClient(AmiTarget(b.host, b.ami_port, b.ami_user, b.ami_secret))
    ami.start()
    try:
        await ami.wait_connected(15)
        rendered = render(
            parse_trunk(lab.trunk_settings()),
            [TrunkPhone(BUSINESS, BUSINESS_PASSWORD), TrunkPhone(BUSINESS_NO_PORTAL, BUSINESS_NO_PORTAL_PASSWORD)],
        )
        outcome = await Applier(ami, b.config_dir, "plain").apply(rendered)
        assert outcome.result in ("applied", "restart_required"), outcome.as_json()
    finally:
        await ami.stop()


@pytest.fixture(scope="session")
def lab() -> Iterator[CallLab]:
    lab = start_lab()
    lab.add_business_number(BUSINESS, BUSINESS_PASSWORD)
    lab.add_business_number(BUSINESS_NO_PORTAL, BUSINESS_NO_PORTAL_PASSWORD)
    asyncio.run(apply_trunk(lab))
    lab.business.restart()  # our TLS transport is new: Asterisk creates transports at start
    yield lab
    stop_lab(lab)
