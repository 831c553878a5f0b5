"""WhatsApp Business accounts, phones and Bitrix24 app instances; the public face other features use."""

from thoth_pbx.features.directory.models import AppInstance, Phone, WabaAccount, phone_and_account
from thoth_pbx.features.directory.service import Directory

__all__ = ["AppInstance", "Directory", "Phone", "WabaAccount", "phone_and_account"]
