"""One folder per feature, each wired by app.py through its wire(deps)."""
