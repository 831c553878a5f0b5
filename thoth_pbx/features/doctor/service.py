"""The doctor: reads what is needed (AMI, ARI, a TLS handshake, Graph, Bitrix REST, the store),
hands it to the pure judgements, and returns one Report. Read-only: it changes nothing in
Asterisk, at Meta or in Bitrix24 (the token check stores its answer, as the token endpoint does).

Each part that cannot be reached turns its checks into fail/cannot_check verdicts; one
unreachable service never hides the verdicts of the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.clients.asterisk.ami import AmiClient, AmiError
from thoth_pbx.clients.asterisk.ari import AriClient
from thoth_pbx.clients.meta.graph import GraphClient, GraphError
from thoth_pbx.core.resources import data_dir
from thoth_pbx.core.settings import AsteriskServer, Settings
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory import AppInstance, Phone, WabaAccount
from thoth_pbx.features.doctor import asterisk, bitrix, meta, tls
from thoth_pbx.features.doctor.inputs import TokenCheck, TrunkFacts, TrunkSource
from thoth_pbx.features.doctor.verdicts import Report, Verdict, cannot, fail, ok
from thoth_pbx.store.types import utcnow

log = logging.getLogger(__name__)

RANGES_FILE = "meta-ip-ranges.txt"
ASTERISK_CHECKS = (
    "asterisk.modules",
    "transport.bound",
    "tls.hostname",
    "tls.trust",
    "tls.key",
    "tls.expiry",
    "transport.nat",
    "identify.meta_ranges",
    "trunk.applied",
    "config.includes",
    "dialplan.context",
    "ami.permissions",
)


class PortalCaller(Protocol):
    async def call(self, method: str, params: Any = None, *, batchable: bool = True) -> Any: ...


class PortalClients(Protocol):
    async def client(self, instance_id: int) -> Any: ...


class Doctor:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        ami: AmiClient,
        trunk: TrunkSource,
        graph: GraphClient,
        tokens: TokenCheck,
        portals: PortalClients,
        *,
        bundle: str | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        tls_timeout: float = 5.0,
        more: Sequence[tuple[AsteriskServer, AmiClient, TrunkSource]] = (),
    ) -> None:
        """`ami` and `trunk` are the first Asterisk's; `more` the `[[asterisk]]` servers'."""
        self.settings = settings
        self.sessions = sessions
        self.servers = [(settings.asterisks[0], ami, trunk), *more]
        self.graph = graph
        self.tokens = tokens
        self.portals = portals
        self.bundle = bundle or tls.public_bundle()
        self.clock = clock
        self.tls_timeout = tls_timeout
        self._one_at_a_time = asyncio.Lock()  # a second request waits for the running check, not doubles the load

    async def run(self) -> Report:
        async with self._one_at_a_time:
            return await self._run()

    async def _run(self) -> Report:
        verdicts: list[Verdict] = []
        phones, accounts, instances, lines = await self._directory()
        first: TrunkFacts | None = None
        for n, (server, ami, trunk) in enumerate(self.servers):
            stored = None if n == 0 else server.name  # what its phones store (decisions D11)
            theirs = [p for p in phones if p.asterisk == stored]
            checked, settings = await self._one_asterisk(server, ami, trunk, theirs)
            if n == 0:
                first = settings
                verdicts += checked
            else:  # said of that server: the subject names it
                verdicts += [replace(v, subject=v.subject or f"asterisk {server.name}") for v in checked]
        settings = first
        if len(self.servers) > 1:
            verdicts.append(asterisk.system_name_verdict(await self._system_names()))
        verdicts += await self._meta(settings, phones, accounts)
        verdicts += await self._bitrix(instances, lines)
        verdicts.append(self._internet(settings, phones))
        report = Report.of(verdicts)
        log.info("doctor ran", extra={"summary": report.as_json()["summary"]})
        return report

    # ------------------------------------------------------------------ the store

    async def _directory(self) -> tuple[list[Phone], list[WabaAccount], list[AppInstance], dict[int, list[str]]]:
        async with self.sessions() as session:
            phones = list(
                (
                    await session.scalars(
                        select(Phone)
                        .where(
                            or_(
                                Phone.sip_enabled.is_(True),
                                Phone.calling_enabled.is_(True),
                                Phone.sip_hostname.is_not(None),
                            )
                        )
                        .order_by(Phone.id)
                    )
                ).all()
            )
            accounts = list((await session.scalars(select(WabaAccount).order_by(WabaAccount.id))).all())
            instances = list(
                (
                    await session.scalars(
                        select(AppInstance).where(AppInstance.status != "uninstalled").order_by(AppInstance.id)
                    )
                ).all()
            )
            # every phone with a portal, for the external lines (not only the calling ones)
            linked = (
                await session.execute(
                    select(Phone.app_instance_id, Phone.number).where(Phone.app_instance_id.is_not(None))
                )
            ).all()
        lines: dict[int, list[str]] = {}
        for instance_id, number in linked:
            if instance_id is not None:
                lines.setdefault(instance_id, []).append(number)
        return phones, accounts, instances, lines

    # ------------------------------------------------------------------ Asterisk

    async def _one_asterisk(
        self, server: AsteriskServer, ami: AmiClient, trunk: TrunkSource, phones: list[Phone]
    ) -> tuple[list[Verdict], TrunkFacts | None]:
        verdicts: list[Verdict] = []
        try:
            settings: TrunkFacts | None = await trunk.trunk_settings()
        except FieldError as exc:
            settings = None
            verdicts.append(fail("trunk.settings", f"{exc.field}: {exc.message}", "fix the trunk setting it names"))
        if settings is not None:
            verdicts += await self._asterisk(settings, phones, server, ami, trunk)
        verdicts += await self._ari(server)
        return verdicts, settings

    async def _asterisk(
        self, settings: TrunkFacts, phones: list[Phone], server: AsteriskServer, ami: AmiClient, trunk: TrunkSource
    ) -> list[Verdict]:
        target = server.ami
        if target is None:
            return [
                fail(
                    "ami.connection",
                    "ami_url is not set: thoth-pbx cannot apply the trunk or look at Asterisk",
                    "set ami_url (tcp://user:secret@host:5038)",
                ),
                *[cannot(name, "ami_url is not set", "see ami.connection") for name in ASTERISK_CHECKS],
            ]
        if not ami.connected:
            why = ami.status.error or ami.status.state
            return [
                fail(
                    "ami.connection",
                    f"AMI at {target.host}:{target.port} is not connected: {why}",
                    "check ami_url, manager.conf and that Asterisk runs",
                ),
                *[cannot(name, "AMI is not connected", "see ami.connection") for name in ASTERISK_CHECKS],
            ]
        out = [
            ok(
                "ami.connection",
                f"AMI connected to {target.host}:{target.port} (Asterisk {ami.status.version or '?'})",
            )
        ]
        try:
            out += asterisk.module_verdicts(await asterisk.read_modules(ami))
            events = await asterisk.read_endpoint(ami, settings.endpoint_name)
            transport = asterisk.detail(events, "TransportDetail")
            host = asterisk.probe_host(settings, target.host)
            hostnames = sorted({p.sip_hostname.lower() for p in phones if p.sip_hostname})
            found = await tls.probe(
                host,
                settings.bind_port,
                bundle=self.bundle,
                timeout=self.tls_timeout,
                server_name=hostnames[0] if hostnames else None,
            )
            out.append(asterisk.transport_verdict(settings, transport, found.connect_error, found.target))
            out += tls.tls_verdicts(
                found,
                hostnames,
                bundle=self.bundle,
                now=self.clock(),
                cert_pem=tls.read_optional(settings.cert_file),
                key_pem=tls.read_optional(settings.priv_key_file),
                paths=f"{settings.cert_file}, {settings.priv_key_file}",
            )
            out.append(asterisk.external_verdict(settings, transport))
            ranges_path = self._ranges_file()
            out.append(
                asterisk.identify_verdict(
                    asterisk.read_ranges_file(ranges_path), asterisk.detail(events, "IdentifyDetail"), str(ranges_path)
                )
            )
            out += await self._trunk_status(trunk)
            shown = await self._dialplan(ami, settings.context)
            out.append(asterisk.dialplan_verdict(settings.context, self.settings.ari_app, shown))
            actions, read = await asterisk.read_ami_permissions(ami, target.user)
            out.append(asterisk.ami_verdict(actions, read, target.user))
        except AmiError as exc:
            done = {v.check for v in out}
            out += [
                cannot(name, f"AMI failed during the checks: {exc}", "run the doctor again")
                for name in ASTERISK_CHECKS
                if name not in done
            ]
        return out

    async def _system_names(self) -> dict[str, str | None]:
        names: dict[str, str | None] = {}
        for server, ami, _trunk in self.servers:
            try:
                names[server.name] = await asterisk.read_system_name(ami) if ami.connected else None
            except AmiError:
                names[server.name] = None
        return names

    def _ranges_file(self) -> Path:
        override = self.settings.template_override_dir
        if override is not None and (override / RANGES_FILE).is_file():
            return override / RANGES_FILE
        return data_dir("config") / RANGES_FILE

    async def _trunk_status(self, trunk: TrunkSource) -> list[Verdict]:
        try:
            status = await trunk.status()
        except (FieldError, AmiError) as exc:
            return [cannot("config.includes", f"the trunk status could not be read: {exc}")]
        files = status.get("files") or {}
        return [asterisk.applied_verdict(status), *asterisk.include_verdicts(files, str(status.get("mode")))]

    async def _dialplan(self, ami: AmiClient, context: str) -> str:
        try:
            return await ami.command(f"dialplan show {context}")
        except AmiError:
            return ""

    async def _ari(self, server: AsteriskServer) -> list[Verdict]:
        target = server.ari
        if target is None:
            return [
                fail(
                    "ari.permissions",
                    "ari_url is not set: no call can reach thoth-pbx",
                    "set ari_url (http://user:password@host:8088)",
                )
            ]
        # a client of its own under another app name: the service's app keeps its websocket
        client = AriClient(target, f"{self.settings.ari_app}-doctor", request_timeout=self.tls_timeout)
        client.start()
        try:
            read_status, write_status, error = await asterisk.read_ari_permissions(client)
        finally:
            await client.stop()
        return [asterisk.ari_verdict(read_status, write_status, error, target.user)]

    # ------------------------------------------------------------------ Meta

    async def _meta(
        self, settings: TrunkFacts | None, phones: list[Phone], accounts: list[WabaAccount]
    ) -> list[Verdict]:
        out: list[Verdict] = []
        by_id = {a.id: a for a in accounts}
        if not phones:
            out.append(
                fail(
                    "meta.calling",
                    "no phone is set up for calls (sip_hostname, calling or SIP enabled)",
                    "add a phone with sip_hostname, then `thoth-pbx calling enable NUMBER`",
                )
            )
        for phone in phones:
            account = by_id.get(phone.waba_account_id)
            if account is None:
                continue
            facts = meta.PhoneFacts(phone.number, phone.sip_hostname, phone.sip_port, phone.sip_user_password)
            try:
                body = await self.graph.get(
                    f"{phone.phone_number_id}/settings", account.access_token, {"include_sip_credentials": "true"}
                )
            except GraphError as exc:
                out.append(
                    fail(
                        "meta.calling",
                        f"Meta refused to show the settings: {exc}",
                        "see meta.token for this WABA; the token needs whatsapp_business_management",
                        phone.number,
                    )
                )
                continue
            out += meta.phone_verdicts(
                facts,
                body,
                settings.media_encryption if settings else "sdes",
                settings.bind_port if settings else phone.sip_port,
            )
        for account in accounts:
            out += await self._account(account)
        return out

    async def _account(self, account: WabaAccount) -> list[Verdict]:
        waba = account.waba_id or f"account {account.id}"
        out: list[Verdict] = []
        if account.waba_id is None:
            out.append(
                cannot("meta.webhook_app", "the account has no waba_id", "set waba_id on the WABA account", waba)
            )
        else:
            try:
                body = await self.graph.get(f"{account.waba_id}/subscribed_apps", account.access_token)
                out.append(meta.subscribed_apps_verdict(body, account.app_id, waba))
            except GraphError as exc:
                out.append(
                    fail(
                        "meta.webhook_app",
                        f"Meta refused GET subscribed_apps: {exc}",
                        "see meta.token for this WABA",
                        waba,
                    )
                )
        if account.app_id and account.app_secret:
            try:
                body = await self.graph.get(f"{account.app_id}/subscriptions", f"{account.app_id}|{account.app_secret}")
                out.append(meta.webhook_fields_verdict(body, account.app_id, waba))
            except GraphError as exc:
                out.append(
                    fail(
                        "meta.webhook_fields",
                        f"Meta refused GET /{account.app_id}/subscriptions: {exc}",
                        "check app_id and app_secret of the WABA account",
                        waba,
                    )
                )
        else:
            out.append(meta.fields_uncheckable(waba))
        try:
            verdict = await self.tokens(account.id)
        except Exception as exc:  # the checker stores and reports Graph errors itself; this is anything else
            out.append(cannot("meta.token", f"the token check failed: {exc}", None, waba))
        else:
            out.append(meta.token_verdict(verdict, waba))
        return out

    # ------------------------------------------------------------------ Bitrix24

    async def _bitrix(self, instances: list[AppInstance], lines: dict[int, list[str]]) -> list[Verdict]:
        out: list[Verdict] = []
        if not instances:
            return [
                fail(
                    "bitrix.scopes",
                    "no Bitrix24 portal has the application installed: calls and chats have nowhere to go",
                    "install the application on your portal",
                )
            ]
        for instance in instances:
            portal = instance.domain
            try:
                client = await self.portals.client(instance.id)
                out.append(bitrix.scope_verdict(await client.call("scope", batchable=False), portal))
            except Exception as exc:  # BitrixError, PortalGone, NeedsReauth, network: all mean "not usable"
                out.append(bitrix.error_verdict("bitrix.scopes", exc, portal))
                continue
            numbers = lines.get(instance.id, [])
            if not numbers:
                continue
            try:
                held = await client.call("telephony.externalLine.get", batchable=False)
            except Exception as exc:
                out.append(bitrix.error_verdict("bitrix.external_line", exc, portal))
                continue
            out += bitrix.line_verdicts(held, numbers, portal)
        return out

    # ------------------------------------------------------------------ what cannot be seen from here

    def _internet(self, settings: TrunkFacts | None, phones: list[Phone]) -> Verdict:
        hosts = sorted({f"{p.sip_hostname}:{p.sip_port}" for p in phones if p.sip_hostname}) or [
            f"<sip_hostname>:{settings.bind_port if settings else 5061}"
        ]
        first = hosts[0]
        host, _, port = first.rpartition(":")
        return cannot(
            "network.from_meta",
            f"whether Meta reaches {', '.join(hosts)} from the internet (DNS, firewall, port forward) cannot be "
            "checked from this machine",
            f"from a machine outside your network: `openssl s_client -quiet -verify_hostname {host} -connect {host}:{port}` "
            "must connect and say 'Verification: OK'; allow Meta's ranges (config/meta-ip-ranges.txt) to TCP "
            f"{port} and UDP 10000-20000 (RTP)",
        )
