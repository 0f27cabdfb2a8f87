"""``Packet``: one decoded request (or a reply to send), typed by the handler's model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Generic, Protocol, overload

from pydantic import BaseModel
from typing_extensions import TypeVar

from .aliases import dump_for_wire
from ..wire.codecs import get_codec

#: The event loop time at which the AsyncAProto v2 request being handled in this task
#: expires, set only for requests that have a deadline: an asyncapy client called from
#: the handler sends at most the time left (deadline propagation, DESIGN §8).
REQUEST_DEADLINE: ContextVar[float | None] = ContextVar("asyncapy_request_deadline", default=None)

T = TypeVar("T", default=dict[str, Any])
M = TypeVar("M", bound=BaseModel)


class Sender(Protocol):
    """The peer a received packet came from: an ``asyncapy.Client``, as a packet sees it.

    A protocol, so that this module needs nothing above it (``peer.py`` imports it).
    """

    @property
    def address(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def encoding(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    def send(
        self, packet: Packet[Any] | Mapping[str, Any] | BaseModel, close: bool = False, *, encoding: str | None = None
    ) -> Awaitable[None]: ...

    async def close(self) -> None: ...


class Packet(Mapping[str, Any], Generic[T]):
    """A packet: the decoded payload map, read-only, plus what the router made of it.

    ``data`` is the handler's model instance for a typed handler (``Packet[Model]``),
    else the payload map itself. ``Packet(mapping_or_model, encoding="json")`` builds
    one to send.
    """

    __slots__ = ("data", "payload", "encoding", "sender", "raw", "_stopped")

    data: T
    payload: Mapping[str, Any]
    encoding: str
    sender: Sender | None
    raw: bytes | None

    @overload
    def __init__(
        self: Packet[M], payload: M, encoding: str = ..., *, sender: Sender | None = ..., raw: bytes | None = ...
    ) -> None: ...

    @overload
    def __init__(
        self: Packet[dict[str, Any]],
        payload: Mapping[str, Any],
        encoding: str = ...,
        *,
        sender: Sender | None = ...,
        raw: bytes | None = ...,
    ) -> None: ...

    def __init__(
        self,
        payload: Mapping[str, Any] | BaseModel,
        encoding: str = "json",
        *,
        sender: Sender | None = None,
        raw: bytes | None = None,
    ) -> None:
        get_codec(encoding)  # fail early on an unknown encoding name
        if isinstance(payload, BaseModel):
            self.data = payload  # type: ignore[assignment]
            self.payload = dump_for_wire(payload)  # keyed by its aliases: the wire names
        elif isinstance(payload, Mapping):
            self.payload = payload
            self.data = payload  # type: ignore[assignment]
        else:
            raise TypeError(f"a Packet holds a mapping or a pydantic model, not {type(payload).__name__}")
        self.encoding = encoding
        self.sender = sender
        self.raw = raw
        self._stopped = False

    @staticmethod
    def _received(payload: dict[str, Any], encoding: str, sender: Sender, raw: bytes) -> Packet[Any]:
        """Build a received packet without re-validating what the server just decoded."""
        return received_packet(payload, encoding, sender, raw)

    def _with_data(self, data: Any) -> Packet[Any]:
        """A copy whose ``data`` is a model instance; the dispatcher reads its stop flag."""
        view: Packet[Any] = Packet.__new__(Packet)
        view.payload = self.payload
        view.data = data
        view.encoding = self.encoding
        view.sender = self.sender
        view.raw = self.raw
        view._stopped = False
        return view

    def stop_propagation(self) -> None:
        """Let no handler of a later group see this packet."""
        self._stopped = True

    @property
    def propagation_stopped(self) -> bool:
        return self._stopped

    @property
    def deadline(self) -> float | None:
        """The event loop's time at which this AsyncAProto v2 request expires; None without
        one (v1 packets, v2 requests sent with Deadline-Ms 0). Read from the request's
        stream, so that a packet costs nothing for it."""
        deadline = getattr(getattr(self.sender, "_link", None), "deadline", None)
        return deadline if type(deadline) is float else None

    def time_remaining(self) -> float | None:
        """Seconds left before ``deadline`` (0.0 once it passed), or None without a deadline."""
        deadline = self.deadline
        if deadline is None:
            return None
        return max(0.0, deadline - asyncio.get_running_loop().time())

    def __getitem__(self, key: str) -> Any:
        return self.payload[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.payload)

    def __len__(self) -> int:
        return len(self.payload)

    def __contains__(self, key: object) -> bool:
        return key in self.payload

    def __repr__(self) -> str:
        try:
            text = json.dumps(self.payload, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(dict(self.payload))
        return f"Packet({text})"


_new_object = object.__new__


def received_packet(payload: dict[str, Any], encoding: str, sender: Sender, raw: bytes) -> Packet[Any]:
    """A received packet, built without ``__init__``'s checks (one per packet on the hot path)."""
    packet: Packet[Any] = _new_object(Packet)
    packet.payload = payload
    packet.data = payload
    packet.encoding = encoding
    packet.sender = sender
    packet.raw = raw
    packet._stopped = False
    return packet
