"""Meta: Graph client, typed webhook payloads, the signed webhook receiver and the durable inbox."""
