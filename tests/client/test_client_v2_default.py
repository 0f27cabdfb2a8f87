"""The clients speak v2 by default (DESIGN §8, "Clients"): the blocking ``Client`` from
many threads on one socket, per-call timeouts sent as deadlines and cancelled on the
server, the fallback for both clients, ``pushed()``, deadline propagation through a
handler, the TestClients, and ``asyncapy.defaultclient`` still on v1. Real sockets.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from asyncapy import Client, Packet, Server, defaultclient
from asyncapy.client import AsyncClient
from asyncapy.client import Client as SyncClient
from asyncapy.model.packet import REQUEST_DEADLINE
from asyncapy.testing import AsyncTestClient, TestClient
from asyncapy.wire.errors import ClientTimeout
from asyncapy.wire.protocol import encode_frame

from ..conftest import make_server, running, until
from .test_client_v2 import AsyncAPYLike

#: Threads (and requests) that must all be in the server's handler at once.
PARTIES = 8
#: Seconds the bounded waits of these tests give up after (never reached when it works).
PATIENCE = 20.0


class Ask(BaseModel):
    n: int
    meet: bool = False
    sleep: float = 0
    push: bool = False


class Seen:
    """What the server's handlers saw: sessions, cancellations, how many met."""

    def __init__(self) -> None:
        self.sessions: list[str] = []
        self.cancelled: list[int] = []
        self.started: list[int] = []
        self.met = 0
        self.all_met: asyncio.Event | None = None


def meeting_server() -> tuple[Server, Seen]:
    """``meet`` requests wait until ``PARTIES`` of them are in the handler at once (a
    client that sent them one after another would never get an answer; so would the
    first request of a v2 connection, which goes alone until the server answered it:
    docs/protocol.md, "Falling back to v1"); ``sleep`` ones
    sleep, recording a cancellation; ``push`` ones send a second packet."""
    server = make_server()
    seen = Seen()

    @server.add_handler()
    async def answer(client: Client, packet: Packet[Ask]) -> dict[str, Any] | None:
        ask = packet.data
        seen.sessions.append(str(client.session.id))
        seen.started.append(ask.n)
        if ask.meet:
            if seen.all_met is None:
                seen.all_met = asyncio.Event()
            seen.met += 1
            if seen.met == PARTIES:
                seen.all_met.set()
            await asyncio.wait_for(seen.all_met.wait(), PATIENCE)
        if ask.sleep:
            try:
                await asyncio.sleep(ask.sleep)
            except asyncio.CancelledError:
                seen.cancelled.append(ask.n)
                raise
        if ask.push:
            await client.send({"n": ask.n})
            await client.send({"pushed": ask.n})
            return None
        return {"n": ask.n}

    return server, seen


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, Seen]]:
    server, seen = meeting_server()
    async with running(server):
        yield server, seen


def v2_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "asyncapy-client-v2"]


# -- the default and its arguments ----------------------------------------------------------


def test_v2_is_the_default_and_a_pool_means_v1() -> None:
    assert AsyncClient("127.0.0.1", 1).protocol == 2
    assert AsyncClient("127.0.0.1", 1, pool_size=8).protocol == 1
    assert AsyncClient("127.0.0.1", 1, protocol=1).protocol == 1
    assert SyncClient("127.0.0.1", 1).protocol == 2
    assert defaultclient.Client("127.0.0.1", 1).protocol == 1  # AsyncAPY's name keeps v1
    assert defaultclient.Client("127.0.0.1", 1, protocol=2).protocol == 2
    with pytest.raises(ValueError, match="pool_size is for v1"):
        SyncClient("127.0.0.1", 1, protocol=2, pool_size=8)


# -- the blocking client on v2 ----------------------------------------------------------------


