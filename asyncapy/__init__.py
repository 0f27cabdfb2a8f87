"""asyncapy: typed API servers over AsyncAProto, on asyncio."""

from . import filters
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
from .server import Server

__version__ = "0.1.0"

__all__ = [
    "APIKeyFactory",
    "ApiError",
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
    "Server",
    "Session",
    "StopPropagation",
    "UsageError",
    "__version__",
    "filters",
]
