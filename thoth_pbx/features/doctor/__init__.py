"""Preflight checks: what stands between the admin and a working WhatsApp trunk (docs/doctor.md)."""

from thoth_pbx.features.doctor.service import Doctor
from thoth_pbx.features.doctor.verdicts import Report, Verdict, human

__all__ = ["Doctor", "Report", "Verdict", "human"]
