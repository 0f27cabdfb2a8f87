"""Typed topics: ``server.topic(name, Model)``, ``await topic.publish(obj)``, ``topic.subscribe()``.

A publish checks ``obj`` once (a dict is validated into the model, an instance passes as
it is), then hands the same instance to every subscription of this process: no copy and
no encoding per subscriber. With a ``TopicBus`` (``Server(shared_state=RedisState(...))``)
the event is encoded once and published to the backend first; the other processes decode
it once each and fan it out the same way (their bus skips what this process published).

Each subscription is a bounded queue of at most ``max_buffered`` events. One that falls
further behind is dropped from the topic at once (the publisher never waits for it, the
other subscribers never notice); it yields the events it holds, then raises
``SlowConsumer`` (ERR_SLOW_CONSUMER). Leaving ``async with`` unsubscribes at once, by
cancellation too, and frees what it held: no task, no reference is left.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from ..wire.errors import ERR_SLOW_CONSUMER, ApiError, EventInvalid, UsageError
from .state import SharedState, TopicBus

logger = logging.getLogger("asyncapy")

#: The default of ``max_buffered``: a subscriber this far behind (a second of a busy
#: topic, a few hundred KiB of small events) is too slow to ever catch up.
DEFAULT_MAX_BUFFERED: Final = 1000

#: A topic name: also a Redis channel and an AsyncAPI channel key, so no spaces or braces.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*")

M = TypeVar("M", bound=BaseModel)

_NEW: Final = 0
_OPEN: Final = 1
_BEHIND: Final = 2
_CLOSED: Final = 3


class SlowConsumer(ApiError):
    """A subscription fell more than ``max_buffered`` events behind; it was unsubscribed."""

    def __init__(self, topic: str, max_buffered: int) -> None:
        super().__init__(ERR_SLOW_CONSUMER, f"the subscription to topic {topic!r} fell more than {max_buffered} events behind")
        self.topic = topic


def check_topic(name: Any, model: Any, max_buffered: Any) -> None:
    """A ``UsageError`` naming the topic and the fix when the arguments of ``topic()`` are wrong."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise UsageError(
            f"topic {name!r}: a topic name is a non-empty string of letters, digits and _ . : - "
            "(starting with a letter or digit), such as 'prices'"
        )
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise UsageError(f"topic {name!r}: its type must be a pydantic model class, such as server.topic({name!r}, Tick), not {model!r}")
    if not isinstance(max_buffered, int) or isinstance(max_buffered, bool) or max_buffered < 1:
        raise UsageError(f"topic {name!r}: max_buffered must be an int of 1 or more (default {DEFAULT_MAX_BUFFERED}), not {max_buffered!r}")


class Topic(Generic[M]):
    """A named stream of ``M`` events; see the module docstring.

    Made at registration by ``server.topic(name, Model)`` (or ``router.topic``).

    Example:
        prices = server.topic("prices", Tick)
        await prices.publish(Tick(symbol="ACME", price=12.5))
        async with prices.subscribe() as ticks:
            async for tick in ticks:
                ...
    """

    __slots__ = ("name", "model", "max_buffered", "_subs", "_bus")

    def __init__(self, name: str, model: type[M], max_buffered: int = DEFAULT_MAX_BUFFERED) -> None:
        check_topic(name, model, max_buffered)
        self.name = name
        self.model = model
        self.max_buffered = max_buffered
        self._subs: dict[Subscription[M], None] = {}
        self._bus: TopicBus | None = None

    def bind(self, state: SharedState | None) -> None:
        """Carry this topic's events through ``state``'s bus (None: in this process only)."""
        bus = None if state is None else state.topic_bus()
        if bus is not None:
            bus.attach(self.name, self._receive)
        self._bus = bus

    @property
    def subscribers(self) -> int:
        """How many subscriptions of this process are open."""
        return len(self._subs)

    async def publish(self, event: M | Mapping[str, Any]) -> None:
        """Send ``event`` to every subscription open now (in every process sharing the bus).

        Raises ``EventInvalid`` if ``event`` is neither an ``M`` nor a dict valid as one,
        and ``SharedStateUnavailable`` if the bus (Redis) cannot take it: then nobody
        receives it.
        """
        checked = self._checked(event)
        bus = self._bus
        if bus is not None:
            await bus.publish(self.name, checked.model_dump_json(by_alias=True).encode())
        self._deliver(checked)

    def subscribe(self) -> Subscription[M]:
        """``async with topic.subscribe() as events: async for event in events``: the events
        published after the ``async with`` was entered (see the module docstring)."""
        return Subscription(self)

    def _checked(self, event: Any) -> M:
        if isinstance(event, self.model):
            return event
        if isinstance(event, Mapping):
            try:
                return self.model.model_validate(event)
            except ValidationError as exc:
                raise EventInvalid(self.name, f"the event is not a valid {self.model.__name__}: {exc}", exc) from exc
        raise EventInvalid(self.name, f"publish takes a {self.model.__name__} or a dict, not a {type(event).__name__}")

    def _deliver(self, event: M) -> None:
        """Hand ``event`` to each subscription; drop those that are too far behind."""
        subs = self._subs
        if not subs:
            return
        behind: list[Subscription[M]] | None = None
        for sub in subs:
            if not sub._push(event):
                if behind is None:
                    behind = []
                behind.append(sub)
        if behind is not None:
            for sub in behind:
                del subs[sub]

    def end_subscriptions(self) -> None:
        """End every open subscription: each yields what it holds, then its iteration stops
        (the server stops: a stream of a topic ends rather than waiting for the deadline)."""
        subs, self._subs = self._subs, {}
        for sub in subs:
            sub._end()

    def _receive(self, data: bytes) -> None:
        """An event another process published (through the bus)."""
        if not self._subs:
            return
        try:
            event = self.model.model_validate_json(data)
        except ValidationError as exc:  # another version of the app shares the namespace
            logger.warning("topic %r: dropped an event from another process that is not a valid %s: %s", self.name, self.model.__name__, exc)
            return
        self._deliver(event)

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, {self.model.__name__})"


