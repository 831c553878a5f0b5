"""What /healthz says about the database: can it still take a write, and does the key fit it.

`SELECT 1` answers on a database that is read-only, full or corrupt, where every webhook would
then fail; the probe writes one row (the `setting` key `health.probe`) in its own transaction,
so it fails exactly when real writes do, and names why.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from thoth_pbx.core.secrets import SecretBox, SecretKeyError
from thoth_pbx.store.base import table_of
from thoth_pbx.store.db import describe_error, error_state, insert_with_conflicts, read_file_afresh
from thoth_pbx.store.keycheck import stored_secret_sample
from thoth_pbx.store.setting import Setting
from thoth_pbx.store.types import utcnow

PROBE_KEY = "health.probe"


async def write_probe(engine: AsyncEngine) -> None:
    now = utcnow()
    stmt = insert_with_conflicts(engine.dialect.name, table_of(Setting), "health probe").values(
        key=PROBE_KEY, value={"at": now.isoformat()}, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["key"], set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at}
    )
    async with engine.begin() as conn:
        await conn.execute(stmt)


async def database_health(engine: AsyncEngine, box: SecretBox) -> dict[str, Any]:
    """`{"state": "ok"}`, or a state (`read-only`, `full`, `corrupt`, `down`, `key-mismatch`)
    with the error."""
    try:
        await read_file_afresh(engine)
        await write_probe(engine)
        sample = await stored_secret_sample(engine)
    except Exception as exc:  # any driver error means the database is not usable; say which
        return {"state": error_state(exc), "error": describe_error(exc)}
    if sample is not None:
        try:
            box.decrypt(sample)
        except SecretKeyError:
            return {
                "state": "key-mismatch",
                "error": "the secret key file in use does not decrypt the stored secrets: restore the key "
                "file they were encrypted with, then restart",
            }
    return {"state": "ok"}
