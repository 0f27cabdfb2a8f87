"""``RedisTopicBus``: topic events between servers through Redis pub/sub (``RedisState.topic_bus()``).

Each topic is the Redis channel ``<namespace>:topic:<name>``; a message is the 16-byte id
of the publishing process, then the event's JSON. A publish is one ``PUBLISH`` on the
state's pooled connections, bounded by ``RedisState(timeout=...)`` like every call
(``SharedStateUnavailable`` past it). Each process (and event loop) receives on ONE
dedicated connection subscribed to every attached topic's channel, started by its first
subscription; what it receives is decoded once and fanned out in memory
(``asyncapy.shared.topics``), and what this process published is skipped (it was
delivered here already). When Redis goes away the receiver reconnects with a bounded
backoff and subscribes again; subscriptions stay open meanwhile and miss what was
published while the receiver was not subscribed (Redis pub/sub keeps nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .state import TopicBus

logger = logging.getLogger("asyncapy")

#: The receiver reconnects after this long at first, doubling up to ``BACKOFF_MAX``: a
#: restarted Redis is found again within about two seconds, and a dead one costs one
#: attempt every two seconds per process.
BACKOFF_MIN: Final = 0.05
BACKOFF_MAX: Final = 2.0
#: The receiver waits for a message this long at most before it looks for topics
#: attached since it subscribed (topics are usually all attached before it starts).
POLL: Final = 1.0
#: Bytes of the publisher id that starts every message.
ORIGIN_SIZE: Final = 16


class _State(Protocol):
    """What the bus uses of ``RedisState`` (``asyncapy.shared.redis``, which imports this module)."""

    url: str
    namespace: str
    timeout: float
    _given: aioredis.Redis | None

    @property
    def redis(self) -> aioredis.Redis: ...

    async def _call(self, what: str, awaitable: Awaitable[Any]) -> Any: ...


class RedisTopicBus(TopicBus):
    """One per ``RedisState``; see the module docstring."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self._handlers: dict[bytes, Callable[[bytes], None]] = {}
        self._receiver: _Receiver | None = None

    def channel(self, topic: str) -> str:
        return f"{self.state.namespace}:topic:{topic}"

    def attach(self, topic: str, deliver: Callable[[bytes], None]) -> None:
        self._handlers[self.channel(topic).encode()] = deliver

    async def publish(self, topic: str, data: bytes) -> None:
        origin = self._current().origin
        await self.state._call("publish an event", self.state.redis.publish(self.channel(topic), origin + data))

    async def ready(self) -> None:
        receiver = self._current()
        receiver.start()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(receiver.synced.wait(), self.state.timeout)

    async def aclose(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is not None and receiver.owner == _owner():
            await receiver.aclose()

    def _current(self) -> _Receiver:
        """The receiver of this process and event loop (a fork or a new loop gets its own)."""
        receiver = self._receiver
        if receiver is None or receiver.owner != _owner():
            receiver = self._receiver = _Receiver(self)
        return receiver


def _owner() -> tuple[int, asyncio.AbstractEventLoop]:
    return os.getpid(), asyncio.get_running_loop()


class _Receiver:
    """The subscribed connection of one process and loop, and the task that reads it."""

    def __init__(self, bus: RedisTopicBus) -> None:
        self.bus = bus
        self.owner = _owner()
        self.origin = uuid.uuid4().bytes
        self.synced = asyncio.Event()  # subscribed to every attached channel
        self.task: asyncio.Task[None] | None = None
        self._down_since: float | None = None

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(), name="asyncapy topics receiver")

    async def aclose(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        """Receive until cancelled; reconnect with a bounded backoff when Redis goes away."""
        backoff = BACKOFF_MIN
        while True:
            client = self._client()
            pubsub = client.pubsub()
            try:
                await self._receive(pubsub)
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                self.synced.clear()
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    logger.warning("Topics: lost the Redis subscription at %s (%r); reconnecting", self.bus.state.url, exc)
            except Exception:  # a bug must not end receiving for good
                self.synced.clear()
                logger.exception("Topics: the Redis receiver failed; reconnecting")
            finally:
                await _quietly_close(pubsub, None if client is self.bus.state._given else client, self.bus.state.timeout)
            await asyncio.sleep(backoff)
            backoff = BACKOFF_MIN if self.synced.is_set() else min(backoff * 2, BACKOFF_MAX)

    def _client(self) -> aioredis.Redis:
        given = self.bus.state._given
        if given is not None:
            return given
        timeout = self.bus.state.timeout
        # No socket_timeout: a quiet topic is no failure (get_message bounds each wait).
        return aioredis.Redis.from_url(self.bus.state.url, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))

    async def _receive(self, pubsub: Any) -> None:
        """Subscribe to every attached channel, then pass each message to its topic."""
        handlers = self.bus._handlers
        requested: set[bytes] = set()
        confirmed: set[bytes] = set()
        timeout = self.bus.state.timeout
        while True:
            missing = handlers.keys() - requested
            if missing:
                self.synced.clear()
                await asyncio.wait_for(pubsub.subscribe(*missing), timeout)
                requested |= missing
            message = await pubsub.get_message(timeout=POLL)
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                data = message["data"]
                if data[:ORIGIN_SIZE] != self.origin:
                    deliver = handlers.get(message["channel"])
                    if deliver is not None:
                        deliver(data[ORIGIN_SIZE:])
            elif kind == "subscribe":
                confirmed.add(message["channel"])
                if confirmed >= requested and not self.synced.is_set():
                    self._back()
                    self.synced.set()

    def _back(self) -> None:
        if self._down_since is not None:
            logger.warning("Topics: subscribed to Redis at %s again after %.1f s", self.bus.state.url, time.monotonic() - self._down_since)
            self._down_since = None


async def _quietly_close(pubsub: Any, client: aioredis.Redis | None, timeout: float) -> None:
    """Close the subscription's connection (and its client unless the user gave it); Redis being away is no error here."""
    with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
        await asyncio.wait_for(pubsub.aclose(), timeout)
    if client is None:
        return
    with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
        await asyncio.wait_for(client.aclose(), timeout)
