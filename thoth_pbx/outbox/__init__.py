"""The durable outbox: producer API, worker, admin view."""
