"""directory feature."""
