"""The Bitrix24 portal: install, events, users; the public face other features use."""

from thoth_pbx.features.portal.jobs import JobFn, guarded, job_instance
from thoth_pbx.features.portal.models import BitrixUser
from thoth_pbx.features.portal.portals import Portals

__all__ = ["BitrixUser", "JobFn", "Portals", "guarded", "job_instance"]
