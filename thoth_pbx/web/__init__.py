"""The aiohttp application: middlewares, /healthz, the public webhook routes."""
