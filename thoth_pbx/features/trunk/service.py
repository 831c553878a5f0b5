"""The trunk as a service: settings in layers, phones from the store, apply with revisions.

Trunk settings are built-in defaults <- the TOML `[trunk]` table <- admin edits kept in
the `setting` row "trunk" (only the keys the admin set). Every apply, whatever its result,
is stored as a PbxRevision (who, the masked diff, the result, the detail), and after a
successful one the rendered phones stop asking for an apply (Phone.trunk_needs_apply).
Used by the admin API and the CLI alike.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.asterisk.ami import AmiClient
from thoth_pbx.core.settings import AsteriskServer, Settings
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory import Phone
from thoth_pbx.features.trunk import live
from thoth_pbx.features.trunk import render as trunk
from thoth_pbx.features.trunk import status as pbx_status
from thoth_pbx.features.trunk.apply import Applier, ApplyOutcome
from thoth_pbx.features.trunk.models import PbxRevision
from thoth_pbx.features.trunk.render import Rendered, TrunkPhone, TrunkSettings
from thoth_pbx.store.base import on_server
from thoth_pbx.store.setting import Setting

log = logging.getLogger(__name__)

SETTING_KEY = "trunk"
CONFIG_LAYER = "the [trunk] table of the config file"


class PbxService:
    """The trunk of one Asterisk server: its phones, its files, its revisions."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        ami: AmiClient,
        server: AsteriskServer | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.ami = ami
        self.server = server or settings.asterisks[0]
        # what rows store for this server: None for the first (decisions D11)
        self.stored = None if self.server.name == settings.asterisks[0].name else self.server.name
        self.config_dir = Path(self.server.config_dir)
        self.mode = self.server.mode
        self.override_dir = settings.template_override_dir
        self.applier = Applier(ami, self.config_dir, self.mode)

    # ------------------------------------------------------------------ settings

    def _config_layer(self) -> dict[str, Any]:
        raw = dict(self.settings.trunk)
        try:
            trunk.parse_trunk(raw, layer_names=[CONFIG_LAYER])
        except FieldError as exc:
            raise FieldError(f"trunk.{exc.field}", f"{exc.message} (in {CONFIG_LAYER})", 500) from None
        return raw

    def _server_layer(self) -> dict[str, Any]:
        """This server's own `trunk` table (its bind address, its certificate): it wins over the
        settings shared by every server, the admin's edits included."""
        raw = dict(self.server.trunk)
        where = f"the trunk table of [[asterisk]] {self.server.name}"
        try:
            trunk.parse_trunk(raw, layer_names=[where])
        except FieldError as exc:
            raise FieldError(f"trunk.{exc.field}", f"{exc.message} (in {where})", 500) from None
        return raw

    async def _admin_layer(self, session: AsyncSession) -> dict[str, Any]:
        row = await session.scalar(select(Setting).where(Setting.key == SETTING_KEY))
        return dict(row.value) if row is not None else {}

    async def trunk_settings(self) -> TrunkSettings:
        async with self.sessions() as session:
            admin = await self._admin_layer(session)
        return trunk.parse_trunk(
            self._config_layer(),
            admin,
            self._server_layer(),
            layer_names=[CONFIG_LAYER, "the stored admin settings", f"[[asterisk]] {self.server.name}"],
        )

    async def trunk_view(self) -> dict[str, Any]:
        """Effective settings, where each comes from, and the built-in defaults."""
        config = self._config_layer()
        async with self.sessions() as session:
            admin = await self._admin_layer(session)
        server = self._server_layer()
        effective = trunk.parse_trunk(config, admin, server)
        source = {
            key: "asterisk" if key in server else "admin" if key in admin else "config" if key in config else "default"
            for key in trunk.VALIDATORS
        }
        return {
            "settings": effective.as_json(),
            "source": source,
            "defaults": trunk.DEFAULTS.as_json(),
            "omittable": sorted(k for k in trunk.VALIDATORS if trunk.omittable(k)),
        }

    async def update_trunk(self, body: Any, actor: str) -> dict[str, Any]:
        """Merge `body` into the admin's stored settings; validated whole before storing."""
        if not isinstance(body, dict) or not body:
            raise FieldError("body", "must be a JSON object with at least one trunk setting")
        config = self._config_layer()
        async with self.sessions() as session, session.begin():
            row = await session.scalar(select(Setting).where(Setting.key == SETTING_KEY))
            merged = {**(row.value if row is not None else {}), **body}
            checked = trunk.parse_trunk(config, merged)  # raises FieldError naming the field
            trunk.parse_trunk(config, merged, self._server_layer())  # and what this server makes of it
            stored = {key: getattr(checked, key) for key in merged}
            stored = {k: list(val) if isinstance(val, tuple) else val for k, val in stored.items()}
            if row is None:
                session.add(Setting(key=SETTING_KEY, value=stored, updated_by=actor))
            else:
                row.value = stored
                row.updated_by = actor
        log.info("trunk settings updated", extra={"actor": actor, "keys": sorted(body)})
        return await self.trunk_view()

    # ------------------------------------------------------------------ render / apply

    async def _phones(self) -> list[TrunkPhone]:
        async with self.sessions() as session:
            rows = (
                await session.scalars(
                    select(Phone)
                    .where(Phone.sip_enabled.is_(True), on_server(Phone.asterisk, self.stored))
                    .order_by(Phone.id)
                )
            ).all()
            return [TrunkPhone(p.number, p.sip_user_password, p.sip_hostname, p.id) for p in rows]

    async def render(self) -> Rendered:
        return trunk.render(
            await self.trunk_settings(), await self._phones(), app=self.settings.ari_app, override_dir=self.override_dir
        )

    async def apply(self, actor: str) -> tuple[ApplyOutcome, int]:
        """Render and apply; returns the outcome and the id of the stored revision."""
        settings = await self.trunk_settings()
        problems = trunk.apply_problems(settings)
        if problems:
            raise problems[0]
        # phones flagged before this render: a phone whose SIP was switched off is not rendered,
        # but this apply is what drops it from the trunk, so its flag is cleared too
        async with self.sessions() as session:
            flagged = set(
                (
                    await session.scalars(
                        select(Phone.id).where(
                            Phone.trunk_needs_apply.is_(True), on_server(Phone.asterisk, self.stored)
                        )
                    )
                ).all()
            )
        try:
            rendered = trunk.render(
                settings, await self._phones(), app=self.settings.ari_app, override_dir=self.override_dir
            )
        except FieldError as exc:
            revision = await self._record(actor, ApplyOutcome("failed", f"render failed: {exc}"), (), error=exc)
            raise FieldError(exc.field, f"{exc.message} (nothing written; revision {revision})", exc.status) from None
        outcome = await self.applier.apply(rendered)
        revision = await self._record(actor, outcome, tuple(sorted(flagged | set(rendered.phone_ids))))
        return outcome, revision

    async def _record(
        self, actor: str, outcome: ApplyOutcome, phone_ids: tuple[int, ...], error: FieldError | None = None
    ) -> int:
        detail = outcome.detail()
        if error is not None:
            detail["error"] = {"field": error.field, "message": error.message}
        async with self.sessions() as session, session.begin():
            revision = PbxRevision(
                actor=actor,
                result=outcome.result,
                diff=outcome.diff,
                files={k: v for k, v in outcome.files.items()},
                detail=detail,
                asterisk=self.stored,
            )
            session.add(revision)
            if outcome.ok and phone_ids:
                await session.execute(update(Phone).where(Phone.id.in_(phone_ids)).values(trunk_needs_apply=False))
            await session.flush()
            return revision.id

    # ------------------------------------------------------------------ status

    async def last_revision(self, *, with_files: bool = False) -> dict[str, Any] | None:
        async with self.sessions() as session:
            row = await session.scalar(
                select(PbxRevision)
                .where(on_server(PbxRevision.asterisk, self.stored))
                .order_by(PbxRevision.id.desc())
                .limit(1)
            )
            if row is None:
                return None
            out = {
                "id": row.id,
                "created_at": row.created_at.isoformat(),
                "actor": row.actor,
                "result": row.result,
                "message": row.detail.get("message"),
            }
            if with_files:
                out["files"] = row.files
            return out

    async def revisions(self, limit: int = 20) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            rows = (
                await session.scalars(
                    select(PbxRevision)
                    .where(on_server(PbxRevision.asterisk, self.stored))
                    .order_by(PbxRevision.id.desc())
                    .limit(limit)
                )
            ).all()
            return [
                {
                    "id": r.id,
                    "created_at": r.created_at.isoformat(),
                    "actor": r.actor,
                    "result": r.result,
                    "diff": r.diff,
                    "detail": r.detail,
                }
                for r in rows
            ]

    async def status(self) -> dict[str, Any]:
        try:
            rendered: Rendered | None = await self.render()
            render_error = None
        except FieldError as exc:
            rendered, render_error = None, {"field": exc.field, "message": exc.message}
        last = await self.last_revision(with_files=True)
        async with self.sessions() as session:
            pending = (
                await session.scalars(
                    select(Phone.number).where(
                        Phone.trunk_needs_apply.is_(True), on_server(Phone.asterisk, self.stored)
                    )
                )
            ).all()
        report = await pbx_status.collect(self.ami, self.config_dir, self.mode, rendered, last)
        report["render_error"] = render_error
        report["phones_waiting_for_apply"] = list(pending)
        report["asterisk"] = self.server.name
        return report

    async def summary(self) -> dict[str, Any]:
        """This server as `GET /api/admin/pbx/servers` lists it (addresses without secrets)."""
        async with self.sessions() as session:
            phones = (await session.scalars(select(Phone.number).where(on_server(Phone.asterisk, self.stored)))).all()
        server = self.server
        return {
            "name": server.name,
            "ami": str(server.ami) if server.ami else None,
            "ari": str(server.ari) if server.ari else None,
            "config_dir": str(server.config_dir),
            "mode": server.mode,
            "phones": list(phones),
            "last_revision": await self.last_revision(),
        }

    async def restart_when_convenient(self) -> str:
        return await live.restart_when_convenient(self.ami)