async def test_the_blocking_client_has_requests_of_many_threads_in_flight_at_once(served: tuple[Server, Seen]) -> None:
    server, seen = served
    before = len(v2_threads())

    def talk() -> list[dict[str, Any]]:
        with SyncClient("127.0.0.1", server.port, timeout=PATIENCE) as client:
            assert client.request({"n": -1}) == {"n": -1}  # the server answered in v2
            results: list[dict[str, Any]] = []

            def one(n: int) -> None:
                results.append(client.request({"n": n, "meet": True}))

            threads = [threading.Thread(target=one, args=(n,)) for n in range(PARTIES)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(PATIENCE)
            assert len(v2_threads()) == before + 1  # one loop thread, whatever the callers
            return results

    results = await asyncio.to_thread(talk)
    assert sorted(r["n"] for r in results) == list(range(PARTIES))  # all met in the handler
    assert seen.met == PARTIES
    assert len(set(seen.sessions)) == 1  # on one connection
    await until(lambda: len(v2_threads()) == before, PATIENCE)  # close ended (joined) the loop thread


async def test_a_blocking_timeout_cancels_the_handler_and_keeps_the_connection(served: tuple[Server, Seen]) -> None:
    server, seen = served

    def talk() -> dict[str, Any]:
        with SyncClient("127.0.0.1", server.port, timeout=PATIENCE) as client:
            assert client.request({"n": 1}) == {"n": 1}
            with pytest.raises(ClientTimeout):
                client.request({"n": 2, "sleep": 30}, timeout=0.3)
            return client.request({"n": 3})

    assert await asyncio.to_thread(talk) == {"n": 3}
    await until(lambda: seen.cancelled == [2], PATIENCE)
    assert len(set(seen.sessions)) == 1  # the CANCEL kept the connection


async def test_an_async_timeout_cancels_the_handler_and_keeps_the_connection(served: tuple[Server, Seen]) -> None:
    server, seen = served
    async with AsyncClient("127.0.0.1", server.port, timeout=PATIENCE) as client:
        assert await client.request({"n": 1}) == {"n": 1}
        with pytest.raises(ClientTimeout):
            await client.request({"n": 2, "sleep": 30}, timeout=0.3)
        await until(lambda: seen.cancelled == [2], PATIENCE)
        task = asyncio.create_task(client.request({"n": 4, "sleep": 30}))  # no timeout: cancel the task
        await until(lambda: 4 in seen.started, PATIENCE)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: seen.cancelled == [2, 4], PATIENCE)
        assert await client.request({"n": 3}) == {"n": 3}
    assert len(set(seen.sessions)) == 1


async def test_a_v1_timeout_is_per_call_too(served: tuple[Server, Seen]) -> None:
    server, _ = served
    async with AsyncClient("127.0.0.1", server.port, timeout=PATIENCE, protocol=1) as client:
        with pytest.raises(ClientTimeout):
            await client.request({"n": 2, "sleep": 1}, timeout=0.2)  # the server waits for it when stopping
        assert await client.request({"n": 3}) == {"n": 3}  # on a new v1 connection


# -- the fallback to v1 -------------------------------------------------------------------------


async def test_the_blocking_client_falls_back_to_v1_against_asyncapy() -> None:
    peer = AsyncAPYLike()
    async with peer as port:

        def talk() -> list[dict[str, Any]]:
            with SyncClient("127.0.0.1", port, timeout=PATIENCE) as client:
                return [client.request({"a": 1}), client.request({"b": 2})]

        assert await asyncio.to_thread(talk) == [{"a": 1}, {"b": 2}]
    first, second = peer.connections
    assert len(first) == 1 and first[0][0] == 23  # the v2 probe, refused, then closed
    assert second == [b'\x16\x00{"a":1}', b'\x16\x00{"b":2}']  # each handled once, in v1


async def test_a_fallen_back_blocking_client_stays_on_v1_after_close() -> None:
    peer = AsyncAPYLike()
    async with peer as port:

        def talk() -> None:
            client = SyncClient("127.0.0.1", port, timeout=PATIENCE)
            assert client.request({"a": 1}) == {"a": 1}
            client.close()
            assert client.request({"b": 2}) == {"b": 2}
            client.close()

        await asyncio.to_thread(talk)
    assert [frames[0][0] for frames in peer.connections] == [23, 22, 22]


# -- pushed() ---------------------------------------------------------------------------------


async def test_pushed_on_both_clients_and_close_ends_it(served: tuple[Server, Seen]) -> None:
    server, _ = served
    async with AsyncClient("127.0.0.1", server.port, timeout=PATIENCE) as client:
        assert await client.request({"n": 5, "push": True}) == {"n": 5}
        assert await asyncio.wait_for(client.pushed().__anext__(), PATIENCE) == {"pushed": 5}

    def talk() -> list[dict[str, Any]]:
        client = SyncClient("127.0.0.1", server.port, timeout=PATIENCE)
        assert client.request({"n": 6, "push": True}) == {"n": 6}
        got: list[dict[str, Any]] = []

        def read() -> None:
            got.extend(client.pushed())  # ends when the client is closed

        reader = threading.Thread(target=read)
        reader.start()
        for _ in range(int(PATIENCE / 0.01)):
            if got:
                break
            threading.Event().wait(0.01)
        client.close()
        reader.join(PATIENCE)
        assert not reader.is_alive()
        return got

    assert await asyncio.to_thread(talk) == [{"pushed": 6}]


# -- deadline propagation -----------------------------------------------------------------------


