"""asyncapy: typed API servers over AsyncAProto, on asyncio."""

from . import filters, security
from .apikeys import APIKeyFactory
from .client import AsyncClient
from .depends import Depends
from .errors import (
    ApiError,
    AsyncAPYError,
    ClientError,
    ClientTimeout,
    ConnectionClosed,
    ErrorReply,
    LifespanError,
    ProtocolError,
    ReplyValidationError,
    StopPropagation,
    UsageError,
)
from .middleware import CallNext
from .packet import Packet
from .peer import Client, Session
from .routing import Router
from .security import ApiKeyAuth, SecurityScheme, Unauthorized
from .server import Server

__version__ = "0.1.0"

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
    "LifespanError",
    "Packet",
    "ProtocolError",
    "ReplyValidationError",
    "Router",
    "SecurityScheme",
    "Server",
    "Session",
    "StopPropagation",
    "Unauthorized",
    "UsageError",
    "__version__",
    "filters",
    "security",
]
