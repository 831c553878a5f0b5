"""Locate shipped data folders both in a checkout and in an installed wheel.

The product brief fixes `asterisk_templates/`, `dialplan/` and `config/` at the top of the
repository; the wheel carries them as `thoth_pbx/_data/<name>`.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # thoth_pbx/ (this file is thoth_pbx/core/)
_NAMES = ("asterisk_templates", "dialplan", "config")


def data_dir(name: str) -> Path:
    """Return the folder holding shipped data `name` (wheel copy first, then checkout)."""
    if name not in _NAMES:
        raise ValueError(f"unknown data folder {name!r}; expected one of {_NAMES}")
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"shipped data folder {name!r} not found next to {_PACKAGE_DIR}")
