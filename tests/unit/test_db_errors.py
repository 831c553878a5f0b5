"""What a driver error says about the database (store/db.error_state), from real sqlite3 errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from thoth_pbx.store.db import describe_error, error_state


def _error(fn) -> BaseException:  # type: ignore[no-untyped-def]
    with pytest.raises(sqlite3.DatabaseError) as err:
        fn()
    return err.value


def test_read_only_full_and_corrupt_sqlite_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    sqlite3.connect(path).execute("CREATE TABLE t (v TEXT)").connection.commit()
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert error_state(_error(lambda: ro.execute("INSERT INTO t VALUES ('a')"))) == "read-only"

    full = sqlite3.connect(path)
    pages = full.execute("PRAGMA page_count").fetchone()[0]
    full.execute(f"PRAGMA max_page_count = {pages}")
    assert error_state(_error(lambda: full.executemany("INSERT INTO t VALUES (?)", [("x" * 4000,)] * 50))) == "full"

    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"not a database at all" * 100)
    err = _error(lambda: sqlite3.connect(bad).execute("SELECT * FROM sqlite_master").fetchall())
    assert error_state(err) == "corrupt"
    assert describe_error(err) == "DatabaseError: file is not a database"


def test_an_unknown_error_is_down() -> None:
    assert error_state(ConnectionRefusedError("connection refused")) == "down"
