"""Storage on both engines: migrations from empty to head, encrypted columns, UTC times."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from thoth_pbx.core.secrets import SecretBox
from thoth_pbx.features.directory.models import AppInstance, Phone, WabaAccount
from thoth_pbx.store import db


async def test_migrate_empty_to_head_and_idempotent(database_url: str) -> None:
    engine = db.create_engine(database_url)
    try:
        assert await db.current_revisions(engine) == set()
        await db.upgrade(engine)
        assert await db.current_revisions(engine) == db.head_revisions()
        await db.upgrade(engine)  # a second start changes nothing
        assert await db.current_revisions(engine) == db.head_revisions()
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(__import__("sqlalchemy").inspect(c).get_table_names()))
        assert {
            "waba_account",
            "phone",
            "app_instance",
            "call",
            "webhook_inbox",
            "outbox_job",
            "pbx_revision",
        } <= tables
    finally:
        await engine.dispose()


async def test_secrets_are_encrypted_in_the_raw_row(database_url: str, secret_box: SecretBox) -> None:
    engine = db.create_engine(database_url)
    await db.upgrade(engine)
    sessions = db.session_factory(engine)
    token = "EAAGplaintextaccesstoken123"
    try:
        async with sessions() as s, s.begin():
            acc = WabaAccount(
                name="Main",
                access_token=token,
                app_secret="appsecret-xyz",
                verify_token="verify-abc-123",
                verify_token_fingerprint=secret_box.fingerprint("verify-abc-123"),
                api_key="apikey-123456",
                api_key_fingerprint=secret_box.fingerprint("apikey-123456"),
            )
            inst = AppInstance(
                member_id="m1", domain="portal.bitrix24.ru", access_token="b24-access-1", refresh_token="b24-refresh-1"
            )
            s.add_all([acc, inst])
            await s.flush()
            s.add(
                Phone(
                    number="+14155550123",
                    phone_number_id="1111",
                    waba_account_id=acc.id,
                    app_instance_id=inst.id,
                    sip_user_password="sip-pw-999",
                )
            )
        async with engine.connect() as conn:
            raw = (
                await conn.execute(text("SELECT access_token, app_secret, verify_token, api_key FROM waba_account"))
            ).one()
            raw_inst = (await conn.execute(text("SELECT access_token, refresh_token FROM app_instance"))).one()
            raw_phone = (await conn.execute(text("SELECT sip_user_password FROM phone"))).one()
        for stored, plain in zip(
            [*raw, *raw_inst, *raw_phone],
            [token, "appsecret-xyz", "verify-abc-123", "apikey-123456", "b24-access-1", "b24-refresh-1", "sip-pw-999"],
            strict=True,
        ):
            assert plain not in stored
            assert secret_box.decrypt(stored) == plain
        async with sessions() as s:
            loaded = await s.get(WabaAccount, acc.id)
            assert loaded is not None and loaded.access_token == token
            assert loaded.created_at.tzinfo is not None
            assert abs(loaded.created_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    finally:
        await engine.dispose()


async def test_fast_insert_writes_the_row_the_orm_writes(database_url: str) -> None:
    """The hot-path insert (store/fast_insert.py) against the ORM: same stored bytes, same defaults."""
    from thoth_pbx.features.calls.models import Call
    from thoth_pbx.outbox.models import OutboxJob
    from thoth_pbx.store.fast_insert import insert_returning_id

    engine = db.create_engine(database_url)
    await db.upgrade(engine)
    sessions = db.session_factory(engine)
    at = dt.datetime(2026, 11, 27, 3, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    values = {
        "kind": "k",
        "chain": "c",
        "payload": {"PHONE": "+7 999", "n": [1, None]},
        "status": "running",
        "attempts": 1,
        "maybe_delivered": False,
        "next_attempt_at": at,
        "last_attempt_at": at,
        "created_at": at,
    }
    try:
        async with sessions() as s, s.begin():
            s.add(OutboxJob(**values))
            fast_id = await insert_returning_id(s, OutboxJob.__table__, values)
            call_id = await insert_returning_id(
                s,
                Call.__table__,
                {"linkedid": "l1", "channel_id": "c1", "caller": "+1", "called": "+2", "started_at": at, "detail": {}},
            )
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM outbox_job ORDER BY id"))).mappings().all()
        assert len(rows) == 2 and fast_id in {r["id"] for r in rows}
        fast_row, orm_row = (
            {k: v for k, v in r.items() if k != "id"} for r in sorted(rows, key=lambda r: r["id"] != fast_id)
        )
        assert fast_row == orm_row
        async with sessions() as s:
            call = await s.get(Call, call_id)
            assert call is not None and call.direction == "in" and call.started_at == at
            assert call.created_at.tzinfo is not None and abs(call.created_at - dt.datetime.now(dt.UTC)) < dt.timedelta(
                minutes=1
            )
            job = await s.get(OutboxJob, fast_id)
            assert job is not None and job.payload == values["payload"] and job.maybe_delivered is False
        async with sessions() as s, s.begin():
            with pytest.raises(ValueError, match="colour"):
                await insert_returning_id(s, Call.__table__, {"linkedid": "l2", "colour": "red"})
    finally:
        await engine.dispose()
