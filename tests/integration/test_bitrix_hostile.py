"""Hostile bodies on the unauthenticated Bitrix routes cost little and get a 4xx, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from thoth_pbx.clients.bitrix import phpquery
from thoth_pbx.web.bitrix_webhook import MAX_FORM

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ROUTES = ["/api/bitrix/events", "/api/bitrix/install"]


@pytest.fixture
def database_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite+thoth:///{tmp_path / 'thoth.sqlite3'}"  # HTTP behaviour only: one engine is enough


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    piece = b"a=" + b"x" * (size - 3) + b"&"
    while sent < total:
        yield piece
        sent += len(piece)


async def post(service: Any, path: str, data: Any) -> tuple[int, dict[str, Any]]:
    response = await service.post(path, data=data, headers=FORM)
    return response.status, await response.json()


@pytest.mark.parametrize("path", ROUTES)
async def test_chunked_body_over_the_limit_is_refused_on_the_bytes_read(service, path: str) -> None:  # type: ignore[no-untyped-def]
    status, body = await post(service, path, chunks(MAX_FORM + 256 * 1024))
    assert status == 413 and body["error"]["field"] == "body"


@pytest.mark.parametrize("path", ROUTES)
async def test_too_many_fields_is_a_400_naming_the_limit(service, path: str) -> None:  # type: ignore[no-untyped-def]
    hostile = "&".join(["event=ONCRMDEALUPDATE", "auth[application_token]=x"] + ["x[]=1"] * 3000)
    status, body = await post(service, path, hostile)
    assert status == 400 and body["error"]["field"] == "body" and str(phpquery.MAX_FIELDS) in body["error"]["message"]


@pytest.mark.parametrize("path", ROUTES)
async def test_deep_nesting_is_a_400_not_a_500(service, path: str) -> None:  # type: ignore[no-untyped-def]
    hostile = "event=ONCRMDEALUPDATE&auth[application_token]=x&a" + "[b]" * 1200 + "=1"
    status, body = await post(service, path, hostile)
    assert status == 400 and body["error"]["field"] == "body"


async def test_event_without_a_token_is_refused_before_the_nested_parse(service) -> None:  # type: ignore[no-untyped-def]
    # nested 1200 deep: the nested parse would refuse it (or, before, crash); the token check comes first
    status, body = await post(service, "/api/bitrix/events", "event=ONCRMDEALUPDATE&a" + "[b]" * 1200 + "=1")
    assert status == 401 and body["error"]["field"] == "auth[application_token]"


def test_append_keys_parse_in_order_and_mix_with_explicit_indexes() -> None:
    assert phpquery.decode("a[]=x&a[]=y&a[5]=z&a[]=w") == {"a": {"0": "x", "1": "y", "5": "z", "6": "w"}}
    many = phpquery.decode("&".join([f"a[]={i}" for i in range(phpquery.MAX_FIELDS)]))
    assert many == {"a": [str(i) for i in range(phpquery.MAX_FIELDS)]}
    with pytest.raises(phpquery.FormLimit, match="longer than"):
        phpquery.decode("k" * (phpquery.MAX_KEY_LENGTH + 1) + "=1")
    with pytest.raises(phpquery.FormLimit, match="deeper than"):
        phpquery.decode("a" + "[b]" * phpquery.MAX_DEPTH + "=1")
    assert phpquery.decode("a" + "[b]" * (phpquery.MAX_DEPTH - 1) + "=1")["a"]["b"]
