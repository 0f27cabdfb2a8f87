"""``RedisState`` against a real ``redis-server``: sessions, keys, rate limits, outages."""

from __future__ import annotations

import asyncio
import time

import pytest

from asyncapy.shared.redis import RedisState
from asyncapy.shared.state import SharedStateUnavailable

from ..services import RedisProcess, redis_server  # noqa: F401  (fixture)

#: Redis calls of tests that do not test timeouts: generous, the machine may be busy.
TIMEOUT = 3.0
#: Concurrent checks racing for one bucket: far more than its burst.
RACERS = 60


async def test_sessions_hold_a_limit_and_expire_unrefreshed(redis_server: RedisProcess) -> None:  # noqa: F811
    state = RedisState(redis_server.url, namespace="t1", ttl=1.0, timeout=TIMEOUT)
    assert await state.open_session("192.0.2.1", "a:1", 2)
    assert await state.open_session("192.0.2.1", "b:1", 2)
    assert not await state.open_session("192.0.2.1", "c:1", 2)
    assert await state.open_session("192.0.2.2", "c:2", 2)  # per address
    await state.close_session("192.0.2.1", "a:1")
    assert await state.open_session("192.0.2.1", "c:1", 2)
    for _ in range(3):  # b:1 is refreshed, c:1 is not (its instance "died")
        await asyncio.sleep(0.45)
        await state.refresh_sessions({"192.0.2.1": ["b:1"]})
    assert await state.open_session("192.0.2.1", "d:1", 2)  # c:1 expired within ttl, b:1 lives
    assert not await state.open_session("192.0.2.1", "e:1", 2)
    await state.aclose()


async def test_keys_are_digests(redis_server: RedisProcess) -> None:  # noqa: F811
    state = RedisState(redis_server.url, namespace="t2", timeout=TIMEOUT)
    digest = bytes(range(32))
    await state.add_key(digest)
    assert await state.has_key(digest) and await state.count_keys() == 1
    assert await state.remove_key(digest) and not await state.remove_key(digest)
    assert not await state.has_key(digest)
    await state.aclose()


async def test_rate_limit_is_exact_under_concurrency(redis_server: RedisProcess) -> None:  # noqa: F811
    states = [RedisState(redis_server.url, namespace="t3", timeout=TIMEOUT) for _ in range(3)]  # three "instances"
    waits = await asyncio.gather(*(states[i % 3].hit("ip:192.0.2.9", 60.0 / 10, 10) for i in range(RACERS)))
    assert sum(1 for w in waits if w == 0) == 10
    assert all(0 < w <= 6.0 for w in waits if w)  # one interval at most: the next slot
    # A short period refills: 3 per 0.3 s lets one more through every 0.1 s.
    assert [await states[0].hit("fast", 0.1, 3) for _ in range(4)][:3] == [0, 0, 0]
    await asyncio.sleep(0.12)
    assert await states[1].hit("fast", 0.1, 3) == 0
    for state in states:
        await state.aclose()


async def test_down_and_slow_redis_fail_fast_and_recover(redis_server: RedisProcess) -> None:  # noqa: F811
    state = RedisState(redis_server.url, namespace="t4", timeout=0.3)
    assert await state.hit("b", 1.0, 100) == 0
    redis_server.pause()  # slow: accepts, never answers
    started = time.monotonic()
    with pytest.raises(SharedStateUnavailable):
        await state.has_key(b"x" * 32)
    assert time.monotonic() - started < 3  # bounded by the timeout, not hung
    redis_server.resume()
    assert not await state.has_key(b"x" * 32)
    redis_server.kill()  # down
    for call in (state.hit("b", 1.0, 100), state.open_session("192.0.2.1", "m", 1), state.count_keys()):
        with pytest.raises(SharedStateUnavailable):
            await call
    redis_server.start()  # back, on the same port
    assert await state.hit("b", 1.0, 100) == 0
    await state.aclose()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        RedisState(ttl=0)
    assert "secret" not in repr(RedisState("redis://127.0.0.1:1/0", namespace="shop"))
