"""Each portal's leaky bucket in PostgreSQL, shared by every instance (issue 16).

One statement per request: an upsert that drains the row's level by the time since it was last
drained, adds this request and returns the new level; the row lock serialises instances, so the
total across them never passes the portal's limit. The client waits `(level - capacity) / rate`
before sending (clients/bitrix/bucket.py SharedBucket). SQLite is one process: the bucket stays
in memory. docs/decisions.md "Shared rate limit".
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from thoth_pbx.clients.bitrix.bucket import Reserve

# statement_timestamp(): one instant for the drain and the stamp, taken before any wait for the
# row lock (a level as of a slightly earlier time: the wait that follows errs long, never short)
_RESERVE = text(
    """
    INSERT INTO rate_bucket AS b (app_instance_id, level, drained_at)
    VALUES (
        CAST(:id AS integer),
        CASE WHEN CAST(:fill AS boolean) THEN greatest(CAST(:initial AS float8), CAST(:burst AS float8))
             ELSE CAST(:initial AS float8) END + 1,
        statement_timestamp()
    )
    ON CONFLICT (app_instance_id) DO UPDATE SET
        level = CASE WHEN CAST(:fill AS boolean)
                     THEN greatest(0, b.level - CAST(:rate AS float8) * extract(epoch FROM statement_timestamp() - b.drained_at), CAST(:burst AS float8))
                     ELSE greatest(0, b.level - CAST(:rate AS float8) * extract(epoch FROM statement_timestamp() - b.drained_at))
                END + 1,
        drained_at = statement_timestamp()
    RETURNING level
    """
)


def shared_reserve(engine: AsyncEngine, instance_id: int, rate: float, burst: int) -> Reserve:
    """The `Reserve` of one portal's row, on autocommit connections (one round trip)."""
    auto = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def reserve(fill: bool, initial: float) -> float:
        async with auto.connect() as conn:
            level = await conn.scalar(
                _RESERVE,
                {
                    "id": instance_id,
                    "fill": fill,
                    "initial": float(initial),
                    "burst": float(burst),
                    "rate": float(rate),
                },
            )
        return float(level or 0.0)

    return reserve
