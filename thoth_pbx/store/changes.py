"""A change counter for tables that in-memory caches copy (phones, portals, users).

Every committed INSERT/UPDATE/DELETE on a watched table, by any code path of this
process that uses the engine (ORM, Core, admin API, installer, user sync), bumps
`generation`; a cache compares the generation it loaded under with the current one.
Writes by another process (a CLI command) are not seen: caches also expire by age.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

_DML = re.compile(r'^\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)', re.IGNORECASE)
_FLAG = "thoth_changed_tables"


class TableChanges:
    def __init__(self, engine: AsyncEngine, tables: Iterable[str]) -> None:
        self.tables = frozenset(t.lower() for t in tables)
        self.generation = 0
        sync = engine.sync_engine
        event.listen(sync, "after_cursor_execute", self._executed)
        event.listen(sync, "commit", self._committing)
        event.listen(sync, "rollback", self._rolled_back)
        event.listen(sync.pool, "checkin", self._checked_in)

    def _executed(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        match = _DML.match(statement)
        if match and match.group(1).lower() in self.tables:
            conn.info[_FLAG] = True

    def _committing(self, conn: Any) -> None:
        # Bumped before the commit lands and again when the connection goes back to the
        # pool (after it landed): a load that ran in between cannot keep a stale copy.
        if conn.info.get(_FLAG):
            self.generation += 1

    def _rolled_back(self, conn: Any) -> None:
        conn.info.pop(_FLAG, None)

    def _checked_in(self, _dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop(_FLAG, None):
            self.generation += 1
