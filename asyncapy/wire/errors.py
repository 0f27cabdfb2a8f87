"""Every exception asyncapy raises, and the wire error codes.

    AsyncAPYError
    ├── ProtocolError          the peer's fault; carries a wire ``code`` (docs/protocol.md)
    │   ├── HeaderInvalid      ERR_HEADER_INVALID
    │   ├── RequestMalformed   ERR_REQUEST_MALFORMED
    │   └── PayloadTooLarge    ERR_PAYLOAD_TOO_LARGE
    ├── UsageError             the programmer's fault; raised at registration time,
    │                          names the handler and says how to fix it (also a TypeError)
    ├── EventInvalid           ``topic.publish(obj)``: obj is not the topic's model (also a ValueError)
    ├── StopPropagation        control flow: ends the dispatch of one packet
    ├── ApiError               an application error reply: ``{"error": code, "detail": ...}``
    │   ├── RateLimited        ERR_RATE_LIMITED, over a ``RateLimit`` (``asyncapy.shared.ratelimit``)
    │   ├── Unauthorized       ERR_UNAUTHORIZED, refused by a ``SecurityScheme`` (``asyncapy.app.security``)
    │   ├── SlowConsumer       ERR_SLOW_CONSUMER, a topic subscription fell behind (``asyncapy.shared.topics``)
    │   └── SharedStateUnavailable  ERR_INTERNAL, Redis did not answer (``asyncapy.shared.state``)
    ├── LifespanError          the server's lifespan raised before serving (nothing is served)
    └── ClientError            raised by ``asyncapy.client``
        ├── ConnectionClosed   the server closed the connection
        ├── ClientTimeout      no reply within the client's timeout (also a TimeoutError)
        ├── ErrorReply         the server answered ``{"status": "failure", ...}``
        └── ReplyValidationError  the reply is not the model ``request(..., reply=Model)`` asked for

Connecting to a server that is not there raises the ``OSError`` the system gave
(``ConnectionRefusedError``, ``socket.gaierror``...), its message naming the address.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

ERR_HEADER_INVALID = "ERR_HEADER_INVALID"
ERR_REQUEST_MALFORMED = "ERR_REQUEST_MALFORMED"
ERR_PAYLOAD_TOO_LARGE = "ERR_PAYLOAD_TOO_LARGE"
ERR_TIMED_OUT = "ERR_TIMED_OUT"
ERR_SESSION_LIMIT_REACHED = "ERR_SESSION_LIMIT_REACHED"
ERR_SERVER_BUSY = "ERR_SERVER_BUSY"
ERR_NO_HANDLER = "ERR_NO_HANDLER"
ERR_INTERNAL = "ERR_INTERNAL"
ERR_RATE_LIMITED = "ERR_RATE_LIMITED"
ERR_UNAUTHORIZED = "ERR_UNAUTHORIZED"
# v2 (docs/protocol.md); not in ERROR_CODES until the server sends them.
ERR_CANCELLED = "ERR_CANCELLED"
ERR_DEADLINE_EXCEEDED = "ERR_DEADLINE_EXCEEDED"
ERR_STREAM_ID_IN_USE = "ERR_STREAM_ID_IN_USE"
#: A topic subscription fell more than ``max_buffered`` events behind (DESIGN §9).
ERR_SLOW_CONSUMER = "ERR_SLOW_CONSUMER"

ERROR_CODES = frozenset(
    {
        ERR_HEADER_INVALID,
        ERR_REQUEST_MALFORMED,
        ERR_PAYLOAD_TOO_LARGE,
        ERR_TIMED_OUT,
        ERR_SESSION_LIMIT_REACHED,
        ERR_SERVER_BUSY,
        ERR_NO_HANDLER,
        ERR_INTERNAL,
        ERR_RATE_LIMITED,
        ERR_UNAUTHORIZED,
    }
)


def error_payload(code: str, detail: Any = None, errors: Any = None) -> dict[str, Any]:
    """The map of an error reply, as docs/protocol.md defines it (``errors``: ERR_NO_HANDLER's list)."""
    if detail is None and errors is None:
        return {"status": "failure", "error": code}
    payload = {"status": "failure", "error": code, "detail": detail}
    if errors is not None:
        payload["errors"] = errors
    return payload


class AsyncAPYError(Exception):
    """Base of every asyncapy exception."""


class ProtocolError(AsyncAPYError):
    """The peer broke the protocol; ``code`` is the error reply it gets."""

    code: str = ERR_REQUEST_MALFORMED

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class HeaderInvalid(ProtocolError):
    code = ERR_HEADER_INVALID


class RequestMalformed(ProtocolError):
    code = ERR_REQUEST_MALFORMED


class PayloadTooLarge(ProtocolError):
    code = ERR_PAYLOAD_TOO_LARGE


class UsageError(AsyncAPYError, TypeError):
    """The programmer misused the API (a wrong handler, a bad filter)."""


class StopPropagation(AsyncAPYError):
    """Raised by a handler to end its packet's dispatch (the connection goes on)."""


_CODE = re.compile(r"[A-Z][A-Z0-9_]*")


class ApiError(AsyncAPYError):
    """Raised by a handler, a dependency or a middleware: the packet's reply is the error
    ``{"status": "failure", "error": code, "detail": detail}``, no later group runs and
    the connection stays open.

    Example:
        raise ApiError("ERR_NOT_FOUND", f"no order {order_id}")
    """

    def __init__(self, code: str, detail: Any = None) -> None:
        if not isinstance(code, str) or _CODE.fullmatch(code) is None:
            raise ValueError(f"an error code is [A-Z][A-Z0-9_]*, like 'ERR_NOT_FOUND', not {code!r}")
        super().__init__(code if detail is None else f"{code}: {detail}")
        self.code = code
        self.detail = detail

    def payload(self) -> dict[str, Any]:
        """The error reply's map."""
        return error_payload(self.code, self.detail)


class EventInvalid(AsyncAPYError, ValueError):
    """``topic.publish(obj)`` got what is not the topic's model (nothing was published).

    Attributes:
        topic: the topic's name.
        validation_error: pydantic's ``ValidationError`` when ``obj`` was a dict (also the ``__cause__``), else None.
    """

    def __init__(self, topic: str, message: str, validation_error: ValidationError | None = None) -> None:
        super().__init__(f"topic {topic!r}: {message}")
        self.topic = topic
        self.validation_error = validation_error


class LifespanError(AsyncAPYError):
    """The server's lifespan raised on the way in; the server did not serve (the cause is chained)."""


class ClientError(AsyncAPYError):
    """Base of the errors a client raises."""


class ConnectionClosed(ClientError, ConnectionError):
    """The server closed the connection before a whole reply arrived."""


class ClientTimeout(ClientError, TimeoutError):
    """No complete reply arrived within the client's timeout."""


class ErrorReply(ClientError):
    """The server answered with an error packet; ``code`` and ``detail`` say which."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.code = str(payload.get("error", ""))
        self.detail = payload.get("detail")
        text = self.code if self.detail is None else f"{self.code}: {self.detail}"
        super().__init__(text)


class ReplyValidationError(ClientError):
    """The reply does not validate against the ``reply=`` type of ``request``.

    Attributes:
        reply: the reply map as it arrived.
        model: the type it was validated against.
        validation_error: pydantic's ``ValidationError`` (also the ``__cause__``).
    """

    def __init__(self, reply: dict[str, Any], model: Any, validation_error: ValidationError) -> None:
        self.reply = reply
        self.model = model
        self.validation_error = validation_error
        name = getattr(model, "__name__", repr(model))
        super().__init__(f"the reply is not a valid {name}: {validation_error}")
