"""What the panel is handed by app.py: the already wired services (the panel adds no business
rule of its own; every write goes through the same service the JSON API uses)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from thoth_pbx.clients.asterisk.ami import AmiClient
from thoth_pbx.clients.asterisk.ari import AriClient
from thoth_pbx.core.secrets import SecretBox
from thoth_pbx.core.settings import Settings
from thoth_pbx.features.directory.service import Directory
from thoth_pbx.features.directory.whatsapp import MetaService
from thoth_pbx.features.doctor.service import Doctor
from thoth_pbx.features.messaging.lines import MessagingLines
from thoth_pbx.features.portal.service import BitrixService
from thoth_pbx.features.trunk.calling import CallingService
from thoth_pbx.features.trunk.service import PbxService
from thoth_pbx.outbox.queue import Outbox
from thoth_pbx.web.health import AsteriskHealth
from thoth_pbx.web.login_throttle import LoginThrottle


@dataclass(frozen=True)
class PanelDeps:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    box: SecretBox
    admin_password: str
    throttle: LoginThrottle  # shared with the JSON API's Basic auth: one count of failures per address
    directory: Directory
    meta: MetaService
    outbox: Outbox
    bitrix: BitrixService
    calling: CallingService
    messaging: MessagingLines
    pbx: PbxService
    ami: AmiClient
    ari: AriClient
    # owner or standby of the Asterisk's Stasis app (None: ARI not configured); docs/scaling.md
    stasis: Callable[[], dict[str, Any]] | None = None
    doctor: Doctor | None = None  # the preflight page (features/doctor, docs/doctor.md)
    # every configured Asterisk's trunk by name, the first first (the trunk page's ?asterisk=)
    pbx_servers: dict[str, PbxService] = field(default_factory=dict)
    # every configured Asterisk's AMI, ARI and Stasis role (the dashboard lists them when several)
    asterisks: list[AsteriskHealth] = field(default_factory=list)

    @property
    def secure_cookies(self) -> bool:
        """Cookies only over TLS when the admins reach us over https (a plain-http LAN panel
        would otherwise never keep a session)."""
        return self.settings.public_url.lower().startswith("https://")
