"""A server with a lifespan, for process tests (``asyncapy run tests.servers.lifespan_app:server``).

``LIFESPAN_LOG`` (a file path) gets one line per lifespan event: "enter PID", "exit PID";
``LIFESPAN_FAIL=1`` makes the lifespan raise before serving; ``LIFESPAN_SLOW=S`` makes it take
S seconds to start (logging "starting PID" first, "interrupted PID" if it is cancelled).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from asyncapy import Client, Packet, Server


def _log(line: str) -> None:
    path = os.environ.get("LIFESPAN_LOG")
    if path:
        with open(path, "a") as out:
            out.write(f"{line} {os.getpid()}\n")


@asynccontextmanager
async def lifespan(server: Server) -> AsyncIterator[None]:
    if os.environ.get("LIFESPAN_FAIL"):
        raise ConnectionRefusedError("the database is down")
    slow = float(os.environ.get("LIFESPAN_SLOW", "0"))
    if slow:
        _log("starting")
        try:
            await asyncio.sleep(slow)
        except asyncio.CancelledError:
            _log("interrupted")
            raise
    _log("enter")
    server.state.pid = os.getpid()
    yield
    _log("exit")


server = Server("127.0.0.1", int(os.environ.get("PORT", "0")), lifespan=lifespan)


@server.add_handler()
async def whoami(client: Client, packet: Packet) -> dict[str, Any]:
    return {"pid": server.state.pid}


if __name__ == "__main__":
    server.start()
