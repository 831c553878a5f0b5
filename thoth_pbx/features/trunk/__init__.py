"""trunk feature."""
