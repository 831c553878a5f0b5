"""`thoth-pbx ...`: main (serve, db, config) and one module per feature's commands."""

from thoth_pbx.cli.main import main

__all__ = ["main"]
