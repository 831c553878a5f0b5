"""store/sqlite_inline.py builds on private parts of SQLAlchemy's aiosqlite dialect: the pin in
pyproject.toml keeps SQLAlchemy on the minor version they were read from, and this test fails
when an upgrade moves or changes them."""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import sqlalchemy
from sqlalchemy.dialects.sqlite import aiosqlite

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_installed_sqlalchemy_is_the_pinned_minor() -> None:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("sqlalchemy")]
    low, high = re.fullmatch(r"sqlalchemy\[asyncio\]>=(\d+\.\d+),<(\d+\.\d+)", spec).groups()  # type: ignore[union-attr]
    assert high.split(".")[0] == low.split(".")[0] and int(high.split(".")[1]) == int(low.split(".")[1]) + 1
    assert sqlalchemy.__version__.startswith(low + "."), (sqlalchemy.__version__, spec)


def test_the_private_adapters_sqlite_inline_subclasses_are_there() -> None:
    """The names and the parts of them store/sqlite_inline.py overrides or calls."""
    assert inspect.isclass(aiosqlite.AsyncAdapt_aiosqlite_connection)
    assert inspect.isclass(aiosqlite.AsyncAdapt_aiosqlite_dbapi)
    assert list(inspect.signature(aiosqlite.AsyncAdapt_aiosqlite_dbapi.__init__).parameters)[:3] == [
        "self",
        "aiosqlite",
        "sqlite",
    ]
    assert hasattr(aiosqlite.SQLiteDialect_aiosqlite, "import_dbapi")
    from sqlalchemy.util.concurrency import await_  # noqa: F401  (used to drive the adapters)

    from thoth_pbx.store import sqlite_inline

    dialect = sqlite_inline.SQLiteDialect_inline()
    assert isinstance(dialect.import_dbapi(), aiosqlite.AsyncAdapt_aiosqlite_dbapi)
