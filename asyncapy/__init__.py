"""asyncapy: typed API servers over AsyncAProto, on asyncio."""

from . import filters, security
from .shared.apikeys import APIKeyFactory
from .client import AsyncClient
from .app.depends import Depends
from .wire.errors import (
    ApiError,
    AsyncAPYError,
    ClientError,
    ClientTimeout,
    ConnectionClosed,
    ErrorReply,
    EventInvalid,
    LifespanError,
    ProtocolError,
    ReplyValidationError,
    StopPropagation,
    UsageError,
)
from .app.middleware import CallNext
from .model.packet import Packet
from .model.peer import Client, Session
from .app.routing import Router
from .app.security import ApiKeyAuth, SecurityScheme, Unauthorized
from .server import Server
from .shared.topics import Subscription, Topic
from .wire.version import __version__

__all__ = [
    "APIKeyFactory",
    "ApiError",
    "ApiKeyAuth",
    "AsyncAPYError",
    "AsyncClient",
    "CallNext",
    "Client",
    "ClientError",
    "ClientTimeout",
    "ConnectionClosed",
    "Depends",
    "ErrorReply",
    "EventInvalid",
    "LifespanError",
    "Packet",
    "ProtocolError",
    "ReplyValidationError",
    "Router",
    "SecurityScheme",
    "Server",
    "Session",
    "StopPropagation",
    "Subscription",
    "Topic",
    "Unauthorized",
    "UsageError",
    "__version__",
    "filters",
    "security",
]
