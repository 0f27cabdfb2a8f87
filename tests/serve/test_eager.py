"""The hot path: workers driven eagerly, replies of a burst coalesced, order kept."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Mapping

import orjson
import pytest
from pydantic import BaseModel, field_validator

from asyncapy import Client, Packet, Server
from asyncapy.wire.protocol import encode_frame

from ..conftest import make_server, read_frame, running


def frames(*payloads: Mapping[str, object]) -> bytes:
    return b"".join(encode_frame(orjson.dumps(p), 0) for p in payloads)


async def test_pipelined_replies_keep_order_when_some_handlers_wait() -> None:
    server = make_server()

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> dict[str, object]:
        n = packet["n"]
        if n % 3 == 0:
            await asyncio.sleep(0.001 * (n % 2))
        return {"n": n, "task": asyncio.current_task() is not None}

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frames(*({"n": i} for i in range(200))))
        replies = [orjson.loads((await read_frame(reader))[1]) for _ in range(200)]
        writer.close()
    assert [r["n"] for r in replies] == list(range(200))
    assert all(r["task"] for r in replies)


@pytest.mark.parametrize("wait_at", [None, 0, 63, 64, 150])
async def test_a_read_of_more_packets_than_max_pending_is_answered_whole(wait_at: int | None) -> None:
    """One write of 300 packets (several times max_pending): none may stay in the decoder."""
    server = make_server(max_pending=64)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> dict[str, object]:
        if packet["n"] == wait_at:
            await asyncio.sleep(0.01)  # hand over to the host task mid-burst
        return {"n": packet["n"]}

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frames(*({"n": i} for i in range(300))))
        replies = [orjson.loads((await asyncio.wait_for(read_frame(reader), 5))[1]) for _ in range(300)]
        writer.close()
    assert [r["n"] for r in replies] == list(range(300))


async def _sleep_with_timeout(seconds: float) -> None:
    """``asyncio.timeout`` where it exists (3.11+); on 3.10 what it does: cancel the current task."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):  # type: ignore[attr-defined,unused-ignore]
            await asyncio.sleep(5)
        return
    task = asyncio.current_task()
    assert task is not None
    timer = asyncio.get_running_loop().call_later(seconds, task.cancel)
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        raise TimeoutError from None
    finally:
        timer.cancel()


async def test_current_task_and_timeout_work_in_a_handler_that_never_waited() -> None:
    server = make_server()
    seen: list[asyncio.Task[object] | None] = []

    @server.add_handler()
    async def slow(client: Client, packet: Packet) -> dict[str, str]:
        seen.append(asyncio.current_task())
        try:
            await _sleep_with_timeout(0.01)
        except TimeoutError:
            return {"status": "timed out"}
        return {"status": "slept"}

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frames({"a": 1}, {"a": 2}))
        first = orjson.loads((await read_frame(reader))[1])
        second = orjson.loads((await read_frame(reader))[1])
        writer.close()
    assert first == second == {"status": "timed out"}
    assert seen[0] is not None and seen[0] is seen[1]


async def test_context_variables_survive_a_wait() -> None:
    server = make_server()
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var")

    @server.add_handler()
    async def handler(client: Client, packet: Packet) -> dict[str, int]:
        var.set(packet["n"])
        await asyncio.sleep(0)
        return {"n": var.get()}

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frames({"n": 1}, {"n": 2}))
        replies = [orjson.loads((await read_frame(reader))[1]) for _ in range(2)]
        writer.close()
    assert replies == [{"n": 1}, {"n": 2}]


async def test_a_burst_of_replies_is_one_write() -> None:
    server = make_server()

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    writes: list[int] = []
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.sleep(0.05)
        assert server._ctx is not None
        (conn,) = server._ctx.connections
        transport = conn._transport
        assert transport is not None
        real_write = transport.write

        def counting_write(data: bytes | bytearray | memoryview) -> None:
            writes.append(len(data))
            real_write(data)

        transport.write = counting_write  # type: ignore[method-assign]
        writer.write(frames(*({"n": i} for i in range(10))))
        replies = [await read_frame(reader) for _ in range(10)]
        writer.close()
    assert len(replies) == 10
    assert len(writes) <= 2  # one per read of the burst; the kernel rarely splits 10 small frames


async def test_handler_errors_and_large_sends_are_not_stuck_in_the_buffer() -> None:
    server = make_server()
    blob = "x" * 200_000

    @server.add_handler()
    async def big(client: Client, packet: Packet) -> None:
        if packet["n"] == 1:
            raise RuntimeError("boom")
        for _ in range(3):
            await client.send({"blob": blob})

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frames({"n": 1}, {"n": 2}))
        error = orjson.loads((await read_frame(reader))[1])
        sizes = [len((await read_frame(reader))[1]) for _ in range(3)]
        writer.close()
    assert error["error"] == "ERR_INTERNAL"
    assert all(size > 200_000 for size in sizes)


async def test_handlers_that_raise_or_wait_in_one_burst_answer_in_order() -> None:
    """Raising before or after a wait, returning before or after one: every packet answered, in order."""
    server = make_server()

    @server.add_handler()
    async def mixed(client: Client, packet: Packet) -> dict[str, object]:
        n = packet["n"]
        if n % 4 in (1, 2):
            await asyncio.sleep(0)
        if n % 4 in (0, 1):
            raise RuntimeError(f"handler failure {n}")
        return {"n": n}

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for burst in range(3):  # later bursts find the eager path as the earlier ones left it
            writer.write(frames(*({"n": i} for i in range(burst * 40, burst * 40 + 40))))
            replies = [orjson.loads((await asyncio.wait_for(read_frame(reader), 5))[1]) for _ in range(40)]
            for i, reply in zip(range(burst * 40, burst * 40 + 40), replies):
                if i % 4 in (0, 1):
                    assert reply["error"] == "ERR_INTERNAL", (i, reply)
                else:
                    assert reply == {"n": i}
        writer.close()


