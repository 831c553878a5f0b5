"""The REST client against the strict simulator over loopback HTTP (no database needed)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.bitrix import USERS, MemoryTokenStore, wait_until
from thoth_pbx.clients.bitrix.bucket import LeakyBucket
from thoth_pbx.clients.bitrix.errors import (
    BitrixLogicError,
    BitrixUnavailable,
    NeedsReauth,
    OperationTimeLimit,
)
from thoth_pbx.clients.bitrix.rest import BitrixClient, OAuthApp, PortalAuth
from thoth_pbx.clients.bitrix.transport import PortalHttp
from thoth_pbx.sandbox.bitrix import BitrixSimulator, Portal

REGISTER = "telephony.externalcall.register"


def make_client(
    sim: BitrixSimulator, portal: Portal, http: PortalHttp, **options
) -> tuple[BitrixClient, MemoryTokenStore]:  # type: ignore[no-untyped-def]
    portal.installed = True
    tokens = sim.issue_tokens(portal)
    auth = PortalAuth(portal.member_id, portal.client_endpoint, tokens["access_token"], tokens["refresh_token"])
    store = MemoryTokenStore(PortalAuth(**vars(auth)))
    options.setdefault("retry_base_s", 0.02)
    client = BitrixClient(
        auth,
        store,
        OAuthApp(sim.client_id, sim.client_secret, sim.oauth_url),
        http,
        rate_per_s=portal.rate,
        burst=portal.burst,
        **options,
    )
    return client, store


def register(i: int) -> dict:  # type: ignore[type-arg]
    return {"USER_ID": 2, "PHONE_NUMBER": f"+1415555{i:04d}", "TYPE": 2, "EXTERNAL_CALL_ID": f"call-{i}"}


async def test_calls_made_together_leave_first_alone_then_as_batches(sim: BitrixSimulator, http: PortalHttp) -> None:
    """The first call of a burst does not wait for the others: it leaves alone, at once, and the
    119 made while it is out follow in order as batches of at most 50 (limits.md: 50 per batch)."""
    portal = sim.add_portal(users=USERS)
    client, _ = make_client(sim, portal, http)
    results = await asyncio.gather(*(client.call(REGISTER, register(i)) for i in range(120)))
    assert len({r["CALL_ID"] for r in results}) == 120
    registered = sim.recorder.calls(REGISTER, ok=True)
    assert [e.params["EXTERNAL_CALL_ID"] for e in registered] == [f"call-{i}" for i in range(120)]
    assert registered[0].batch is None and all(e.batch is not None for e in registered[1:])
    assert [r.path for r in sim.recorder.requests] == [f"/rest/{REGISTER}"] + ["/rest/batch"] * 3  # 1, 50, 50, 19
    assert client.stats.requests == 4 and client.stats.batches == 3 and client.stats.commands == 120
    await client.aclose()


async def test_the_first_call_of_a_burst_leaves_at_once_and_the_rest_batch_behind_it_at_the_limit(
    sim: BitrixSimulator, http: PortalHttp
) -> None:
    """With room in the portal's bucket for one more request only (limits.md: 2 requests/s, 50 at
    once), the first call of a burst is sent at once, alone; the 19 made while it is out wait for
    the bucket to drain and leave in order, as one batch behind it."""
    portal = sim.add_portal(users=USERS)
    capacity = LeakyBucket(portal.rate, portal.burst).capacity  # our limit: the portal's less a headroom
    bucket = LeakyBucket(portal.rate, portal.burst, level=capacity - 1)  # room for one request
    client, _ = make_client(sim, portal, http, bucket=bucket)
    calls = [asyncio.ensure_future(client.call(REGISTER, register(i))) for i in range(20)]
    done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
    assert done == {calls[0]}  # answered while the others still wait for the bucket
    await asyncio.gather(*calls)
    registered = sim.recorder.calls(REGISTER, ok=True)
    assert [e.params["EXTERNAL_CALL_ID"] for e in registered] == [f"call-{i}" for i in range(20)]
    assert registered[0].batch is None and len({e.batch for e in registered[1:]}) == 1
    assert [r.path for r in sim.recorder.requests] == [f"/rest/{REGISTER}", "/rest/batch"]
    await client.aclose()


async def test_a_lone_call_is_sent_at_once_without_batch(sim: BitrixSimulator, http: PortalHttp) -> None:
    portal = sim.add_portal(users=USERS)
    client, _ = make_client(sim, portal, http)
    users = await client.call("user.get", {"FILTER": {"UF_PHONE_INNER": "101"}})
    assert [u["ID"] for u in users] == ["2"]
    assert [r.path for r in sim.recorder.requests] == ["/rest/user.get"]
    await client.aclose()


async def test_explicit_batch_passes_results_between_commands(sim: BitrixSimulator, http: PortalHttp) -> None:
    portal = sim.add_portal(users=USERS)
    client, _ = make_client(sim, portal, http)
    out = await client.batch(
        {
            "reg": (REGISTER, register(1)),
            "fin": (
                "telephony.externalcall.finish",
                {"CALL_ID": "$result[reg][CALL_ID]", "USER_ID": 2, "DURATION": 42},
            ),
            "bad": ("telephony.externalcall.finish", {"CALL_ID": "externalCall.unknown.1", "USER_ID": 2}),
        }
    )
    call_id = out["reg"].result["CALL_ID"]  # type: ignore[union-attr]
    assert out["fin"].result["CALL_ID"] == call_id and out["fin"].result["CALL_DURATION"] == 42  # type: ignore[union-attr]
    assert isinstance(out["bad"], BitrixLogicError) and out["bad"].is_call_not_found()
    assert portal.statistics[call_id]["CALL_FAILED_CODE"] == "200" and not portal.active_calls
    await client.aclose()


@pytest.mark.parametrize("max_batch", [50, 1], ids=["batched", "one-request-each"])
async def test_expired_token_is_renewed_exactly_once_for_20_concurrent_calls(
    sim: BitrixSimulator, http: PortalHttp, max_batch: int
) -> None:
    portal = sim.add_portal(users=USERS)
    client, store = make_client(sim, portal, http, max_batch=max_batch, max_inflight=20)
    await client.call("user.get")  # warm: the token works
    sim.expire_access_tokens(portal)
    sim.latency = 0.3  # slow answers: every request is on the wire before the first 401 comes back
    results = await asyncio.gather(*(client.call("user.get", {"FILTER": {"ID": i % 3 + 1}}) for i in range(20)))
    assert all(len(r) == 1 for r in results)
    assert sim.oauth_refreshes == 1 and len(store.grants) == 1
    expired = [r for r in sim.recorder.requests if r.error == "expired_token"]
    # 20 requests really were on the wire at once; batched: the first alone, 19 in a batch behind it
    assert len(expired) == (2 if max_batch == 50 else 20)
    await client.aclose()


async def test_every_rotated_refresh_token_is_stored(sim: BitrixSimulator, http: PortalHttp) -> None:
    portal = sim.add_portal(users=USERS)
    client, store = make_client(sim, portal, http)
    first_refresh = store.auth.refresh_token
    for _ in range(3):
        sim.expire_access_tokens(portal)
        await client.call("user.get")
    assert sim.oauth_refreshes == 3
    refresh_tokens = [g.refresh_token for g in store.grants]
    assert len(set(refresh_tokens)) == 3 and first_refresh not in refresh_tokens
    assert store.auth.refresh_token == refresh_tokens[-1]
    # only the last one is still valid at the OAuth server: each was spent by the next renewal
    assert store.auth.refresh_token in sim._refresh and not any(t in sim._refresh for t in refresh_tokens[:-1])
    await client.aclose()


async def test_invalid_grant_marks_needs_reauth_and_later_calls_fail_fast(
    sim: BitrixSimulator, http: PortalHttp
) -> None:
    portal = sim.add_portal(users=USERS)
    client, store = make_client(sim, portal, http)
    sim.revoke_refresh_tokens(portal)
    sim.expire_access_tokens(portal)
    with pytest.raises(NeedsReauth):
        await client.call("user.get")
    assert store.reauth is not None and "invalid_grant" in store.reauth
    seen = len(sim.recorder.requests)
    with pytest.raises(NeedsReauth):
        await client.call("user.get")
    assert len(sim.recorder.requests) == seen  # nothing more sent to the portal or the OAuth server
    await client.aclose()


async def test_logic_errors_are_typed_and_never_retried(sim: BitrixSimulator, http: PortalHttp) -> None:
    portal = sim.add_portal(users=USERS)
    client, _ = make_client(sim, portal, http)
    with pytest.raises(BitrixLogicError) as err:
        await client.call(REGISTER, {**register(1), "TYPE": 9})
    assert err.value.code == "ERROR_CORE" and err.value.description == "Unknown TYPE" and not err.value.retryable
    with pytest.raises(BitrixLogicError) as missing:
        await client.call("telephony.externalCall.nosuchmethod")
    assert missing.value.code == "ERROR_METHOD_NOT_FOUND" and missing.value.status == 404
    assert sim.recorder.count(REGISTER) == 1 and len(sim.recorder.requests) == 2
    await client.aclose()


async def test_outage_is_retried_with_backoff_then_recovers(sim: BitrixSimulator, http: PortalHttp) -> None:
    portal = sim.add_portal(users=USERS)
    client, _ = make_client(sim, portal, http, retries=50, retry_base_s=0.01)
    sim.outage = True
    task = asyncio.create_task(client.call(REGISTER, register(1)))
    await wait_until(
        lambda: sum(r.error == "outage" for r in sim.recorder.requests) >= 3, what="retries during the outage"
    )
    sim.outage = False
    assert (await task)["CALL_ID"]
    assert sim.recorder.count(REGISTER) == 1
    await client.aclose()


async def test_outage_gives_up_after_the_retries_with_a_transient_error(sim: BitrixSimulator, http: PortalHttp) -> None:
    portal = sim.add_portal(users=USERS)
    client, _ = make_client(sim, portal, http, retries=2)
    sim.outage = True
    with pytest.raises(BitrixUnavailable) as err:
        await client.call(REGISTER, register(1))
    assert err.value.retryable and not err.value.maybe_delivered and err.value.status == 503
    assert sum(r.error == "outage" for r in sim.recorder.requests) == 3
    await client.aclose()


async def test_unbatched_calls_are_paced_within_the_portals_bucket(sim: BitrixSimulator, http: PortalHttp) -> None:
    portal = sim.add_portal(users=USERS, rate=20.0, burst=30)
    client, _ = make_client(sim, portal, http, max_batch=1, max_inflight=30)
    started = time.monotonic()
    await asyncio.gather(*(client.call("user.get") for _ in range(60)))
    assert sim.recorder.errors("QUERY_LIMIT_EXCEEDED") == 0 and len(sim.recorder.requests) == 60
    # capacity 30 - headroom 21 = 9 at once, the other 51 at 20/s
    assert time.monotonic() - started >= 51 / 20 * 0.9
    await client.aclose()


async def test_query_limit_exceeded_fills_our_bucket_and_the_call_still_succeeds(
    sim: BitrixSimulator, http: PortalHttp
) -> None:
    # the portal is stricter than the instance row says (someone else shares its bucket)
    portal = sim.add_portal(users=USERS, rate=10.0, burst=4)
    client, _ = make_client(sim, portal, http, max_batch=1, max_inflight=10)
    client.bucket = type(client.bucket)(10.0, 50)
    results = await asyncio.gather(*(client.call("user.get") for _ in range(10)))
    assert len(results) == 10
    assert (
        client.stats.query_limit_errors >= 1
        and sim.recorder.errors("QUERY_LIMIT_EXCEEDED") == client.stats.query_limit_errors
    )
    await client.aclose()


async def test_operation_time_limit_blocks_the_method_until_the_reset(sim: BitrixSimulator, http: PortalHttp) -> None:
    portal = sim.add_portal(users=USERS)
    client, _ = make_client(sim, portal, http)
    await client.call("user.get")  # the answer's time.operating_reset_at is remembered
    until = sim.exhaust_operating(portal, "user.get")
    with pytest.raises(OperationTimeLimit) as err:
        await client.call("user.get")
    assert err.value.retry_at == pytest.approx(until, abs=1.0)
    sent = len(sim.recorder.requests)
    with pytest.raises(OperationTimeLimit):
        await client.call("user.get")
    assert len(sim.recorder.requests) == sent  # blocked locally, not hammered
    assert await client.call(REGISTER, register(1))  # other methods keep working
    await wait_until(lambda: time.time() > err.value.retry_at + 0.05, what="the operating reset")
    assert await client.call("user.get")
    await client.aclose()


async def test_domain_change_302_is_followed_and_stored(sim: BitrixSimulator, http: PortalHttp) -> None:
    portal = sim.add_portal(users=USERS)
    client, store = make_client(sim, portal, http)
    sim.move_domain(portal, f"localhost:{sim.port}")
    assert await client.call("user.get")
    assert store.endpoints == [f"http://localhost:{sim.port}/rest/"] and client.client_endpoint == store.endpoints[0]
    assert [r.status for r in sim.recorder.requests] == [302, 200]
    assert await client.call("user.get") and len(sim.recorder.requests) == 3  # straight to the new domain
    await client.aclose()


async def test_expired_token_storm_never_surfaces(sim: BitrixSimulator, http: PortalHttp) -> None:
    portal = sim.add_portal(users=USERS)
    client, store = make_client(sim, portal, http, max_batch=1, max_inflight=2)
    sim.storm_every = 6  # every 6th request finds all access tokens expired
    results = await asyncio.gather(*(client.call(REGISTER, register(i)) for i in range(30)))
    assert len({r["CALL_ID"] for r in results}) == 30
    assert sim.oauth_refreshes >= 3 and len(store.grants) == sim.oauth_refreshes
    await client.aclose()
