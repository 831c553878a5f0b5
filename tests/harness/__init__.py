"""Test harness helpers for real external parts (Asterisk chroot; see asterisk.py)."""