async def _one_request(port: int, payload: Mapping[str, object]) -> dict[str, object]:
    """Connect, send one packet, read one reply, close: AsyncAPY's client did this per request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(frames(payload))
    reply: dict[str, object] = orjson.loads((await asyncio.wait_for(read_frame(reader), 5))[1])
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.02)  # let the server see the close before the next connect
    return reply


async def test_host_tasks_are_lent_again_only_with_a_clean_context() -> None:
    """A closed connection's host task serves the next connection, unless a handler left a variable set."""
    server = make_server()
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    tasks: list[asyncio.Task[object] | None] = []

    @server.add_handler()
    async def handler(client: Client, packet: Packet) -> dict[str, object]:
        tasks.append(asyncio.current_task())
        seen = var.get()
        if packet.get("set"):
            var.set("left behind")
        return {"seen": seen}

    async with running(server):
        assert await _one_request(server.port, {"a": 1}) == {"seen": "unset"}
        assert await _one_request(server.port, {"a": 2}) == {"seen": "unset"}
        assert tasks[0] is tasks[1]  # lent again: nothing of the first connection's state in it
        assert await _one_request(server.port, {"set": True}) == {"seen": "unset"}
        assert await _one_request(server.port, {"a": 3}) == {"seen": "unset"}  # not the dirty host
        assert tasks[3] is not tasks[2]


async def test_concurrent_connections_never_share_a_host_and_stop_ends_the_idle_ones() -> None:
    server = make_server()
    release = asyncio.Event()
    tasks: list[asyncio.Task[object] | None] = []

    @server.add_handler()
    async def handler(client: Client, packet: Packet) -> dict[str, object]:
        tasks.append(asyncio.current_task())
        await release.wait()
        return {"ok": True}

    async with running(server):
        first = [await _one_request_started(server.port) for _ in range(5)]
        for _ in range(100):  # bounded: every handler has started
            if len(tasks) == 5:
                break
            await asyncio.sleep(0.01)
        release.set()
        for reader, writer in first:
            assert orjson.loads((await asyncio.wait_for(read_frame(reader), 5))[1]) == {"ok": True}
            writer.close()
        assert len({id(t) for t in tasks}) == 5
        await asyncio.sleep(0.05)
        hosts = [t for t in asyncio.all_tasks() if t in tasks]
        assert hosts  # parked in the pool
    # running() stopped the server: the pooled host tasks end with it
    await asyncio.sleep(0.05)
    assert not [t for t in tasks if t is not None and not t.done()]


async def _one_request_started(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(frames({"a": 1}))
    return reader, writer


async def _pipelined(server: Server, *payloads: Mapping[str, object]) -> list[dict[str, object]]:
    """Serve, send ``payloads`` in one write on one connection, and read one reply each."""
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frames(*payloads))
        replies = [orjson.loads((await asyncio.wait_for(read_frame(reader), 5))[1]) for _ in payloads]
        writer.close()
    return replies


class Order(BaseModel):
    qty: int

    @field_validator("qty")
    @classmethod
    def buggy(cls, value: int) -> int:
        if value == 13:
            raise RuntimeError("a bug in the application's validator")
        return value


async def test_a_validator_that_raises_is_err_internal_and_the_connection_goes_on() -> None:
    """A validator raising something pydantic does not turn into a ValidationError: the handler's failure."""
    server = make_server()

    @server.add_handler()
    async def order(client: Client, packet: Packet[Order]) -> dict[str, int]:
        return {"qty": packet.data.qty}

    replies = await _pipelined(server, {"qty": 1}, {"qty": 13}, {"qty": 2})
    assert replies[0] == {"qty": 1} and replies[2] == {"qty": 2}
    assert replies[1]["error"] == "ERR_INTERNAL"


async def test_a_reply_the_codec_cannot_carry_is_err_internal_and_the_connection_goes_on() -> None:
    server = make_server()

    @server.add_handler()
    async def handler(client: Client, packet: Packet) -> dict[str, object]:
        if packet["n"] == 1:
            return {"n": {1, 2}}  # a set: not JSON
        return {"n": packet["n"]}

    replies = await _pipelined(server, {"n": 0}, {"n": 1}, {"n": 2})
    assert replies[0] == {"n": 0} and replies[2] == {"n": 2}
    assert replies[1]["error"] == "ERR_INTERNAL"


async def test_a_closed_connection_is_freed_without_the_cycle_collector() -> None:
    """Reference counting alone frees a closed connection (a long-running server's RSS stays flat)."""
    import gc
    import weakref

    server = make_server()

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    async with running(server):
        gc.collect()
        gc.disable()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(frames({"n": 1}))
            await asyncio.wait_for(read_frame(reader), 5)
            assert server._ctx is not None
            (conn,) = server._ctx.connections
            ref = weakref.ref(conn)
            del conn
            writer.close()
            await writer.wait_closed()
            for _ in range(100):  # bounded: the server sees the close
                if ref() is None:
                    break
                await asyncio.sleep(0.01)
            assert ref() is None
        finally:
            gc.enable()
