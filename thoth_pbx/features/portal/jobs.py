"""Outbox job kinds of the portal itself (set-up, user sync, events), and `guarded`: Bitrix24
errors turned into outbox verdicts for every job that talks to a portal."""

from __future__ import annotations

import logging
import time
from typing import Any

from thoth_pbx.clients.bitrix.errors import BitrixError, BitrixTransientError, NeedsReauth
from thoth_pbx.features.portal.install import KIND_EVENT, KIND_SETUP, KIND_USERS, BitrixApp
from thoth_pbx.features.portal.portals import REAUTH_HINT, PortalGone
from thoth_pbx.outbox.jobs import Fail, Handler, Job, Retry
from thoth_pbx.outbox.queue import Outbox

log = logging.getLogger(__name__)

REAUTH_RETRY_S = 300.0


def guarded(fn: Handler) -> Handler:
    """Bitrix errors -> outbox verdicts: transient ones retry (when Bitrix says), logic ones fail."""

    async def run(job: Job) -> dict[str, Any] | None:
        try:
            return await fn(job)
        except PortalGone as exc:
            raise Fail(str(exc)) from None
        except NeedsReauth as exc:
            raise Retry(f"{exc}; {REAUTH_HINT}", after=REAUTH_RETRY_S) from None
        except BitrixTransientError as exc:
            after = max(0.0, exc.retry_at - time.time()) if exc.retry_at else None
            raise Retry(str(exc), after=after, maybe_delivered=exc.maybe_delivered) from None
        except BitrixError as exc:
            raise Fail(str(exc)) from None

    run.__name__ = fn.__name__
    return run


def register_portal_jobs(outbox: Outbox, app: BitrixApp) -> None:
    """Teach the outbox the portal's job kinds (the portal feature's wiring calls this once)."""
    outbox.register(KIND_SETUP, guarded(app.setup))
    outbox.register(KIND_USERS, guarded(app.sync_users))
    outbox.register(KIND_EVENT, guarded(app.run_event), history=False)  # a chat's events: a chain without end


def job_instance(job: Job) -> int:
    if job.instance_id is None:
        raise Fail("a Bitrix job needs an app instance")
    return job.instance_id
