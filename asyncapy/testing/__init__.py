"""Test servers without sockets: ``TestClient`` (blocking) and ``AsyncTestClient``.

Both run the server's real ``Connection`` over an in-memory transport, so framing,
codecs, sessions, routing and error replies are exactly what a socket client gets.
"""

from ._async import AsyncTestClient
from ._sync import TestClient

__all__ = ["AsyncTestClient", "TestClient"]
