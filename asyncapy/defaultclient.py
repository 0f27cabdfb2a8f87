"""AsyncAPY's name for the blocking client: ``from asyncapy import defaultclient``.

``defaultclient.Client`` speaks AsyncAProto v1 unless asked otherwise (``protocol=2``),
as AsyncAPY's did, so that code written for AsyncAPY (its Getting-started page's
``receive_all()`` included) sees the same bytes. ``asyncapy.client.Client`` speaks v2.
"""

from __future__ import annotations

from typing import Any

from .client import AsyncClient
from .client import Client as _Client

__all__ = ["AsyncClient", "Client"]


class Client(_Client):
    """``asyncapy.client.Client`` speaking v1 by default (``protocol=2`` for v2)."""

    def __init__(self, host: str, port: int, *, protocol: int | None = 1, **options: Any) -> None:
        super().__init__(host, port, protocol=protocol, **options)
