"""thoth-pbx: WhatsApp Business messages and calls into Bitrix24 through Asterisk."""

__version__ = "0.1.0"
