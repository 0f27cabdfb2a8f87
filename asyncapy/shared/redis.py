"""``RedisState``: the state several servers share, kept in Redis (the ``redis`` extra).

Keys, under ``namespace`` (so several APIs can share one Redis):

- ``<ns>:sessions:<address>``: a sorted set of the open sessions of one IP address,
  scored by when each expires (Redis's clock, ms); live sessions are refreshed every
  ``ttl / 3`` seconds, so those of an instance that died are gone within ``ttl``;
- ``<ns>:apikeys``: a hash of SHA-256 digests of the accepted API keys (never the keys);
- ``<ns>:rate:<limit>:<who>``: one GCRA timestamp per rate-limit bucket (µs), expiring
  when the bucket is full again;
- the pub/sub channel ``<ns>:topic:<name>`` per topic (``asyncapy.shared.redis_topics``).

Every check is one round trip: a Lua script (sessions, rate limits, atomic on the
Redis server and timed by its clock, so instances need no synchronised clocks) or
one command (``HEXISTS`` for a key). Each call is bounded by ``timeout``: a Redis that
is down or slow raises ``SharedStateUnavailable`` instead of hanging a connection,
and the next call reconnects, so service resumes as soon as Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Final, TypeVar

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    from ..model.install import install_hint

    raise ImportError(f"asyncapy.redis needs the redis package: {install_hint('redis')}") from exc

from .state import DEFAULT_TTL, SharedState, SharedStateUnavailable, TopicBus

logger = logging.getLogger("asyncapy")

#: Seconds a call to Redis may take (connecting included) before it counts as down.
#: A local or same-datacenter Redis answers in well under a millisecond.
DEFAULT_TIMEOUT: Final = 0.5
#: Connections to Redis per process and event loop. A check holds one for one round
#: trip, so a few dozen serve thousands of packets a second; a burst beyond them waits
#: (within ``timeout``) instead of opening one connection per waiting packet.
DEFAULT_MAX_CONNECTIONS: Final = 32
#: "Shared state unavailable" is logged at most this often (a flood of failing packets
#: would otherwise write one warning each).
_LOG_EVERY: Final = 5.0

_OPEN_SESSION: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_REFRESH_SESSIONS: Final = """
local t = redis.call('TIME')
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

