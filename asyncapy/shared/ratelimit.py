"""``RateLimit``: at most N packets per period per client, in memory or shared.

The algorithm is GCRA (the generic cell rate algorithm, a token bucket kept as one
timestamp): a limit of N per period lets a burst of N through, then one more every
``period / N``. A bucket is one number (the "theoretical arrival time"), so a check is
one read and one write: in memory a dict lookup, in Redis one Lua script (one round
trip, atomic, on Redis's clock, so concurrent checks from many instances count
exactly). A packet over the limit is not counted; it gets ERR_RATE_LIMITED with a
``detail`` that says when to retry, and the connection stays open.

Example:
    server = Server(rate_limit=RateLimit("100/minute"))           # every packet, per IP
    keyed = RateLimit("10/second", per="api_key", state=redis_state)  # per key, on every instance
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, Union

from ..wire.errors import ERR_RATE_LIMITED, ApiError
from .state import SharedState

from pydantic import BaseModel

from ..model.packet import Packet
from ..model.peer import Client

Per = Union[Literal["ip", "api_key"], Callable[[Client, Packet[Any]], str]]

_UNITS: Final = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip
_RATE: Final = re.compile(r"\s*(\d+)\s*(?:/|per)\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*")
#: The in-memory buckets are swept of stale entries when they outgrow this (and then
#: when they double): memory stays proportional to the clients active within a period.
_SWEEP_FLOOR: Final = 1024


def parse_rate(text: str) -> tuple[int, float]:
    """``"100/minute"``, ``"10/30 seconds"``, ``"5 per s"`` -> (count, period in seconds).

    Raises:
        ValueError: the text is not a rate, or the count or period is 0.
    """
    match = _RATE.fullmatch(text.lower()) if isinstance(text, str) else None
    if match is None or match.group(3) not in _UNITS:
        units = ", ".join(sorted({"second", "minute", "hour", "day"}))
        raise ValueError(f"a rate is 'COUNT/[N ]UNIT' with UNIT one of {units}, e.g. '100/minute', not {text!r}")
    count = int(match.group(1))
    period = float(match.group(2) or 1) * _UNITS[match.group(3)]
    if count < 1 or period <= 0:
        raise ValueError(f"a rate needs a count and a period above 0, not {text!r}")
    return count, period


class RateLimited(ApiError):
    """Over a ``RateLimit``: an ``ApiError``, so the packet's reply is ERR_RATE_LIMITED
    with ``detail`` saying when to retry; ``retry_after`` is in seconds."""

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(ERR_RATE_LIMITED, detail)
        self.retry_after = retry_after


class RateLimit:
    """At most ``rate`` packets per client; see the module docstring.

    Args:
        rate: ``"COUNT/UNIT"`` or ``"COUNT/N UNIT"``, e.g. ``"100/minute"``, ``"5/10 seconds"``.
        per: who a bucket belongs to: ``"ip"`` (the client's address, the real one
            behind a PROXY header), ``"api_key"`` (the payload's ``field``; packets
            without one count per IP), or a callable ``(client, packet) -> str``.
        state: a ``SharedState`` (``asyncapy.redis.RedisState``) to count across every
            instance; None counts in this process.
        name: the buckets' name in the shared state; limits with the same name share
            buckets. Default: the rate and ``per`` where the limit was made (file:line),
            the same on every instance running the same code.
        field: the payload key holding the API key, for ``per="api_key"``.
    """

    def __init__(
        self,
        rate: str,
        per: Per = "ip",
        *,
        state: SharedState | None = None,
        name: str | None = None,
        field: str = "api_key",
    ) -> None:
        self.rate = rate
        self.count, self.period = parse_rate(rate)
        if not (per in ("ip", "api_key") or callable(per)):
            raise ValueError(f"per must be 'ip', 'api_key' or a callable (client, packet) -> str, not {per!r}")
        self.per = per
        self.state = state
        self.field = field
        self.interval = self.period / self.count
        if name is None:
            caller = sys._getframe(1)
            name = f"{rate}:{per if isinstance(per, str) else getattr(per, '__qualname__', 'custom')}:{caller.f_code.co_filename.rsplit('/', 1)[-1]}:{caller.f_lineno}"
        self.name = name
        self._buckets = _MemoryBuckets(self.interval, self.count)

    def identity(self, client: Client, packet: Packet[Any]) -> str:
        """Whose bucket ``packet`` counts in."""
        per = self.per
        if per == "ip":
            return client.address
        if per == "api_key":
            key = _field(packet, self.field)
            if isinstance(key, str) and key:  # never the key itself in memory or in Redis
                return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
            return "ip:" + client.address
        return str(per(client, packet))

    def hit_local(self, client: Client, packet: Packet[Any]) -> float:
        """Count ``packet`` in this process: 0.0, or the seconds to wait (not counted then)."""
        return self._buckets.hit(self.identity(client, packet))

    def local_counter(self) -> Callable[[Client, Packet[Any]], float]:
        """``hit_local`` made for one caller that calls it per packet (a call less for ``per="ip"``)."""
        if self.per != "ip":
            return self.hit_local
        hit = self._buckets.hit
        return lambda client, packet: hit(client.address)

    async def hit(self, client: Client, packet: Packet[Any]) -> float:
        """Count ``packet`` (in ``state`` when set): 0.0, or the seconds to wait.

        Raises:
            SharedStateUnavailable: the shared state did not answer.
        """
        if self.state is None:
            return self._buckets.hit(self.identity(client, packet))
        return await self.state.hit(f"{self.name}:{self.identity(client, packet)}", self.interval, self.count)

    async def acquire(self, client: Client, packet: Packet[Any] | BaseModel | Mapping[str, Any]) -> None:
        """Count ``packet``; raise ``RateLimited`` when it is over the limit.

        The form for a handler's body (``await limit.acquire(client, packet)``); the
        reply is then ERR_RATE_LIMITED. ``packet`` may be the ``Packet``, or the model
        or map the handler received.

        Raises:
            RateLimited: over the limit (an ``ApiError``).
            SharedStateUnavailable: the shared state did not answer (an ``ApiError``).
        """
        wait = await self.hit(client, packet)  # type: ignore[arg-type]
        if wait:
            raise RateLimited(self.detail(wait), wait)

    async def __call__(self, client: Client, packet: Packet) -> None:
        """The dependency form: ``dependencies=[RateLimit(...)]`` on a handler or a ``Router``."""
        await self.acquire(client, packet)

    def detail(self, wait: float) -> str:
        """The ERR_RATE_LIMITED detail for a packet that must wait ``wait`` seconds."""
        return f"over the rate limit of {self.rate}; retry in {wait:.3g} s"

    def __repr__(self) -> str:
        where = "shared" if self.state is not None else "in memory"
        return f"RateLimit({self.rate!r}, per={self.per!r}, {where})"


def _field(packet: Any, name: str) -> Any:
    """``packet``'s field ``name``: a ``Packet``'s payload, a model's attribute or a map's key."""
    payload = getattr(packet, "payload", None)
    if isinstance(payload, Mapping):
        return payload.get(name)
    if isinstance(packet, Mapping):
        return packet.get(name)
    return getattr(packet, name, None)


class _MemoryBuckets:
    """GCRA buckets in a dict: bucket -> theoretical arrival time (monotonic seconds)."""

    __slots__ = ("_interval", "_tolerance", "_tats", "_sweep_at", "_clock")

    def __init__(self, interval: float, burst: int) -> None:
        self._interval = interval
        self._tolerance = interval * (burst - 1)
        self._tats: dict[str, float] = {}
        self._sweep_at = _SWEEP_FLOOR
        self._clock = time.monotonic

    def hit(self, bucket: str) -> float:
        now = self._clock()
        tats = self._tats
        tat = tats.get(bucket, now)
        if tat < now:
            tat = now
        ahead = tat - now
        if ahead > self._tolerance:
            return ahead - self._tolerance
        tats[bucket] = tat + self._interval
        if len(tats) > self._sweep_at:
            self._sweep(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        """Drop buckets that are full again (their time has passed): they equal a new one."""
        tats = self._tats
        for bucket in [b for b, tat in tats.items() if tat <= now]:
            del tats[bucket]
        self._sweep_at = max(_SWEEP_FLOOR, 2 * len(tats))
