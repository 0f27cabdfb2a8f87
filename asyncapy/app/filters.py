"""Filters: conditions a packet must meet besides validating, composed with ``&``, ``|``, ``~``.

A filter is an object with ``check(client, packet)`` or a plain callable of the same
arguments; either may be sync or async. ``Ip``, ``Fields`` and ``ApiKey`` are *cheap*:
the compiled plan runs them before validation. Other filters run after the packet
validated, so ``packet.data`` is already the handler's model instance. Which handlers
run never depends on that order (DESIGN §3).
"""

from __future__ import annotations

import inspect
import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Union

from ..shared.apikeys import APIKeyFactory
from ..shared.ratelimit import RateLimit

if TYPE_CHECKING:
    from ..model.packet import Packet
    from ..model.peer import Client

CheckResult = Union[bool, Awaitable[bool]]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class Filter:
    """Base of every filter: ``check``, ``describe``, ``json_schema`` and composition."""

    cheap: ClassVar[bool] = False

    def check(self, client: Client, packet: Packet[Any]) -> CheckResult:
        raise NotImplementedError

    def describe(self) -> str:
        """What the filter asks for, in words (never a secret)."""
        return type(self).__name__

    def json_schema(self) -> dict[str, Any] | None:
        """A JSON Schema fragment the payload must satisfy, or None if not expressible."""
        return None

    def __and__(self, other: object) -> Filter:
        return And(self, as_filter(other, composing=True))

    def __rand__(self, other: object) -> Filter:
        return And(as_filter(other, composing=True), self)

    def __or__(self, other: object) -> Filter:
        return Or(self, as_filter(other, composing=True))

    def __ror__(self, other: object) -> Filter:
        return Or(as_filter(other, composing=True), self)

    def __invert__(self) -> Filter:
        return Not(self)

    def __repr__(self) -> str:
        return f"<filter: {self.describe()}>"


def is_filter(obj: object) -> bool:
    """True for a ``Filter``, an object with a callable ``check``, or a callable.

    A class is not a filter (``Filters.Ip`` instead of ``Filters.Ip("::1")`` is a slip).
    """
    if isinstance(obj, type):
        return False
    return isinstance(obj, Filter) or callable(getattr(obj, "check", None)) or callable(obj)


def as_filter(obj: object, *, composing: bool = False) -> Filter:
    """``obj`` as a ``Filter``; a TypeError if it is not one (never a filter that never matches)."""
    if isinstance(obj, Filter):
        return obj
    if is_filter(obj):
        return Custom(obj)
    verb = "compose a filter with" if composing else "use as a filter"
    raise TypeError(f"cannot {verb} {obj!r}: a filter has check(client, packet) or is a callable")


class Custom(Filter):
    """A user's filter: a callable, or an object with ``check``; sync or async."""

    def __init__(self, target: object) -> None:
        check = getattr(target, "check", None)
        self._check: Callable[..., Any] = check if callable(check) else target  # type: ignore[assignment]
        self.target = target

    def check(self, client: Client, packet: Packet[Any]) -> CheckResult:
        return self._check(client, packet)  # type: ignore[no-any-return]

    def describe(self) -> str:
        target = self.target
        name = getattr(target, "__qualname__", None) or type(target).__qualname__
        return f"custom filter {name}"


async def _awaited(result: Awaitable[bool]) -> bool:
    return bool(await result)


class And(Filter):
    """Both filters pass (the right one is not checked when the left fails)."""

    def __init__(self, left: Filter, right: Filter) -> None:
        self.left, self.right = left, right
        self.cheap = left.cheap and right.cheap  # type: ignore[misc]

    def check(self, client: Client, packet: Packet[Any]) -> CheckResult:
        first = self.left.check(client, packet)
        if inspect.isawaitable(first):
            return self._rest(first, client, packet)
        return self.right.check(client, packet) if first else False

    async def _rest(self, first: Awaitable[bool], client: Client, packet: Packet[Any]) -> bool:
        if not await first:
            return False
        second = self.right.check(client, packet)
        return bool(await second) if inspect.isawaitable(second) else bool(second)

    def describe(self) -> str:
        return f"({self.left.describe()} and {self.right.describe()})"

    def json_schema(self) -> dict[str, Any] | None:
        parts = [s for s in (self.left.json_schema(), self.right.json_schema()) if s is not None]
        return {"allOf": parts} if parts else None


