"""WhatsApp messages <-> Bitrix24 Open Lines (next issue); see README.md."""
