"""Shared building blocks every layer may use: settings, validation, secrets, logs, packaged data."""
