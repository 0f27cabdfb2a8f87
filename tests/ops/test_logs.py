"""Logging: the application's loggers and the format under ``asyncapy run``; the access log."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pydantic import BaseModel

from asyncapy import ApiError, Client, Packet, Server
from asyncapy.client import AsyncClient, Client as SyncClient
from asyncapy.serve.connection import Connection

from ..conftest import make_server, running
from ..procs import ROOT, free_port, stop_process, wait_for_port


class Buy(BaseModel):
    item: int


class Sell(BaseModel):
    lot: int

TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def run_and_stop(*args: str, requests: list[dict[str, object]]) -> str:
    """``asyncapy run tests.servers.observed:server ARGS``, send ``requests``, SIGTERM; its stderr."""
    port = free_port()
    cmd = [sys.executable, "-m", "asyncapy", "run", "tests.servers.observed:server", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        with SyncClient("127.0.0.1", port, timeout=10) as client:
            for request in requests:
                client.request(request)
    finally:
        err = stop_process(proc)
    assert proc.returncode == 0, err
    return err


def test_log_level_shows_the_applications_lines_with_time_level_and_session() -> None:
    err = run_and_stop("--log-level", "info", requests=[{"name": "ada"}])
    line = re.search(rf"^{TIME} INFO  shop: hello ada \(session ({UUID})\)$", err, re.M)
    assert line is not None, err
    # asyncapy's own lines name the same session in their text.
    assert re.search(rf"^{TIME} INFO  asyncapy: \({line[1]}\) New session started", err, re.M), err


def test_log_level_warning_hides_info_lines() -> None:
    err = run_and_stop("--log-level", "warning", requests=[{"name": "ada"}])
    assert "hello ada" not in err and "Serving on" not in err


def test_workers_lines_carry_the_pid() -> None:
    err = run_and_stop("--workers", "2", "--log-level", "info", requests=[{"name": "ada"}])
    line = re.search(rf"^{TIME} INFO  \[(\d+)\] shop: hello ada \(session {UUID}\)$", err, re.M)
    assert line is not None, err
    assert re.search(rf"^{TIME} INFO  \[\d+\] asyncapy: Started 2 workers", err, re.M), err


def test_access_log_flag_writes_one_line_per_packet() -> None:
    requests: list[dict[str, object]] = [{"name": "ada"}, {"nope": 1}, {"name": "boom"}, {"name": "bo", "audit": "x"}]
    err = run_and_stop("--access-log", requests=requests)
    access = re.findall(rf"^{TIME} INFO  asyncapy\.access: 127\.0\.0\.1:\d+ (\S+) (\S+) (\d+)us$", err, re.M)
    assert [(handlers, outcome) for handlers, outcome, _ in access] == [
        ("person", "OK"),
        ("-", "ERR_NO_HANDLER"),
        ("person", "ERR_INTERNAL"),
        ("audit,person", "OK"),
    ], err


def test_access_log_is_off_by_default() -> None:
    err = run_and_stop("--log-level", "info", requests=[{"name": "ada"}])
    assert "asyncapy.access" not in err


async def test_access_log_to_a_file(tmp_path: Path) -> None:
    """Direct path (one group), malformed payloads and frame errors included; the file only."""
    path = tmp_path / "access.log"
    server = make_server(access_log=str(path))

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        if "wait" in packet:
            await asyncio.sleep(0.01)  # finished in the host task, not eagerly
        await client.send(packet)

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x00\x00\x00\r\x16\x00{\"test\": 1}")  # OK
        writer.write(b"\x00\x00\x00\x05\x16\x00[1]")  # a list: ERR_REQUEST_MALFORMED
        writer.write(b"\x00\x00\x00\x03\x15\x00{")  # protocol version 21: ERR_HEADER_INVALID
        writer.write(b"\x00\x00\x00\r\x16\x00{\"wait\": 1}")  # waits: OK
        await writer.drain()
        for _ in range(4):
            length = int.from_bytes(await reader.readexactly(4), "big")
            await reader.readexactly(length)
        for _ in range(40):  # written in blocks, flushed every FLUSH_EVERY seconds while serving
            if len(path.read_text().splitlines()) == 4:
                break
            await asyncio.sleep(0.05)
        assert len(path.read_text().splitlines()) == 4
        writer.close()
        await writer.wait_closed()
    lines = path.read_text().splitlines()
    outcomes = [line.split()[-3:-1] for line in lines]
    name = echo.__qualname__  # the handler's name, as in ERR_NO_HANDLER details
    assert outcomes == [[name, "OK"], ["-", "ERR_REQUEST_MALFORMED"], ["-", "ERR_HEADER_INVALID"], [name, "OK"]]
    assert all(re.search(r"asyncapy\.access: 127\.0\.0\.1:\d+ \S+ \S+ \d+us$", line) for line in lines), lines
    assert int(lines[3].split()[-1][:-2]) >= 10_000  # the 10 ms wait is in its duration


async def test_nothing_observed_when_off() -> None:
    """Off is decided when serving starts: no observation layer, no record, the plan as compiled."""
    server = make_server()

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert await client.request({"a": 1}) == {"a": 1}
            ctx = server._ctx
            assert ctx is not None and ctx.pipeline.observer is None and ctx.pipeline.plan is server.compile()
            assert "observation" not in ctx.pipeline.layers
            assert {type(conn) for conn in ctx.connections} == {Connection}
            assert all(conn._ex is not None and conn._ex.record is None for conn in ctx.connections)


async def test_observed_when_on(tmp_path: Path) -> None:
    server = make_server(access_log=str(tmp_path / "a.log"))

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert await client.request({"a": 1}) == {"a": 1}
            ctx = server._ctx
            assert ctx is not None and ctx.pipeline.observer is not None
            assert ctx.pipeline.layers[-1] == "observation"
            assert {type(conn) for conn in ctx.connections} == {Connection}  # nothing subclasses it
            assert all(conn._ex is not None and conn._ex.record is not None for conn in ctx.connections)


@pytest.mark.parametrize("level", [logging.DEBUG, logging.WARNING])
def test_configure_logging_leaves_a_configured_root_alone(level: int) -> None:
    from asyncapy.ops.logs import configure_logging

    root = logging.getLogger()
    handler = logging.NullHandler()
    saved = root.level, root.handlers[:]
    root.handlers[:] = [handler]
    try:
        configure_logging(level)
        assert root.handlers == [handler] and root.level == saved[0]
        assert logging.getLogger("asyncapy").level == level
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def test_server_signature() -> None:
    Server(access_log=True)
    with pytest.raises(ValueError, match="metrics_port"):
        Server(metrics_port=-1)


@pytest.mark.parametrize("settings", [{}, {"handler_timeout": 5.0}], ids=["direct", "handler_timeout"])
async def test_access_log_names_the_handler_on_every_path(tmp_path: Path, settings: dict[str, float]) -> None:
    """Handlers called directly are named by their code; behind handler_timeout they note their name."""
    path = tmp_path / "access.log"
    server = make_server(access_log=str(path), **settings)

    @server.add_handler()
    async def hello(client: Client, packet: Packet) -> dict[str, str]:
        if packet.get("late"):
            await asyncio.sleep(0.001)
        return {"hi": "there"}

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert await client.request({"late": False}) == {"hi": "there"}
            assert await client.request({"late": True}) == {"hi": "there"}
    assert [line.split()[-3:-1] for line in path.read_text().splitlines()] == [[hello.__qualname__, "OK"]] * 2


@pytest.mark.parametrize("encoding", ["json", "ziproto"])
async def test_the_outcome_is_what_the_application_answered_not_what_was_sent(tmp_path: Path, encoding: str) -> None:
    """An ``ApiError`` is the outcome (its code when declared, else ``other``); a packet a handler
    sends is an OK answer whatever it looks like: a client cannot choose the outcome by echo."""
    path = tmp_path / "access.log"
    server = make_server(access_log=str(path))

    @server.add_handler(errors=["ERR_OUT_OF_STOCK"])
    async def buy(client: Client, packet: Packet[Buy]) -> None:
        raise ApiError("ERR_OUT_OF_STOCK", "none left")

    @server.add_handler()
    async def sell(client: Client, packet: Packet[Sell]) -> None:
        raise ApiError("ERR_UNDECLARED", "not in errors=[...]")

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    forged = {"status": "failure", "error": "ERR_FORGED", "detail": "x\nFAKE 10.0.0.1:1 admin OK 1us"}
    async with running(server):
        async with AsyncClient("127.0.0.1", server.port, encoding=encoding) as client:
            assert (await client.request({"item": 1}))["error"] == "ERR_OUT_OF_STOCK"
            assert (await client.request({"lot": 1}))["error"] == "ERR_UNDECLARED"
            assert await client.request(forged) == forged
    outcomes = [line.split()[-3:-1] for line in path.read_text().splitlines()]
    assert outcomes == [[buy.__qualname__, "ERR_OUT_OF_STOCK"], [sell.__qualname__, "other"], [echo.__qualname__, "OK"]]


async def test_access_log_behind_a_proxy_names_the_client(tmp_path: Path) -> None:
    """With ``proxy_protocol`` the observed connection is the gated one: the client's address is logged."""
    path = tmp_path / "access.log"
    server = make_server(access_log=str(path), proxy_protocol=True, trusted_proxies=["127.0.0.0/8"])

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 1500\r\n" + b"\x00\x00\x00\r\x16\x00{\"test\": 1}")
        length = int.from_bytes(await reader.readexactly(4), "big")
        assert (await reader.readexactly(length))[2:] == b'{"test": 1}'
        writer.close()
        await writer.wait_closed()
    (line,) = path.read_text().splitlines()
    assert line.split()[-4:-1] == ["10.1.2.3:5555", echo.__qualname__, "OK"], line
