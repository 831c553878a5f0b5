"""calls feature."""
