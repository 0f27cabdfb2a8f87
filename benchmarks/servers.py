"""The servers the benchmark drives, one per process: ``python servers.py KIND PORT [--workers N] [--uvloop]``.

``raw`` is the baseline: a plain ``asyncio.Protocol`` with the same framing and the
same codecs (orjson, msgpack) that echoes each request, replies of one read joined
into one write. Every other kind is an asyncapy server. The driver knows a server is
up when its port accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import msgpack
import orjson
from pydantic import BaseModel, create_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncapy import Client, Packet, Server  # noqa: E402

try:  # the application layer (issue 10); absent on older branches, whose rows are then skipped
    from asyncapy import CallNext, Depends
except ImportError:  # pragma: no cover
    CallNext = Any
    Depends = None

HEADER = 4


class RawEcho(asyncio.Protocol):
    """The baseline: decode, re-encode and frame every request, one write per read."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= HEADER + 2:
            length = int.from_bytes(buf[pos : pos + HEADER], "big")
            end = pos + HEADER + length
            if len(buf) < end:
                break
            enc = buf[pos + HEADER + 1]
            body = bytes(buf[pos + HEADER + 2 : end])
            if enc == 0:
                reply = orjson.dumps(orjson.loads(body))
            else:
                reply = msgpack.packb(msgpack.unpackb(body))
            out.append((len(reply) + 2).to_bytes(HEADER, "big") + bytes((22, enc)) + reply)
            pos = end
        del buf[:pos]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def serve_raw(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(RawEcho, "127.0.0.1", port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


class Person(BaseModel):
    name: str
    age: int
    email: str
    score: float
    active: bool


class Test(BaseModel):
    test: int


class Reply(BaseModel):
    status: Literal["ok"] = "ok"
    name: str
    age: int


def echo_server(**kw: Any) -> Server:
    server = Server("127.0.0.1", logging_level=logging.WARNING, **kw)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    return server


def typed_server(**kw: Any) -> Server:
    server = Server("127.0.0.1", logging_level=logging.WARNING, **kw)

    @server.add_handler()
    async def person(client: Client, packet: Packet[Person]) -> Reply:
        return Reply(name=packet.data.name, age=packet.data.age)

    return server


def counter() -> Iterator[int]:
    """A generator dependency: its teardown (resuming after ``yield``) runs after the reply."""
    yield 1


def app_server(dependency: bool, middleware: bool, **kw: Any) -> Server:
    """The typed handler with a generator dependency and/or a middleware (the application layer's cost)."""
    server = Server("127.0.0.1", logging_level=logging.WARNING, **kw)
    if middleware:

        @server.middleware
        async def passthrough(client: Client, packet: Packet, call_next: CallNext) -> None:
            await call_next()

    if dependency:

        @server.add_handler()
        async def person(client: Client, packet: Packet[Person], n: Annotated[int, Depends(counter)]) -> Reply:
            return Reply(name=packet.data.name, age=packet.data.age + n - 1)

    else:

        @server.add_handler()
        async def plain(client: Client, packet: Packet[Person]) -> Reply:
            return Reply(name=packet.data.name, age=packet.data.age)

    return server


def typed_test_server(**kw: Any) -> Server:
    """``{"test": 1}`` in, the same model out: the work the peers in ``peers.py`` do."""
    server = Server("127.0.0.1", logging_level=logging.WARNING, **kw)

    @server.add_handler()
    async def test(client: Client, packet: Packet[Test]) -> Test:
        return Test(test=packet.data.test)

    return server


def tagged_server(count: int, **kw: Any) -> Server:
    """``count`` handlers in one group, each for one value of a ``kind`` tag (the packet aims at the last)."""
    server = Server("127.0.0.1", logging_level=logging.WARNING, **kw)
    for i in range(count):
        model: Any = create_model(f"M{i}", kind=(Literal[f"m{i}"], ...), value=(int, ...))
        server.register_handler(_tagged_handler(model, i))
    return server


def _tagged_handler(model: Any, i: int) -> Any:
    async def handler(client: Client, packet: Packet[Any]) -> Reply:
        return Reply(name=packet.data.kind, age=packet.data.value)

    handler.__annotations__ = {"client": Client, "packet": Packet[model], "return": Reply}
    handler.__qualname__ = handler.__name__ = f"h{i}"
    return handler


def build(kind: str, port: int, workers: int, uvloop: bool) -> Server:
    kw: dict[str, Any] = {"port": port}
    if workers > 1:
        kw["workers"] = workers
    if uvloop:
        kw["uvloop"] = True
    if kind == "echo":
        return echo_server(**kw)
    if kind == "typed":
        return typed_server(**kw)
    if kind in ("typed+dep", "typed+mw", "typed+dep+mw"):
        return app_server("dep" in kind, "mw" in kind, **kw)
    if kind == "typed-test":
        return typed_test_server(**kw)
    if kind.startswith("typed-"):  # the typed handler with an operating feature on (run_operating.py)
        from operating import operating_server

        return operating_server(kind[len("typed-") :], typed_server, **kw)
    if kind.startswith("tagged"):
        return tagged_server(int(kind[len("tagged") :]), **kw)
    raise SystemExit(f"unknown server kind {kind!r}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind")
    parser.add_argument("port", type=int)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.kind == "raw":
        asyncio.run(serve_raw(args.port))
        return
    server = build(args.kind, args.port, args.workers, args.uvloop)
    server.start()


if __name__ == "__main__":
    main()
