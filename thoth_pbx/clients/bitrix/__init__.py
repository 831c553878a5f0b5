"""Bitrix24: REST client, OAuth, transport, leaky bucket, error classes, PHP-style forms."""
