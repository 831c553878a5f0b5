"""`thoth-pbx doctor [--json]`: every preflight check with its verdict and the fix (docs/doctor.md).

Exit codes: 0 every check that could be made is ok; 3 warnings but no failure; 1 at least one
failure; 2 bad settings. `cannot_check` verdicts (e.g. whether Meta reaches us from the
internet) never change the exit code: they say what to verify by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from thoth_pbx.core.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    doctor = sub.add_parser(
        "doctor",
        help="preflight: what stands between you and a working WhatsApp trunk, with the fix for each",
        description="Checks the TLS certificate, Asterisk (modules, transport, identify, dialplan, AMI/ARI rights), "
        "Meta (calling settings per number, webhook subscription, tokens) and Bitrix24 (scopes, external lines). "
        "Exit 0 all ok, 3 warnings only, 1 a failure, 2 bad settings.",
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for AMI (default 10)")
    doctor.set_defaults(func=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_doctor(settings, as_json=args.json, ami_timeout=args.timeout))


async def _doctor(settings: Settings, *, as_json: bool, ami_timeout: float) -> int:
    from thoth_pbx.app import close_services, open_services
    from thoth_pbx.clients.asterisk.ami import AmiNotConnected
    from thoth_pbx.features.doctor import Doctor, human

    services = await open_services(settings)
    try:
        for link in services.asterisks:
            if link.server.ami is not None:
                link.ami.start()
        for link in services.asterisks:
            if link.server.ami is not None:
                try:
                    await link.ami.wait_connected(ami_timeout)
                except AmiNotConnected:
                    pass  # the report says so (ami.connection)
        trunks = list(services.pbx_servers.values())
        doctor = Doctor(
            settings,
            services.sessions,
            services.ami,
            trunks[0],
            services.meta.graph,
            services.meta.tokens.check,
            services.bitrix.portals,
            more=[
                (link.server, link.ami, trunk) for link, trunk in zip(services.asterisks[1:], trunks[1:], strict=True)
            ],
        )
        report = await doctor.run()
    finally:
        await close_services(services)
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        sys.stdout.write(human(report))
    return report.exit_code
