"""Two servers sharing a real Redis: session_limit, API keys and rate limits hold across both."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asyncapy import APIKeyFactory, Client, Packet, Server, UsageError
from asyncapy.client import AsyncClient
from asyncapy.app.filters import ApiKey, RateLimit
from asyncapy.shared.redis import RedisState
from asyncapy.shared.state import SHARED_STATE_UNAVAILABLE

from ..conftest import make_server, running
from ..services import RedisProcess, redis_server  # noqa: F401  (fixture)

#: Redis calls of tests that do not test timeouts: generous, the machine may be busy.
TIMEOUT = 3.0


def _app(state: RedisState, keys: APIKeyFactory, **kwargs: Any) -> Server:
    server = make_server(**kwargs)

    @server.add_handler(ApiKey(keys))
    async def private(client: Client, packet: Packet) -> dict[str, Any]:
        return {"private": True}

    @server.add_handler()
    async def public(client: Client, packet: Packet) -> dict[str, Any]:
        return {"public": True, "address": client.address}

    return server


@contextlib.asynccontextmanager
async def _pair(url: str, namespace: str, **kwargs: Any) -> AsyncIterator[tuple[Server, Server, APIKeyFactory]]:
    """Two instances, each with its own RedisState object on the same Redis and namespace."""
    states = [RedisState(url, namespace=namespace, timeout=TIMEOUT) for _ in range(2)]
    factories = [APIKeyFactory(store=state) for state in states]
    servers = [_app(state, keys, shared_state=state, **kwargs) for state, keys in zip(states, factories)]
    async with running(servers[0]) as first, running(servers[1]) as second:
        yield first, second, factories[0]
    for state in states:
        await state.aclose()


async def test_session_limit_holds_across_instances(redis_server: RedisProcess) -> None:  # noqa: F811
    async with _pair(redis_server.url, "s1", session_limit=1) as (first, second, _):
        async with AsyncClient("127.0.0.1", first.port) as held:
            assert (await held.request({}))["public"]
            async with AsyncClient("127.0.0.1", second.port) as refused:
                reply = await refused.request({})
            assert reply["error"] == "ERR_SESSION_LIMIT_REACHED"
        for _ in range(100):  # the closed session is forgotten in Redis (a task after the close)
            async with AsyncClient("127.0.0.1", second.port) as again:
                reply = await again.request({})
            if "public" in reply:
                break
            await asyncio.sleep(0.02)
        assert reply["public"]


async def test_a_dead_instances_sessions_expire_within_ttl(redis_server: RedisProcess) -> None:  # noqa: F811
    ghost = RedisState(redis_server.url, namespace="s2", ttl=1.0, timeout=TIMEOUT)
    assert await ghost.open_session("127.0.0.1", "dead-instance:0", 1)  # then never refreshed
    state = RedisState(redis_server.url, namespace="s2", ttl=1.0, timeout=TIMEOUT)
    server = _app(state, APIKeyFactory(), session_limit=1, shared_state=state)
    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert (await client.request({}))["error"] == "ERR_SESSION_LIMIT_REACHED"
        await asyncio.sleep(1.1)
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert (await client.request({}))["public"]
            await asyncio.sleep(1.2)  # past ttl: a live session is refreshed, not forgotten
            async with AsyncClient("127.0.0.1", server.port) as second:
                assert (await second.request({}))["error"] == "ERR_SESSION_LIMIT_REACHED"
    await ghost.aclose()
    await state.aclose()


async def test_key_created_on_one_instance_is_accepted_by_the_other(redis_server: RedisProcess) -> None:  # noqa: F811
    async with _pair(redis_server.url, "s3") as (first, second, keys):
        key = await keys.acreate()
        async with AsyncClient("127.0.0.1", second.port) as client:
            assert await client.request({"api_key": key}) == {"private": True}
            assert await keys.arevoke(key)
            assert (await client.request({"api_key": key}))["public"]  # falls through to the public handler
        assert await keys.acount() == 0
        probe = RedisState(redis_server.url, namespace="s3", timeout=TIMEOUT)
        assert await probe.redis.hgetall("s3:apikeys") == {}
        await keys.aadd(key)
        stored = await probe.redis.hkeys("s3:apikeys")
        assert stored == [hashlib.sha256(key.encode()).hexdigest().encode()]  # the digest, never the key
        await probe.aclose()


async def test_server_wide_rate_limit_across_instances(redis_server: RedisProcess) -> None:  # noqa: F811
    state = RedisState(redis_server.url, namespace="s4", timeout=TIMEOUT)
    limit = RateLimit("3/minute", state=state)
    servers = [_app(state, APIKeyFactory(), rate_limit=limit) for _ in range(2)]
    async with running(servers[0]) as first, running(servers[1]) as second:
        async with AsyncClient("127.0.0.1", first.port) as a, AsyncClient("127.0.0.1", second.port) as b:
            replies = [await (a if i % 2 else b).request({}) for i in range(5)]
            assert [r.get("public") for r in replies[:3]] == [True, True, True]
            assert [r.get("error") for r in replies[3:]] == ["ERR_RATE_LIMITED"] * 2
            assert "retry in" in replies[3]["detail"] and "3/minute" in replies[3]["detail"]
            assert (await a.request({}))["error"] == "ERR_RATE_LIMITED"  # the connection stayed open
    await state.aclose()


async def test_in_memory_rate_limit() -> None:
    server = _app(RedisState(), APIKeyFactory(), rate_limit=RateLimit("2/0.3 seconds"))
    async with running(server), AsyncClient("127.0.0.1", server.port, encoding="ziproto") as client:
        replies = [await client.request({}) for _ in range(3)]
        assert [r.get("public") for r in replies] == [True, True, None]
        assert replies[2]["error"] == "ERR_RATE_LIMITED"  # in the packet's encoding (ziproto)
        await asyncio.sleep(0.2)
        assert (await client.request({}))["public"]


async def test_redis_down_answers_internal_only_where_needed(redis_server: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    async with _pair(redis_server.url, "s5") as (first, second, keys):
        key = await keys.acreate()
        async with AsyncClient("127.0.0.1", first.port) as client:
            assert await client.request({"api_key": key}) == {"private": True}
            redis_server.kill()
            for _ in range(3):
                assert await client.request({"api_key": key}) == {
                    "status": "failure", "error": "ERR_INTERNAL", "detail": SHARED_STATE_UNAVAILABLE,
                }  # fmt: skip
                assert (await client.request({"hello": 1}))["public"]  # needs nothing shared: served
            redis_server.start()  # back (empty: it kept nothing)
            await keys.aadd(key)
            assert await client.request({"api_key": key}) == {"private": True}
    assert "is unavailable" in caplog.text and "answers again" in caplog.text


async def test_session_admission_with_redis_down_or_slow(redis_server: RedisProcess) -> None:  # noqa: F811
    state = RedisState(redis_server.url, namespace="s6", timeout=0.3)
    server = _app(state, APIKeyFactory(), session_limit=5, shared_state=state)
    async with running(server):
        redis_server.pause()  # slow: the admission times out
        async with AsyncClient("127.0.0.1", server.port) as client:
            reply = await asyncio.wait_for(client.request({}), 5)
        assert reply == {"status": "failure", "error": "ERR_INTERNAL", "detail": SHARED_STATE_UNAVAILABLE}
        redis_server.resume()
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert (await client.request({}))["public"]
    await state.aclose()


def test_store_factories_are_async_only() -> None:
    keys = APIKeyFactory(store=RedisState())
    with pytest.raises(UsageError, match="acreate"):
        keys.create()
    with pytest.raises(UsageError, match="aadd"):
        APIKeyFactory(["k"], store=RedisState())
    assert ApiKey(keys).cheap is False and ApiKey(APIKeyFactory()).cheap is True


async def test_proxied_connection_waits_for_admission(redis_server: RedisProcess) -> None:  # noqa: F811
    """Header and packets in one write: the packets wait until Redis admitted the real address."""
    from asyncapy.wire.proxy import encode_v2
    from asyncapy.wire.protocol import encode_frame

    from ..conftest import read_frame

    state = RedisState(redis_server.url, namespace="s7", timeout=TIMEOUT)
    server = _app(state, APIKeyFactory(), session_limit=1, shared_state=state, proxy_protocol=True)
    async with running(server):
        opened = []
        for port in (1, 2):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(encode_v2(("203.0.113.50", port)) + encode_frame(b'{"n": 1}', 0) + encode_frame(b'{"n": 2}', 0))
            opened.append((reader, writer))
        firsts = [(await asyncio.wait_for(read_frame(reader), 10))[1] for reader, _ in opened]
        refused = [first for first in firsts if b"ERR_SESSION_LIMIT_REACHED" in first]
        assert len(refused) == 1 and b"203.0.113.50" in refused[0]  # whichever Redis counted second
        admitted = opened[firsts.index(refused[0]) ^ 1][0]
        served = [firsts[firsts.index(refused[0]) ^ 1], (await asyncio.wait_for(read_frame(admitted), 10))[1]]
        assert served == [b'{"public":true,"address":"203.0.113.50"}'] * 2
        for _, writer in opened:
            writer.close()
    await state.aclose()


async def test_packets_and_eof_sent_during_admission_are_answered(redis_server: RedisProcess) -> None:  # noqa: F811
    """A client that sends its packets and half-closes at once, before Redis admitted it."""
    from asyncapy.wire.protocol import encode_frame

    from ..conftest import read_frame

    state = RedisState(redis_server.url, namespace="s8", timeout=TIMEOUT)
    server = _app(state, APIKeyFactory(), session_limit=3, shared_state=state)
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(encode_frame(b'{"n": 1}', 0) * 3)
        writer.write_eof()
        replies = [await asyncio.wait_for(read_frame(reader), 10) for _ in range(3)]
        assert all(b'"public":true' in payload for _, payload in replies)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    await state.aclose()


async def test_the_proxys_own_health_checks_skip_the_shared_admission(redis_server: RedisProcess) -> None:  # noqa: F811
    """A LOCAL header (HAProxy's health check) is served even while Redis is down."""
    from asyncapy.wire.proxy import encode_v2
    from asyncapy.wire.protocol import encode_frame

    from ..conftest import read_frame

    state = RedisState(redis_server.url, namespace="s9", timeout=TIMEOUT)
    server = _app(state, APIKeyFactory(), session_limit=5, shared_state=state, proxy_protocol=True)
    async with running(server):
        redis_server.kill()
        replies = []
        for header in (encode_v2(None), encode_v2(("203.0.113.60", 1))):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(header + encode_frame(b"{}", 0))
            replies.append((await asyncio.wait_for(read_frame(reader), 10))[1])
            writer.close()
        assert b'"public":true' in replies[0]  # the proxy's own connection: not counted
        assert b"the shared state is unavailable" in replies[1]  # a client's: needs Redis
    await state.aclose()


async def test_a_slow_redis_bounds_a_shared_rate_limit_dependency(redis_server: RedisProcess) -> None:  # noqa: F811
    """Redis stops answering (SIGSTOP): the limited route answers ERR_INTERNAL within the timeout, the rest serves."""
    import time

    state = RedisState(redis_server.url, namespace="s10", timeout=0.3)
    server = make_server()

    @server.add_handler(dependencies=[RateLimit("100/minute", state=state)])
    async def limited(client: Client, packet: Packet) -> dict[str, Any]:
        return {"limited": True}

    @server.add_handler(group=-1)
    async def ping(client: Client, packet: Packet) -> None:
        if "ping" in packet:
            await client.send({"pong": True})
            packet.stop_propagation()

    async with running(server), AsyncClient("127.0.0.1", server.port, timeout=10) as client:
        assert await client.request({}) == {"limited": True}
        redis_server.pause()
        try:
            started = time.monotonic()
            assert await client.request({}) == {"status": "failure", "error": "ERR_INTERNAL", "detail": SHARED_STATE_UNAVAILABLE}
            assert time.monotonic() - started < 3
            assert await client.request({"ping": 1}) == {"pong": True}
        finally:
            redis_server.resume()
        assert await client.request({}) == {"limited": True}
    await state.aclose()
