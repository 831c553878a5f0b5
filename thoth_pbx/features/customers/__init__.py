"""Who a WhatsApp customer is: one identity per WhatsApp Business account, keyed by the
business-scoped user id when Meta gives one; the public face other features use."""

from thoth_pbx.features.customers.models import Customer
from thoth_pbx.features.customers.service import (
    Recipient,
    clean_bsuid,
    find,
    identify,
    link_crm,
    number_changed,
    recipient_of,
)

__all__ = ["Customer", "Recipient", "clean_bsuid", "find", "identify", "link_crm", "number_changed", "recipient_of"]
