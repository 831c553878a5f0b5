"""Protocol adapters with no business rules: Asterisk (AMI, ARI), Meta (Graph, webhook payloads, inbox), Bitrix24 (REST, OAuth, transport)."""
