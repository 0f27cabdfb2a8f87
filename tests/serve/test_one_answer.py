"""Exactly one answer per request, whatever a handler, middleware or teardown raises (issue 20).

Each case is a pipelining client on a real socket: it sends the troublesome packet then
a good one in one write, and must read exactly two packets, the second being the good
one's answer. A second packet for the first request would be read as the answer to
the next one; no answer would leave the client waiting for its timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asyncapy import CallNext, Client, Depends, Packet, Server
from asyncapy.filters import RateLimit

from ..conftest import make_server, read_frame, running
from ..procs import ROOT, free_port, stop_process, wait_for_port


def frame(obj: dict[str, Any]) -> bytes:
    payload = json.dumps(obj).encode()
    return (len(payload) + 2).to_bytes(4, "big") + b"\x16\x00" + payload


async def exchange(port: int, *packets: dict[str, Any], expect: int) -> list[dict[str, Any]]:
    """Send ``packets`` in one write; read ``expect`` replies, then check nothing more comes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(frame(p) for p in packets))
        replies = [json.loads((await asyncio.wait_for(read_frame(reader), 5))[1]) for _ in range(expect)]
        with pytest.raises(asyncio.TimeoutError):  # nothing more: one answer per request
            await asyncio.wait_for(reader.readexactly(1), 0.3)
        return replies
    finally:
        writer.close()


def with_echo(server: Server) -> None:
    @server.add_handler(lambda client, packet: "boom" not in packet)
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)


async def test_a_middleware_that_raises_after_the_handler_answered_sends_nothing_more(caplog: pytest.LogCaptureFixture) -> None:
    server = make_server()

    @server.middleware
    async def audit(client: Client, packet: Packet, call_next: CallNext) -> None:
        await call_next()
        if "after" in packet:
            raise RuntimeError("the audit store is down")

    with_echo(server)
    async with running(server):
        replies = await exchange(server.port, {"after": 1}, {"n": 2}, expect=2)
    assert replies == [{"after": 1}, {"n": 2}]
    assert "RuntimeError" in caplog.text or "the audit store is down" in caplog.text  # logged, not answered


async def test_an_exception_handler_after_the_answer_is_logged_not_sent() -> None:
    server = make_server()

    @server.middleware
    async def audit(client: Client, packet: Packet, call_next: CallNext) -> None:
        await call_next()
        if "after" in packet:
            raise KeyError("late")

    @server.exception_handler(KeyError)
    async def not_found(client: Client, packet: Packet, exc: KeyError) -> dict[str, str]:
        return {"status": "failure", "error": "ERR_NOT_FOUND"}

    with_echo(server)
    async with running(server):
        replies = await exchange(server.port, {"after": 1}, {"n": 2}, expect=2)
    assert replies == [{"after": 1}, {"n": 2}]


@pytest.mark.parametrize("waits", [False, True], ids=["eager", "after-a-wait"])
async def test_handler_code_that_raises_cancelled_error_is_answered(waits: bool) -> None:
    """Awaiting a task something else cancelled raises CancelledError in the handler: ERR_INTERNAL."""
    server = make_server()

    @server.add_handler(lambda client, packet: "boom" in packet)
    async def fetch(client: Client, packet: Packet) -> None:
        if waits:
            await asyncio.sleep(0.01)
        other = asyncio.get_running_loop().create_future()
        other.cancel()
        await other

    with_echo(server)
    async with running(server):
        replies = await exchange(server.port, {"boom": 1}, {"n": 2}, expect=2)
    assert replies[0]["error"] == "ERR_INTERNAL"
    assert replies[1] == {"n": 2}


class Custom(BaseException):
    """A ``BaseException`` subclass some library raises."""


@pytest.mark.parametrize("kind", [Custom, SystemExit, KeyboardInterrupt, GeneratorExit])
@pytest.mark.parametrize("waits", [False, True], ids=["eager", "after-a-wait"])
async def test_base_exceptions_from_handler_code_are_answered(kind: type[BaseException], waits: bool,
                                                              caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    server = make_server()

    @server.add_handler(lambda client, packet: "boom" in packet)
    async def bad(client: Client, packet: Packet) -> None:
        if waits:
            await asyncio.sleep(0.01)
        raise kind("from the handler")

    with_echo(server)
    async with running(server):
        replies = await exchange(server.port, {"boom": 1}, {"n": 2}, expect=2)
        assert replies[0]["error"] == "ERR_INTERNAL"
        assert replies[1] == {"n": 2}
        assert await exchange(server.port, {"n": 3}, expect=1) == [{"n": 3}]  # the server goes on
    assert kind.__name__ in caplog.text  # the traceback is logged


def test_system_exit_and_keyboard_interrupt_in_a_served_process(tmp_path: Path) -> None:
    """Process-wide: the server answers ERR_INTERNAL, keeps accepting, and still stops cleanly on SIGTERM."""
    app = tmp_path / "exits_app.py"
    app.write_text(textwrap.dedent("""
        from asyncapy import Client, Packet, Server

        server = Server("127.0.0.1", 0)

        @server.add_handler()
        async def h(client: Client, packet: Packet) -> dict:
            if packet.get("exit") == "system":
                raise SystemExit(3)
            if packet.get("exit") == "interrupt":
                raise KeyboardInterrupt
            return {"ok": packet.get("n")}
    """))
    port = free_port()
    cmd = [sys.executable, "-m", "asyncapy", "run", "exits_app:server", "--port", str(port)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)

        async def talk() -> list[dict[str, Any]]:
            first = await exchange(port, {"exit": "system"}, {"n": 1}, expect=2)
            second = await exchange(port, {"exit": "interrupt"}, {"n": 2}, expect=2)
            return first + second

        replies = asyncio.run(talk())
        assert [r.get("error") or r["ok"] for r in replies] == ["ERR_INTERNAL", 1, "ERR_INTERNAL", 2]
        assert proc.poll() is None  # still serving
    finally:
        err = stop_process(proc)
    assert proc.returncode == 0, err
    assert "SystemExit" in err and "KeyboardInterrupt" in err


async def test_a_failing_async_teardown_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    server = make_server()

    async def resource() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("async teardown failed")

    @server.add_handler(lambda client, packet: "boom" in packet)
    async def uses(client: Client, packet: Packet, r: int = Depends(resource)) -> dict[str, int]:
        return {"r": r}

    with_echo(server)
    caplog.set_level(logging.ERROR, "asyncapy")
    async with running(server):
        replies = await exchange(server.port, {"boom": 1}, {"n": 2}, expect=2)
    assert replies == [{"r": 1}, {"n": 2}]
    assert "async teardown failed" in caplog.text


async def test_error_details_false_holds_for_every_error_reply() -> None:
    """``error_details=False``: exactly ``{"status": "failure", "error": CODE}``, the rate limit's too."""
    server = make_server(error_details=False, rate_limit=RateLimit("1/minute"))
    with_echo(server)
    async with running(server):
        replies = await exchange(server.port, {"n": 1}, {"n": 2}, expect=2)
    assert replies == [{"n": 1}, {"status": "failure", "error": "ERR_RATE_LIMITED"}]
