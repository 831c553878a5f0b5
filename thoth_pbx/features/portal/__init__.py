"""The Bitrix24 portal: install, events, users; the public face other features use."""

from thoth_pbx.features.portal.install import BitrixEvent, portal_chain, verified_instance
from thoth_pbx.features.portal.jobs import guarded, job_instance
from thoth_pbx.features.portal.models import BitrixUser
from thoth_pbx.features.portal.portals import Portals
from thoth_pbx.features.portal.service import BitrixService

__all__ = [
    "BitrixEvent",
    "BitrixService",
    "BitrixUser",
    "Portals",
    "guarded",
    "job_instance",
    "portal_chain",
    "verified_instance",
]
