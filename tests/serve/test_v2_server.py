"""The server's AsyncAProto v2 (DESIGN §8): real sockets, raw v2 frames and ``AsyncClient(protocol=2)``."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

from asyncapy import CallNext, Client, Depends, Packet, Server
from asyncapy.client import AsyncClient
from asyncapy.wire.protocol import (
    PUSH, REPLY, FrameDecoder, V2Frame, encode_cancel, encode_frame, encode_request, SENT_BY_SERVER,
)  # fmt: skip

from ..conftest import make_server, running, until


class Ask(BaseModel):
    n: int
    sleep: float = 0


RESOURCE_LOG: list[str] = []


async def resource() -> AsyncIterator[str]:
    """A dependency with a teardown (module level: handlers' annotations must resolve)."""
    RESOURCE_LOG.append("open")
    try:
        yield "r"
    finally:
        RESOURCE_LOG.append("teardown")


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


class Peer:
    """A raw v2 peer: writes frames, reads decoded v2 frames (bounded waits)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder(kinds=SENT_BY_SERVER)
        self.frames: list[Any] = []

    def request(self, sid: int, obj: Any, deadline_ms: int = 0) -> None:
        self.writer.write(encode_request(sid, _json(obj), 0, deadline_ms))

    def cancel(self, sid: int) -> None:
        self.writer.write(encode_cancel(sid))

    async def frame(self) -> V2Frame:
        while not self.frames:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "the server closed the connection"
            self.decoder.feed(data)
            while True:
                event = self.decoder.next_event()
                if not isinstance(event, V2Frame):
                    assert not hasattr(event, "code"), event
                    break
                self.frames.append(event)
        return self.frames.pop(0)  # type: ignore[no-any-return]

    async def frames_n(self, n: int) -> list[tuple[int, int, dict[str, Any]]]:
        out = []
        for _ in range(n):
            f = await self.frame()
            out.append((f.kind, f.stream_id, json.loads(f.payload)))
        return out


@pytest.fixture
async def peer_of() -> AsyncIterator[Any]:
    peers: list[Peer] = []

    async def connect(server: Server) -> Peer:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        peer = Peer(reader, writer)
        peers.append(peer)
        return peer

    yield connect
    for peer in peers:
        peer.writer.close()


def gated_server(**kwargs: Any) -> tuple[Server, dict[str, Any]]:
    """``wait`` handler: blocks on a per-n event the test sets, records start/end/teardown order."""
    server = make_server(**kwargs)
    state: dict[str, Any] = {"events": [], "gates": {}}

    def gate(n: int) -> asyncio.Event:
        return state["gates"].setdefault(n, asyncio.Event())  # type: ignore[no-any-return]

    @server.add_handler()
    async def wait(client: Client, packet: Packet[Ask]) -> dict[str, Any]:
        n = packet.data.n
        state["events"].append(("start", n))
        try:
            if packet.data.sleep:
                await asyncio.sleep(packet.data.sleep)
            else:
                await gate(n).wait()
        finally:
            state["events"].append(("end", n))
        return {"n": n}

    state["gate"] = gate
    return server, state


async def test_twenty_requests_overlap_on_one_connection_each_with_one_reply(peer_of: Any) -> None:
    server, state = gated_server()
    async with running(server):
        peer = await peer_of(server)
        for n in range(1, 21):
            peer.request(n, {"n": n, "sleep": 0.05})
        frames = await peer.frames_n(20)
        events = state["events"]
        # every request started before the first one ended: they ran at once
        assert [e for e in events[:20]] == [("start", n) for n in range(1, 21)]
        assert sorted((k, sid, body["n"]) for k, sid, body in frames) == [(REPLY, n, n) for n in range(1, 21)]
        peer.request(5, {"n": 5, "sleep": 0})  # a finished Stream-Id may be reused
        state["gate"](5).set()
        assert await peer.frames_n(1) == [(REPLY, 5, {"n": 5})]


async def test_async_client_v2_runs_requests_concurrently() -> None:
    server, state = gated_server()
    async with running(server), AsyncClient("127.0.0.1", server.port, protocol=2, timeout=10) as client:
        assert await client.request({"n": 99, "sleep": 0.001}) == {"n": 99}  # the client settles v2 first
        tasks = [asyncio.create_task(client.request({"n": n})) for n in range(10)]
        await until(lambda: len(state["events"]) == 12)  # all ten started, none ended
        for n in reversed(range(10)):
            state["gate"](n).set()
        assert await asyncio.gather(*tasks) == [{"n": n} for n in range(10)]
        assert client._mux is not None and client._mux.protocol == 2  # no fallback


async def test_cancel_runs_teardown_and_answers_err_cancelled(peer_of: Any) -> None:
    server, state = gated_server()
    async with running(server):
        peer = await peer_of(server)
        peer.request(7, {"n": 7})
        peer.request(8, {"n": 8})
        await until(lambda: ("start", 8) in state["events"])
        peer.cancel(7)
        peer.cancel(99)  # unknown: ignored
        kind, sid, body = (await peer.frames_n(1))[0]
        assert (kind, sid, body["error"]) == (REPLY, 7, "ERR_CANCELLED")
        assert ("end", 7) in state["events"]  # its finally ran
        state["gate"](8).set()
        assert await peer.frames_n(1) == [(REPLY, 8, {"n": 8})]
        peer.cancel(8)  # finished: ignored, nothing more on stream 8
        peer.request(9, {"n": 9})
        state["gate"](9).set()
        assert await peer.frames_n(1) == [(REPLY, 9, {"n": 9})]


async def test_deadline_while_running_and_before_start(peer_of: Any) -> None:
    server, state = gated_server(max_streams=1)
    async with running(server):
        peer = await peer_of(server)
        peer.request(1, {"n": 1}, deadline_ms=200)  # runs, then expires
        peer.request(2, {"n": 2}, deadline_ms=50)  # waits behind 1 and expires there
        frames = sorted(await peer.frames_n(2), key=lambda f: f[1])
        assert [(k, sid, b["error"]) for k, sid, b in frames] == [
            (REPLY, 1, "ERR_DEADLINE_EXCEEDED"), (REPLY, 2, "ERR_DEADLINE_EXCEEDED"),
        ]  # fmt: skip
        assert ("start", 2) not in state["events"]  # never ran
        assert ("end", 1) in state["events"]


async def test_packet_deadline_and_time_remaining() -> None:
    server = make_server()
    seen: list[Any] = []

    @server.add_handler()
    async def look(client: Client, packet: Packet[Ask]) -> dict[str, Any]:
        seen.append((packet.deadline, packet.time_remaining(), asyncio.get_running_loop().time()))
        return {"ok": True}

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        peer = Peer(reader, writer)
        peer.request(1, {"n": 1}, deadline_ms=5000)
        peer.request(2, {"n": 2})
        await peer.frames_n(2)
        writer.close()
        async with AsyncClient("127.0.0.1", server.port, protocol=1, timeout=10) as v1:
            await v1.request({"n": 3})
    (d1, r1, now1), (d2, r2, _), (d3, r3, _) = seen
    assert d1 is not None and r1 is not None and 0 < r1 <= 5.0 and d1 > now1
    assert (d2, r2, d3, r3) == (None, None, None, None)


async def test_stream_id_in_flight_is_refused_on_stream_zero(peer_of: Any) -> None:
    server, state = gated_server()
    async with running(server):
        peer = await peer_of(server)
        peer.request(3, {"n": 3})
        peer.request(3, {"n": 33})
        kind, sid, body = (await peer.frames_n(1))[0]
        assert (kind, sid, body["error"]) == (REPLY, 0, "ERR_STREAM_ID_IN_USE")
        assert "3" in body["detail"]
        state["gate"](3).set()
        assert await peer.frames_n(1) == [(REPLY, 3, {"n": 3})]
        assert ("start", 33) not in state["events"]


async def test_v1_frame_on_a_v2_connection_is_header_invalid(peer_of: Any) -> None:
    server, state = gated_server()
    async with running(server):
        peer = await peer_of(server)
        peer.request(1, {"n": 1, "sleep": 0.001})
        assert await peer.frames_n(1) == [(REPLY, 1, {"n": 1})]
        peer.writer.write(encode_frame(_json({"n": 2}), 0))
        kind, sid, body = (await peer.frames_n(1))[0]
        assert (kind, sid, body["error"]) == (REPLY, 0, "ERR_HEADER_INVALID")


async def test_send_answers_its_request_then_pushes(peer_of: Any) -> None:
    server = make_server()
    later: list[asyncio.Task[Any]] = []

    @server.add_handler()
    async def chatty(client: Client, packet: Packet[Ask]) -> None:
        await client.send({"reply": packet.data.n})
        await client.send({"second": packet.data.n})

        async def background() -> None:
            await asyncio.sleep(0.01)
            await client.send({"background": packet.data.n})

        later.append(asyncio.create_task(background()))

    async with running(server):
        peer = await peer_of(server)
        peer.request(4, {"n": 4})
        frames = await peer.frames_n(3)
        assert frames == [(REPLY, 4, {"reply": 4}), (PUSH, 0, {"second": 4}), (PUSH, 0, {"background": 4})]
        await asyncio.gather(*later)


async def test_handler_returning_nothing_gets_an_empty_terminal_reply(peer_of: Any) -> None:
    server = make_server()

    @server.add_handler()
    async def quiet(client: Client, packet: Packet[Ask]) -> None:
        return None

    async with running(server):
        peer = await peer_of(server)
        peer.request(1, {"n": 1})
        assert await peer.frames_n(1) == [(REPLY, 1, {})]


async def test_handler_timeout_ends_only_that_request(peer_of: Any) -> None:
    server, state = gated_server(handler_timeout=0.1)
    async with running(server):
        peer = await peer_of(server)
        peer.request(1, {"n": 1})  # never released: times out
        peer.request(2, {"n": 2, "sleep": 0.01})
        frames = sorted(await peer.frames_n(2), key=lambda f: f[1])
        assert frames[0][:2] == (REPLY, 1) and frames[0][2]["error"] == "ERR_TIMED_OUT"
        assert frames[1] == (REPLY, 2, {"n": 2})


async def test_middleware_teardown_and_exception_handler_per_request(peer_of: Any) -> None:
    server = make_server()
    log: list[Any] = []

    class Boom(Exception):
        pass

    @server.middleware
    async def around(client: Client, packet: Packet[Any], call_next: CallNext) -> None:
        log.append(("before", packet["n"]))
        try:
            await call_next()
        finally:
            log.append(("after", packet["n"]))

    @server.exception_handler(Boom)
    async def mapped(client: Client, packet: Packet[Any], exc: Boom) -> dict[str, Any]:
        return {"status": "failure", "error": "ERR_BOOM", "n": packet["n"]}

    @server.add_handler()
    async def handler(client: Client, packet: Packet[Ask]) -> dict[str, Any]:
        await asyncio.sleep(packet.data.sleep)
        if packet.data.n % 2:
            raise Boom
        return {"n": packet.data.n}

    async with running(server):
        peer = await peer_of(server)
        for n in range(1, 5):
            peer.request(n, {"n": n, "sleep": 0.05 - n * 0.01})
        frames = sorted(await peer.frames_n(4), key=lambda f: f[1])
        assert frames == [
            (REPLY, 1, {"status": "failure", "error": "ERR_BOOM", "n": 1}), (REPLY, 2, {"n": 2}),
            (REPLY, 3, {"status": "failure", "error": "ERR_BOOM", "n": 3}), (REPLY, 4, {"n": 4}),
        ]  # fmt: skip
        assert log[:4] == [("before", n) for n in range(1, 5)]  # all four inside at once
        assert sorted(log[4:]) == [("after", n) for n in range(1, 5)]


async def test_v1_connections_still_speak_v1() -> None:
    server, _ = gated_server()
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(encode_frame(_json({"n": 1, "sleep": 0.001}), 0))
        length = int.from_bytes(await asyncio.wait_for(reader.readexactly(4), 10), "big")
        rest = await reader.readexactly(length)
        assert rest[:2] == b"\x16\x00" and json.loads(rest[2:]) == {"n": 1}
        writer.close()


async def test_metrics_count_each_v2_request_with_its_outcome(peer_of: Any) -> None:
    from ..ops.test_metrics import packets, scrape

    server, state = gated_server(metrics_port=0)
    async with running(server):
        peer = await peer_of(server)
        for n in range(1, 7):
            peer.request(n, {"n": n})
        await until(lambda: len(state["events"]) == 6)
        peer.cancel(1)
        peer.cancel(2)
        for n in range(3, 7):
            state["gate"](n).set()
        frames = sorted(await peer.frames_n(6), key=lambda f: f[1])
        assert [f[2].get("error") for f in frames] == ["ERR_CANCELLED"] * 2 + [None] * 4
        samples = await asyncio.to_thread(scrape, server.metrics_port)  # type: ignore[arg-type]
    name = [key for key in packets(samples)][0][0]
    assert packets(samples) == {(name, "OK"): 4, (name, "ERR_CANCELLED"): 2}


async def test_a_cancelled_request_runs_its_dependency_teardown(peer_of: Any) -> None:
    server = make_server()
    log = RESOURCE_LOG
    log.clear()
    started = asyncio.Event()

    @server.add_handler()
    async def slow(client: Client, packet: Packet[Ask], res: Annotated[str, Depends(resource)]) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(30)
        return {"never": res}

    async with running(server):
        peer = await peer_of(server)
        peer.request(11, {"n": 1})
        await asyncio.wait_for(started.wait(), 10)
        peer.cancel(11)
        kind, sid, body = (await peer.frames_n(1))[0]
        assert (kind, sid, body["error"]) == (REPLY, 11, "ERR_CANCELLED")
        assert log == ["open", "teardown"]


async def test_max_streams_run_as_many_wait_and_the_rest_are_read_later(peer_of: Any) -> None:
    server, state = gated_server(max_streams=2)
    async with running(server):
        peer = await peer_of(server)
        for n in range(1, 11):
            peer.request(n, {"n": n})
        await until(lambda: len(state["events"]) == 2)
        await asyncio.sleep(0.05)  # give a wrong server the time to start more
        assert state["events"] == [("start", 1), ("start", 2)]
        answered = []
        for n in range(1, 11):  # each finish lets the next in, in order
            state["gate"](n).set()
            answered += await peer.frames_n(1)
        assert answered == [(REPLY, n, {"n": n}) for n in range(1, 11)]
        assert [e for e in state["events"] if e[0] == "start"] == [("start", n) for n in range(1, 11)]


async def test_a_peer_that_resets_while_reading_is_held_gets_its_requests_cancelled(peer_of: Any) -> None:
    server, state = gated_server(max_streams=1)
    async with running(server):
        peer = await peer_of(server)
        for n in range(1, 4):  # 1 runs, 2 waits, 3 stays unread: reading is held
            peer.request(n, {"n": n})
        await until(lambda: state["events"] == [("start", 1)])
        sock = peer.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.writer.transport.abort()  # a reset
        await until(lambda: ("end", 1) in state["events"])  # its finally ran: cancelled
        assert ("start", 2) not in state["events"]


async def test_payload_too_large_on_v2_is_a_reply_on_stream_zero(peer_of: Any) -> None:
    server, _ = gated_server(max_packet_size=100)
    async with running(server):
        peer = await peer_of(server)
        peer.request(1, {"n": 1, "sleep": 0.001})
        assert await peer.frames_n(1) == [(REPLY, 1, {"n": 1})]
        peer.writer.write(encode_request(2, b"x" * 200, 0))
        kind, sid, body = (await peer.frames_n(1))[0]
        assert (kind, sid, body["error"]) == (REPLY, 0, "ERR_PAYLOAD_TOO_LARGE")


async def test_shutdown_cancels_running_v2_requests_without_a_made_up_answer(peer_of: Any) -> None:
    server, state = gated_server(shutdown_timeout=0.1)
    async with running(server):
        peer = await peer_of(server)
        peer.request(1, {"n": 1, "sleep": 0.001})
        assert await peer.frames_n(1) == [(REPLY, 1, {"n": 1})]
        peer.request(2, {"n": 2})  # never released
        await until(lambda: ("start", 2) in state["events"])
    assert ("end", 2) in state["events"]  # cancelled by the shutdown, its finally ran
    rest = await asyncio.wait_for(peer.reader.read(), 10)
    assert rest == b""  # closed with nothing sent for stream 2 (no empty map passed off as its answer)


async def test_idle_timeout_on_v2_is_a_reply_on_stream_zero(peer_of: Any) -> None:
    server, _ = gated_server(timeout=0.3)
    async with running(server):
        peer = await peer_of(server)
        peer.request(1, {"n": 1, "sleep": 0.001})
        assert await peer.frames_n(1) == [(REPLY, 1, {"n": 1})]
        kind, sid, body = (await peer.frames_n(1))[0]  # then nothing: the server times the connection out
        assert (kind, sid, body["error"]) == (REPLY, 0, "ERR_TIMED_OUT")


async def test_requests_answered_at_once_past_max_streams_are_each_answered_once(peer_of: Any) -> None:
    server, state = gated_server(max_streams=1)
    async with running(server):
        peer = await peer_of(server)
        for n in range(1, 41):  # odd ones are refused by validation before any handler runs
            peer.request(n, {"n": n, "sleep": 0.001} if n % 2 == 0 else {"n": "x"})
        frames = await peer.frames_n(40)
        assert sorted(sid for _, sid, _ in frames) == list(range(1, 41))
        assert all(("error" in body) == (sid % 2 == 1) for _, sid, body in frames)
        assert all(kind == REPLY for kind, _, _ in frames)
