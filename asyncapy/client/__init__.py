"""Clients for AsyncAProto servers: the blocking ``Client`` and the ``AsyncClient``.

Both are thin shells over ``asyncapy.client.clientcore``, which does no I/O: it turns objects
into frames, received bytes into replies, and knows when a connection is out of step.
``Client`` is generated from ``AsyncClient`` (``scripts/unasync.py``), so the two
behave alike line for line; they differ only in the stream and locks under them
(``asyncapy.client._streams``).

``request(obj, reply=Model)`` returns a validated ``Model``. Errors:
``ConnectionClosed`` when the server closes before a whole reply arrived,
``ClientTimeout`` when no reply comes within ``timeout`` seconds, ``OSError`` naming
the address when connecting fails, ``HeaderInvalid`` / ``PayloadTooLarge`` /
``RequestMalformed`` when the server's bytes break the protocol, ``ErrorReply`` for an
error packet (with ``reply=`` or ``raise_errors=True``) and ``ReplyValidationError``
for a reply that is not a valid ``Model``.
"""

from __future__ import annotations

from ._async_client import AsyncClient
from ._async_mux import ItemStream
from ._sync_client import Client
from ._sync_mux import SyncItemStream
from .clientcore import ClientCore, Sendable, check_reply, read_reply
from ..wire.errors import ReplyValidationError

__all__ = ["AsyncClient", "Client", "ClientCore", "ItemStream", "ReplyValidationError", "Sendable", "SyncItemStream", "check_reply", "read_reply"]
