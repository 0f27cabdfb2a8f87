"""How a layer of the packet path answers: through the packet's exchange (``asyncapy.serve.exchange``).

The application layer (middleware, exception handlers, the routes they wrap) and the
operations layer (observation) sit below the serving layer that implements it; they
see the one way out as this protocol, reached from the ``Client`` the packet came on.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol, cast

from .peer import Client


class StreamClosed(Exception):
    """The connection under a stream is closing: the stream ends, with nothing to answer."""


class Answers(Protocol):
    """The one way out of a request: every reply and error reply of a packet leaves through it."""

    #: The outcome code of the packet being handled when it is an error (None: OK).
    code: str | None

    @property
    def writes(self) -> int:
        """Frames written for the packet being handled."""

    def reply(self, result: Any, encoding: int) -> None:
        """Send what a handler returned (a dict or a model; anything else is no reply)."""

    def error(self, code: str, detail: Any = None, encoding: int | None = None, errors: Any = None) -> None:
        """The packet's error reply, unless it was answered already (then it is logged)."""

    def note(self, handler: str) -> None:
        """A handler (or a layer answering for one) runs for the packet: observation names it."""

    def mapped(self, reply: Any, encoding: int) -> None:
        """An exception handler's reply: the packet's answer unless it was answered already."""

    def open_stream(self) -> None:
        """A streaming handler starts answering the packet being handled (DESIGN §9)."""

    def item(self, obj: Any) -> Awaitable[None]:
        """Write one item of the open stream; awaiting it waits while the write buffer is full.

        Raises ``StreamClosed`` when the connection is closing."""

    def end(self, error: Any = None) -> None:
        """End the open stream (``error``: the map that ends it, else None); then nothing more is answered."""


def answers_of(client: Client) -> Answers:
    """The exchange ``client``'s packets are answered through (its connection's)."""
    exchange = getattr(client._link, "exchange", None)
    if exchange is None:
        raise RuntimeError("this client is not served by a connection (it was closed, or made by hand)")
    return cast(Answers, exchange)
