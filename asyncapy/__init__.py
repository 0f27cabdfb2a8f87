"""asyncapy: typed API servers over AsyncAProto, on asyncio."""

from . import filters
from .apikeys import APIKeyFactory
from .client import AsyncClient
from .errors import (
    AsyncAPYError,
    ClientError,
    ClientTimeout,
    ConnectionClosed,
    ErrorReply,
    ProtocolError,
    ReplyValidationError,
    StopPropagation,
    UsageError,
)
from .packet import Packet
from .peer import Client, Session
from .routing import Router
from .server import Server

__version__ = "0.1.0"

__all__ = [
    "APIKeyFactory",
    "AsyncAPYError",
    "AsyncClient",
    "Client",
    "ClientError",
    "ClientTimeout",
    "ConnectionClosed",
    "ErrorReply",
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
