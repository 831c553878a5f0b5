"""Persistence: SQLAlchemy 2 async models, sessions, encrypted secret columns, migrations."""