class Subscription(Generic[M]):
    """One subscriber's bounded queue of events; an async context manager and iterator.

    Made by ``topic.subscribe()``; receives from the moment ``async with`` enters it
    until it leaves. Iterating raises ``SlowConsumer`` after the events it held when it
    fell behind.
    """

    __slots__ = ("_topic", "_events", "_limit", "_waiter", "_state", "_loop")

    def __init__(self, topic: Topic[M]) -> None:
        self._topic = topic
        self._events: deque[M] = deque()
        self._limit = topic.max_buffered
        self._waiter: asyncio.Future[None] | None = None
        self._state = _NEW
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Subscription[M]:
        if self._state != _NEW:
            raise RuntimeError("a subscription is entered once: call topic.subscribe() again")
        self._loop = asyncio.get_running_loop()
        topic = self._topic
        topic._subs[self] = None  # from now on: nothing published is missed
        self._state = _OPEN
        bus = topic._bus
        if bus is not None:
            try:
                await bus.ready()  # the other processes' events too
            except BaseException:
                self._close()
                raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()

    def __aiter__(self) -> Subscription[M]:
        return self

    async def __anext__(self) -> M:
        events = self._events
        while True:
            if events:
                return events.popleft()
            state = self._state
            if state == _OPEN:
                assert self._loop is not None
                waiter = self._waiter = self._loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = None
                continue
            if state == _BEHIND:
                self._state = _CLOSED  # raised once; then the iteration is over
                raise SlowConsumer(self._topic.name, self._limit)
            if state == _NEW:
                raise RuntimeError("iterate a subscription inside `async with topic.subscribe() as events:`")
            raise StopAsyncIteration

    def _push(self, event: M) -> bool:
        """Queue ``event``; False (and no longer subscribed) when ``max_buffered`` are queued already."""
        events = self._events
        if len(events) >= self._limit:
            self._state = _BEHIND
            self._wake()
            return False
        events.append(event)
        self._wake()
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> None:
        """No more events will come: the ones held are still yielded."""
        if self._state == _OPEN:
            self._state = _CLOSED
        self._wake()

    def _close(self) -> None:
        self._topic._subs.pop(self, None)
        self._events.clear()
        self._state = _CLOSED
        self._wake()

    @property
    def pending(self) -> int:
        """Events received and not yet iterated."""
        return len(self._events)

    def __repr__(self) -> str:
        return f"<Subscription to {self._topic.name!r}, {len(self._events)} pending>"


def check_unique(topics: Mapping[str, Topic[Any]], topic: Topic[Any], where: str) -> None:
    """A ``UsageError`` when ``topics`` has another topic named like ``topic``."""
    other = topics.get(topic.name)
    if other is not None and other is not topic:
        raise UsageError(f"topic {topic.name!r}: {where} has a topic of that name already ({other!r}); give each topic its own name")


__all__ = ["DEFAULT_MAX_BUFFERED", "SlowConsumer", "Subscription", "Topic", "check_topic", "check_unique"]