class Or(Filter):
    """Either filter passes (the right one is not checked when the left passes)."""

    def __init__(self, left: Filter, right: Filter) -> None:
        self.left, self.right = left, right
        self.cheap = left.cheap and right.cheap  # type: ignore[misc]

    def check(self, client: Client, packet: Packet[Any]) -> CheckResult:
        first = self.left.check(client, packet)
        if inspect.isawaitable(first):
            return self._rest(first, client, packet)
        return True if first else self.right.check(client, packet)

    async def _rest(self, first: Awaitable[bool], client: Client, packet: Packet[Any]) -> bool:
        if await first:
            return True
        second = self.right.check(client, packet)
        return bool(await second) if inspect.isawaitable(second) else bool(second)

    def describe(self) -> str:
        return f"({self.left.describe()} or {self.right.describe()})"

    def json_schema(self) -> dict[str, Any] | None:
        left, right = self.left.json_schema(), self.right.json_schema()
        return None if left is None or right is None else {"anyOf": [left, right]}


class Not(Filter):
    """The inner filter fails."""

    def __init__(self, inner: Filter) -> None:
        self.inner = inner
        self.cheap = inner.cheap  # type: ignore[misc]

    def check(self, client: Client, packet: Packet[Any]) -> CheckResult:
        result = self.inner.check(client, packet)
        if inspect.isawaitable(result):
            return self._negate(result)
        return not result

    async def _negate(self, result: Awaitable[bool]) -> bool:
        return not await result

    def describe(self) -> str:
        return f"not {self.inner.describe()}"

    def json_schema(self) -> dict[str, Any] | None:
        inner = self.inner.json_schema()
        return None if inner is None else {"not": inner}


class Ip(Filter):
    """The client's IP address is one of ``addresses`` (IPv4/IPv6 addresses or CIDR networks)."""

    cheap = True

    def __init__(self, *addresses: str) -> None:
        if not addresses:
            raise ValueError("Ip() needs at least one address or network")
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(a, strict=False) for a in addresses)

    def check(self, client: Client, packet: Packet[Any]) -> bool:
        try:
            address = ipaddress.ip_address(client.address)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return self._contains(address) or self._contains(address.ipv4_mapped)
        return self._contains(address)

    def _contains(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)

    def describe(self) -> str:
        return "client address in " + ", ".join(str(n) for n in self.networks)


class Fields(Filter):
    """The payload has exactly these keys; a regex value must fullmatch ``str(value)``.

    ``Fields(user=r"\\w+", token=None)``: keys ``user`` and ``token`` and no other,
    ``user`` matching the regex, ``token`` anything.
    """

    cheap = True

    def __init__(self, **fields: str | None) -> None:
        self.fields = dict(fields)
        self._keys = frozenset(fields)
        self._patterns = tuple((k, re.compile(p)) for k, p in fields.items() if p is not None)

    def check(self, client: Client, packet: Packet[Any]) -> bool:
        payload = packet.payload
        if len(payload) != len(self._keys) or not self._keys.issuperset(payload):
            return False
        return all(p.fullmatch(str(payload[k])) is not None for k, p in self._patterns)

    def describe(self) -> str:
        each = [name if rule is None else f"{name} (matching {rule!r})" for name, rule in self.fields.items()]
        return "exactly the fields " + (", ".join(each) or "(none)")

    def json_schema(self) -> dict[str, Any]:
        props = {k: ({} if p is None else {"pattern": f"^(?:{p})$"}) for k, p in self.fields.items()}
        return {"type": "object", "required": list(self.fields), "properties": props, "additionalProperties": False}


class ApiKey(Filter):
    """The payload's ``field`` (default ``"api_key"``) holds one of the factory's keys.

    With a factory whose keys are in a shared store the check is one round trip: the
    filter is then async and runs after validation; when the store does not answer
    the packet gets ERR_INTERNAL (the shared state is unavailable).
    """

    cheap = True

    def __init__(self, keys: APIKeyFactory | Iterable[str], field: str = "api_key") -> None:
        self.keys = keys if isinstance(keys, APIKeyFactory) else APIKeyFactory(keys)
        self.field = field
        if self.keys.store is not None:
            self.cheap = False  # type: ignore[misc]  # an awaitable check: not for the cheap, sync pass

    def check(self, client: Client, packet: Packet[Any]) -> CheckResult:
        if self.keys.store is not None:
            return self.keys.acontains(packet.payload.get(self.field))
        return self.keys.contains(packet.payload.get(self.field))

    def describe(self) -> str:
        return f"a valid API key in field {self.field!r}"

    def json_schema(self) -> dict[str, Any]:
        return {"type": "object", "required": [self.field], "properties": {self.field: {"type": "string"}}}


class Filters:
    """AsyncAPY's spelling: ``Filters.Ip``, ``Filters.Fields``, ``Filters.APIFactory``."""

    Ip = Ip
    Fields = Fields
    ApiKey = ApiKey
    APIFactory = ApiKey
    Filter = Filter


__all__ = [
    "And", "ApiKey", "Custom", "Fields", "Filter", "Filters", "Ip", "Not", "Or", "RateLimit", "as_filter", "is_filter",
]  # fmt: skip
