"""Shared test helpers: a server running on a loopback port the OS picks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from asyncapy import Server


@contextlib.asynccontextmanager
async def running(server: Server) -> AsyncIterator[Server]:
    """Serve ``server`` on 127.0.0.1 (port 0 unless set) for the body of the ``async with``."""
    server.addr = "127.0.0.1"
    await server.start_serving()
    try:
        yield server
    finally:
        await server.stop()


async def until(check: Callable[[], object], seconds: float = 10.0) -> None:
    """Wait until ``check()`` is true, polling every 10 ms; fail after ``seconds`` (a bound, not a speed check)."""
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not reached within {seconds} seconds")


def make_server(**kwargs: object) -> Server:
    """A server on 127.0.0.1 and an OS-picked port, quiet unless a test asks otherwise."""
    kwargs.setdefault("port", 0)
    return Server("127.0.0.1", **kwargs)  # type: ignore[arg-type]


async def read_frame(reader: asyncio.StreamReader, header_size: int = 4) -> tuple[int, bytes]:
    """Read one raw frame: (Content-Encoding byte, payload)."""
    length = int.from_bytes(await reader.readexactly(header_size), "big")
    rest = await reader.readexactly(length)
    assert rest[0] == 22
    return rest[1], rest[2:]
