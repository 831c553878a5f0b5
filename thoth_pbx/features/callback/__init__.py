"""Click-to-call: Bitrix24 operators calling WhatsApp customers back (issue 15)."""
