"""``RateLimit`` in memory: rates, buckets per client, the GCRA window, bounded memory."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import BaseModel

from asyncapy import Client, Packet, Router, Server, Session
from asyncapy.app.filters import RateLimit
from asyncapy.model.peer import CLOSED_LINK
from asyncapy.shared.ratelimit import RateLimited, parse_rate
from asyncapy.testing import TestClient


def _client(address: str = "192.0.2.1") -> Client:
    return Client(address, 1, Session(address, 1), CLOSED_LINK)


def _packet(payload: dict[str, Any] | None = None) -> Packet:
    return Packet(payload or {})


@pytest.mark.parametrize(
    ("text", "rate"),
    [("100/minute", (100, 60.0)), ("5/s", (5, 1.0)), ("10/30 seconds", (10, 30.0)), ("2 per hour", (2, 3600.0)),
     ("1/day", (1, 86400.0)), ("3/0.5 sec", (3, 0.5)), (" 7 / MIN ", (7, 60.0))],
)  # fmt: skip
def test_parse_rate(text: str, rate: tuple[int, float]) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "100", "0/minute", "5/0 s", "5/fortnight", "-1/s", "five/s"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimit(text)


def test_burst_then_one_per_interval_per_ip() -> None:
    limit = RateLimit("3/0.3 s")
    a, b = _client("192.0.2.1"), _client("192.0.2.2")
    assert [limit.hit_local(a, _packet()) for _ in range(3)] == [0, 0, 0]
    wait = limit.hit_local(a, _packet())
    assert 0 < wait <= 0.1
    assert limit.hit_local(b, _packet()) == 0  # another client, another bucket
    time.sleep(wait + 0.01)
    assert limit.hit_local(a, _packet()) == 0
    assert limit.hit_local(a, _packet()) > 0  # refused packets were not counted


def test_per_api_key_and_callable() -> None:
    limit = RateLimit("1/minute", per="api_key")
    assert limit.hit_local(_client("192.0.2.1"), _packet({"api_key": "k1"})) == 0
    assert limit.hit_local(_client("192.0.2.2"), _packet({"api_key": "k1"})) > 0  # same key, another IP
    assert limit.hit_local(_client("192.0.2.2"), _packet({"api_key": "k2"})) == 0
    assert limit.hit_local(_client("192.0.2.2"), _packet({})) == 0  # no key: per IP
    assert "k1" not in limit.identity(_client(), _packet({"api_key": "k1"}))
    shared = RateLimit("1/minute", per=lambda client, packet: "everyone")
    assert shared.hit_local(_client("192.0.2.1"), _packet()) == 0
    assert shared.hit_local(_client("192.0.2.2"), _packet()) > 0
    with pytest.raises(ValueError, match="per"):
        RateLimit("1/s", per="user")  # type: ignore[arg-type]


async def test_the_dependency_form_raises_rate_limited() -> None:
    limit = RateLimit("1/minute")
    await limit(_client(), _packet())
    with pytest.raises(RateLimited) as caught:
        await limit(_client(), _packet())
    assert caught.value.code == "ERR_RATE_LIMITED" and 59 < caught.value.retry_after <= 60
    assert "retry in" in caught.value.detail


def test_memory_stays_bounded_by_active_clients() -> None:
    limit = RateLimit("1/0.01 s")
    for n in range(20_000):
        limit.hit_local(_client(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"), _packet())
        if n % 5000 == 0:
            time.sleep(0.02)  # the buckets so far are full again: sweepable
    assert len(limit._buckets._tats) < 12_000


def test_default_names_differ_per_call_site_and_are_stable() -> None:
    first = RateLimit("1/s")
    second = RateLimit("1/s")
    assert first.name != second.name and first.name.startswith("1/s:ip:test_ratelimit.py:")
    assert RateLimit("1/s", name="login").name == "login"


class Search(BaseModel):
    q: str


class Keyed(BaseModel):
    api_key: str


def test_dependencies_on_a_handler_and_a_router() -> None:
    server = Server(port=0)
    router = Router(dependencies=[RateLimit("1/minute")])

    @server.add_handler(dependencies=[RateLimit("2/minute")])
    async def search(client: Client, packet: Packet[Search]) -> dict[str, Any]:
        return {"found": packet.data.q}

    @server.add_handler()
    async def in_body(client: Client, packet: Search) -> dict[str, Any]:
        return {"never": True}  # search takes every Search

    @router.add_handler()
    async def other(client: Client, packet: Packet) -> dict[str, Any]:
        return {"other": True}

    server.include_router(router)
    with TestClient(server) as client:
        replies = [client.request({"q": "x"}) for _ in range(3)]
        assert replies[:2] == [{"found": "x"}] * 2
        assert replies[2]["error"] == "ERR_RATE_LIMITED" and "2/minute" in replies[2]["detail"]
        assert client.request({"z": 1}) == {"other": True}
        assert client.request({"z": 1})["error"] == "ERR_RATE_LIMITED"  # the router's own bucket
        assert client.request({"q": "y"})["error"] == "ERR_RATE_LIMITED"  # no later handler ran


async def test_acquire_in_a_handler_body_takes_the_model() -> None:
    limit = RateLimit("1/minute", per="api_key")
    await limit.acquire(_client(), Keyed(api_key="k"))
    with pytest.raises(RateLimited):
        await limit.acquire(_client("192.0.2.99"), {"api_key": "k"})