async def test_a_deadline_propagates_through_a_handler_and_cancels_the_next_server() -> None:
    back, back_seen = meeting_server()
    remaining: list[float | None] = []

    @back.add_handler()
    async def slow(client: Client, packet: Packet[dict[str, Any]]) -> dict[str, Any]:
        remaining.append(packet.time_remaining())
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            back_seen.cancelled.append(-1)
            raise
        return {}

    front = make_server()
    onward: list[AsyncClient] = []

    @front.add_handler()
    async def relay(client: Client, packet: Packet[dict[str, Any]]) -> dict[str, Any]:
        return await onward[0].request({"go": 1})  # its timeout is 20 s; the caller's 0.3 s wins

    async with running(back), running(front), AsyncClient("127.0.0.1", back.port, timeout=PATIENCE) as to_back:
        onward.append(to_back)
        async with AsyncClient("127.0.0.1", front.port, timeout=PATIENCE) as client:
            with pytest.raises(ClientTimeout):
                await client.request({"go": 1}, timeout=0.3)
        await until(lambda: back_seen.cancelled == [-1], PATIENCE)  # the back server gave up too
    assert len(remaining) == 1 and remaining[0] is not None and 0 < remaining[0] <= 0.3


async def test_nothing_left_of_the_deadline_raises_at_once_without_sending(served: tuple[Server, Seen]) -> None:
    server, seen = served
    loop = asyncio.get_running_loop()

    async def late(client: AsyncClient) -> None:
        REQUEST_DEADLINE.set(loop.time() - 1)  # in this task only, as the server sets it
        with pytest.raises(ClientTimeout, match="deadline"):
            await client.request({"n": 1})

    for protocol in (1, 2):
        client = AsyncClient("127.0.0.1", server.port, timeout=PATIENCE, protocol=protocol)
        await asyncio.create_task(late(client))
        assert await client.request({"n": 2}) == {"n": 2}  # outside that task: no deadline
        await client.close()
    assert seen.started == [2, 2]  # the late ones never reached the server


# -- the TestClients ----------------------------------------------------------------------------


async def test_the_async_test_client_runs_requests_at_once_and_reads_pushes() -> None:
    server, seen = meeting_server()
    async with AsyncTestClient(server, timeout=PATIENCE) as client:
        assert client.protocol == 2
        assert await client.request({"n": -1}) == {"n": -1}  # the server answered in v2
        replies = await asyncio.gather(*(client.request({"n": n, "meet": True}) for n in range(PARTIES)))
        assert replies == [{"n": n} for n in range(PARTIES)]
        assert await client.request({"n": 7, "push": True}) == {"n": 7}
        assert await asyncio.wait_for(client.pushed().__anext__(), PATIENCE) == {"pushed": 7}
        with pytest.raises(ClientTimeout):
            await client.request({"n": 8, "sleep": 30}, timeout=0.2)
        await until(lambda: seen.cancelled == [8], PATIENCE)
        assert await client.request({"n": 9}) == {"n": 9}
    assert len(set(seen.sessions)) == 1


def test_the_test_client_reads_pushes_and_speaks_v1_when_asked() -> None:
    server, seen = meeting_server()
    with TestClient(server, timeout=PATIENCE) as client:
        assert client.request({"n": 1, "push": True}) == {"n": 1}
        assert next(iter(client.pushed())) == {"pushed": 1}
    with TestClient(server, timeout=PATIENCE, protocol=1) as client:
        client.send({"n": 2, "push": True})
        assert client.receive() == {"n": 2}
        assert client.receive() == {"pushed": 2}
        assert client.request({"n": 3}) == {"n": 3}
        with pytest.raises(ValueError, match="speaks v1"):
            next(iter(client.pushed()))
    assert len(set(seen.sessions[1:])) == 1  # v1: one connection for send and request


# -- asyncapy.defaultclient keeps v1 -------------------------------------------------------------


class AsyncAPYEcho:
    """Answers each v1 packet as AsyncAPY's Getting-started server does (``json.dumps``,
    with spaces); records the Protocol-Version byte of each frame it reads."""

    def __init__(self) -> None:
        self.versions: list[int] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                body = await reader.readexactly(int.from_bytes(await reader.readexactly(4), "big"))
                self.versions.append(body[0])
                writer.write(encode_frame(json.dumps(json.loads(body[2:])).encode(), 0))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_defaultclient_prints_asyncapy_bytes_and_sends_v1_only() -> None:
    peer = AsyncAPYEcho()
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def talk() -> tuple[bytes, dict[str, Any]]:
        client = defaultclient.Client("127.0.0.1", port, tls=False)
        client.connect()
        client.send({"test": 1}, encoding="json")
        raw = client.receive_all()
        reply = client.request({"again": 2})
        client.close()
        return raw, reply

    try:
        raw, reply = await asyncio.to_thread(talk)
    finally:
        server.close()
        await server.wait_closed()
    assert raw == b'\x00\x00\x00\r\x16\x00{"test": 1}'
    assert reply == {"again": 2}
    assert peer.versions == [22, 22]  # no v2 probe ever
