"""Admin REST API (and later the web panel): thin HTTP over the services."""