#: GCRA: ARGV[1] the emission interval, ARGV[2] the tolerance (burst - 1 intervals), in µs.
#: Returns 0 when counted, else the µs until the packet would fit.
_HIT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local ahead = tat - now
if ahead > tolerance then
  return math.ceil(ahead - tolerance)
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return 0
"""


_T = TypeVar("_T")

if sys.version_info >= (3, 11):

    async def _within(seconds: float, awaitable: Awaitable[_T]) -> _T:
        """``await awaitable``, cancelled after ``seconds`` (redis-py drops a connection whose
        command was cancelled: no reply is ever read for the wrong command)."""
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # Python 3.10: no asyncio.timeout

    async def _within(seconds: float, awaitable: Awaitable[_T]) -> _T:
        return await asyncio.wait_for(awaitable, seconds)


class RedisState(SharedState):
    """Shared state in Redis; see the module docstring.

    Args:
        url: where Redis is, e.g. ``"redis://127.0.0.1:6379/0"`` (``rediss://`` for TLS).
        namespace: prefix of every key; servers of one API share it.
        ttl: seconds after which the sessions of an instance that stopped are forgotten.
        timeout: seconds a Redis call may take before it fails (``SharedStateUnavailable``),
            waiting for a free connection included.
        max_connections: connections to Redis per process (and event loop).
        client: a ``redis.asyncio.Redis`` to use instead of one made from ``url``
            (then its own timeouts and retries apply).

    Safe to make at import time and to use from several worker processes and event
    loops: the connection pool is made on first use, per process and loop.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "asyncapy",
        ttl: float = DEFAULT_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        client: aioredis.Redis | None = None,
    ) -> None:
        if ttl <= 0 or timeout <= 0:
            raise ValueError("ttl and timeout must be above 0 seconds")
        self.url = url
        self.namespace = namespace
        self.ttl = float(ttl)
        self.timeout = float(timeout)
        self.max_connections = max_connections
        self._given = client
        self._client: aioredis.Redis | None = None
        self._owner: tuple[int, asyncio.AbstractEventLoop] | None = None
        self._scripts: dict[str, Any] = {}
        self._down_since: float | None = None
        self._logged_at = 0.0
        self._bus: TopicBus | None = None

    # -- the connection -----------------------------------------------------------

    @property
    def redis(self) -> aioredis.Redis:
        """The client of this process and event loop (made on first use)."""
        owner = (os.getpid(), asyncio.get_running_loop())
        if self._client is None or self._owner != owner:
            self._owner = owner
            self._client = self._given or aioredis.Redis(
                connection_pool=aioredis.BlockingConnectionPool.from_url(
                    self.url,
                    max_connections=self.max_connections,
                    timeout=self.timeout,  # waiting for a free connection
                    socket_timeout=self.timeout,
                    socket_connect_timeout=self.timeout,
                    retry=Retry(NoBackoff(), 0),  # fail fast: the caller answers ERR_INTERNAL now
                )
            )
            self._scripts = {}
        return self._client

    def _script(self, name: str, source: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.redis.register_script(source)
        return script

    async def _call(self, what: str, awaitable: Any) -> Any:
        """Await one Redis call, within ``timeout`` as a whole (the wait for a pooled
        connection and the reply, each bounded by the client, could add up to twice
        that); a failure or a timeout is ``SharedStateUnavailable``."""
        try:
            result = await _within(self.timeout, awaitable)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._went_down(what, exc)
            raise SharedStateUnavailable(f"Redis at {self.url} did not answer ({what}): {exc!r}") from exc
        if self._down_since is not None:
            logger.warning("The shared state (Redis at %s) answers again after %.1f s", self.url, time.monotonic() - self._down_since)
            self._down_since = None
        return result

    def _went_down(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        if now - self._logged_at >= _LOG_EVERY:
            self._logged_at = now
            logger.warning("The shared state (Redis at %s) is unavailable (%s): %r", self.url, what, exc)

    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    # -- SharedState -----------------------------------------------------------------

    async def open_session(self, address: str, member: str, limit: int) -> bool:
        script = self._script("open", _OPEN_SESSION)
        ttl_ms = int(self.ttl * 1000)
        return bool(await self._call("open a session", script(keys=[self._key("sessions", address)], args=[limit, member, ttl_ms])))

    async def close_session(self, address: str, member: str) -> None:
        await self._call("close a session", self.redis.zrem(self._key("sessions", address), member))

    async def refresh_sessions(self, members: Mapping[str, Sequence[str]]) -> None:
        script = self._script("refresh", _REFRESH_SESSIONS)
        ttl_ms = int(self.ttl * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for address, names in members.items():
                await script(keys=[self._key("sessions", address)], args=[ttl_ms, *names], client=pipe)
            await self._call("refresh sessions", pipe.execute())

    async def add_key(self, digest: bytes) -> None:
        await self._call("add a key", self.redis.hset(self._key("apikeys"), digest.hex(), int(time.time())))

    async def remove_key(self, digest: bytes) -> bool:
        return bool(await self._call("revoke a key", self.redis.hdel(self._key("apikeys"), digest.hex())))

    async def has_key(self, digest: bytes) -> bool:
        return bool(await self._call("check a key", self.redis.hexists(self._key("apikeys"), digest.hex())))

    async def count_keys(self) -> int:
        return int(await self._call("count keys", self.redis.hlen(self._key("apikeys"))))

    async def hit(self, bucket: str, interval: float, burst: int) -> float:
        script = self._script("hit", _HIT)
        interval_us = max(1, round(interval * 1_000_000))
        wait = await self._call("rate limit", script(keys=[self._key("rate", bucket)], args=[interval_us, interval_us * (burst - 1)]))
        return int(wait) / 1_000_000

    def topic_bus(self) -> TopicBus:
        """Topic events through Redis pub/sub (``asyncapy.shared.redis_topics``)."""
        if self._bus is None:
            from .redis_topics import RedisTopicBus

            self._bus = RedisTopicBus(self)
        return self._bus

    async def aclose(self) -> None:
        """Close this process's connections to Redis (they reopen on the next call)."""
        if self._bus is not None:
            await self._bus.aclose()
        if self._client is not None and self._given is None:
            await self._client.aclose(close_connection_pool=True)
        self._client = None

    def __repr__(self) -> str:
        return f"RedisState({self.url!r}, namespace={self.namespace!r})"
