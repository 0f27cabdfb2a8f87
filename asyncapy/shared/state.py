"""State shared by several servers: what a backend must do, and what asyncapy does with it.

``SharedState`` is the interface a backend implements (``asyncapy.redis.RedisState`` is
the one shipped); everything asyncapy keeps across instances goes through these few
calls, each one round trip:

- sessions per IP address for ``session_limit`` (``open_session`` / ``close_session``,
  kept alive by ``refresh_sessions``: the sessions of an instance that stops
  refreshing are forgotten within ``ttl`` seconds);
- API key digests (``add_key`` / ``remove_key`` / ``has_key``);
- rate-limit buckets (``hit``: an atomic check-and-count);
- the events of typed topics (``topic_bus()``: a ``TopicBus``, or None to keep them in
  each process).

A backend that cannot answer (down, or slower than its timeout) raises
``SharedStateUnavailable``; what needed it gets ERR_INTERNAL with
``SHARED_STATE_UNAVAILABLE`` as detail, and everything else goes on.

``SharedSessions`` enforces ``Server(session_limit=N, shared_state=state)``: a new
connection waits at the gate (``asyncapy.gate``) until the backend admitted it.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Final

from ..wire.errors import ERR_INTERNAL, ApiError

logger = logging.getLogger("asyncapy")

#: The ``detail`` of the ERR_INTERNAL reply when the shared state cannot be reached.
SHARED_STATE_UNAVAILABLE: Final = "the shared state is unavailable"

#: The default of ``ttl``: how long the sessions of a dead instance are still counted.
DEFAULT_TTL: Final = 30.0
#: Live sessions are refreshed this many times per ``ttl``, so one late refresh
#: never lets a live session expire.
REFRESHES_PER_TTL: Final = 3


class SharedStateUnavailable(ApiError):
    """The shared state (Redis) did not answer: it is down, unreachable or too slow.

    An ``ApiError``: what needed it gets ERR_INTERNAL with ``SHARED_STATE_UNAVAILABLE``
    as detail (``reason``, for the log, says what failed; it is never sent).
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(ERR_INTERNAL, SHARED_STATE_UNAVAILABLE)
        self.reason = reason


class SharedState(abc.ABC):
    """What a backend shared by several servers provides; see the module docstring.

    Every method is one round trip and raises ``SharedStateUnavailable`` when the
    backend cannot answer within its timeout.
    """

    #: Seconds after which the sessions of an instance that stopped refreshing are forgotten.
    ttl: float = DEFAULT_TTL

    @abc.abstractmethod
    async def open_session(self, address: str, member: str, limit: int) -> bool:
        """Count ``member`` as a session of ``address`` unless ``address`` has ``limit`` already."""

    @abc.abstractmethod
    async def close_session(self, address: str, member: str) -> None:
        """Forget ``member`` (harmless when it is not counted)."""

    @abc.abstractmethod
    async def refresh_sessions(self, members: Mapping[str, Sequence[str]]) -> None:
        """Keep these sessions (address -> members) alive for another ``ttl``."""

    @abc.abstractmethod
    async def add_key(self, digest: bytes) -> None:
        """Accept the API key whose SHA-256 digest is ``digest``."""

    @abc.abstractmethod
    async def remove_key(self, digest: bytes) -> bool:
        """Stop accepting that key; False if it was not known."""

    @abc.abstractmethod
    async def has_key(self, digest: bytes) -> bool:
        """True if the key is accepted."""

    @abc.abstractmethod
    async def count_keys(self) -> int:
        """How many keys are accepted."""

    @abc.abstractmethod
    async def hit(self, bucket: str, interval: float, burst: int) -> float:
        """Count one event in ``bucket`` (a GCRA, see ``asyncapy.ratelimit``) if it fits.

        Returns 0.0 when it was counted, else the seconds until one would fit (nothing
        is counted then).
        """

    def topic_bus(self) -> TopicBus | None:
        """The bus that carries topic events between servers; None: each process keeps its own."""
        return None


class TopicBus(abc.ABC):
    """Carries the events of topics between the servers sharing a backend (``asyncapy.shared.topics``).

    Made once per backend; it keeps one subscription to the backend per process (and
    event loop), whatever the number of topics and local subscribers.
    """

    @abc.abstractmethod
    def attach(self, topic: str, deliver: Callable[[bytes], None]) -> None:
        """Pass the events other processes publish on ``topic`` to ``deliver`` (their encoded bytes)."""

    @abc.abstractmethod
    async def publish(self, topic: str, data: bytes) -> None:
        """Send one encoded event to the other processes; ``SharedStateUnavailable`` when the backend cannot take it."""

    @abc.abstractmethod
    async def ready(self) -> None:
        """Return once this process receives every attached topic's events, or after the
        backend's timeout if it is unavailable (receiving starts when it is back)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop receiving in this process (``ready()`` starts again)."""


class SharedSessions:
    """``session_limit`` across every server sharing ``state``; see the module docstring.

    One per serving run. Sessions are named ``<instance>:<n>``, ``instance`` being
    unique per process and run; they are refreshed every ``ttl / REFRESHES_PER_TTL``
    seconds while any is open.
    """

    def __init__(self, state: SharedState, limit: int) -> None:
        self.state = state
        self.limit = limit
        self.instance = uuid.uuid4().hex
        self._numbers = itertools.count()
        self._members: dict[str, str] = {}  # member -> address
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None

    async def admit(self, address: str) -> str | None:
        """Count a new session of ``address``: its member name, or None when ``address`` is at the limit.

        Raises ``SharedStateUnavailable`` when the backend cannot answer.
        """
        member = f"{self.instance}:{next(self._numbers)}"
        if not await self.state.open_session(address, member, self.limit):
            return None
        self._members[member] = address
        if self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh())
        return member

    def leave(self, address: str, member: str) -> None:
        """A counted session closed: forget it in the shared state."""
        if self._members.pop(member, None) is not None:
            self._spawn(self._close(address, member))

    async def aclose(self) -> None:
        """Wait for the closes under way (each is bounded by the backend's timeout)."""
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _close(self, address: str, member: str) -> None:
        try:
            await self.state.close_session(address, member)
        except SharedStateUnavailable:
            pass  # it expires within ttl

    async def _refresh(self) -> None:
        """While sessions are open, renew them; a failed round is retried at the next."""
        every = self.state.ttl / REFRESHES_PER_TTL
        while self._members:
            await asyncio.sleep(every)
            members: dict[str, list[str]] = {}
            for member, address in self._members.items():
                members.setdefault(address, []).append(member)
            try:
                await self.state.refresh_sessions(members)
            except SharedStateUnavailable:
                pass  # logged by the backend; the next round tries again
        self._refresher = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
