"""Hardening, round three (issue 21): hostile input meets the application and operating layers.

Every test here reproduced its failure on real sockets, a real server process or a
real Redis before the fix, unless its docstring says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import pytest
import orjson
from pydantic import BaseModel, ConfigDict

from asyncapy import APIKeyFactory, ApiError, Client, Depends, Packet, Router, UsageError
from asyncapy.client import AsyncClient
from asyncapy.codecs import get_codec
from asyncapy.filters import ApiKey
from asyncapy.protocol import encode_frame
from asyncapy.proxy import encode_v2

from ..conftest import make_server, read_frame, running
from ..procs import ROOT, free_port, stop_process, wait_for_port
from ..services import RedisProcess, redis_server  # noqa: F401  (fixture)


# -- Depends(42): the programmer's slip, named at registration ------------------------------


def test_depends_on_a_non_callable_names_the_handler_and_the_parameter() -> None:
    server = make_server()

    async def create(client: Client, packet: Packet, tx: Annotated[int, Depends(42)]) -> None: ...

    with pytest.raises(UsageError, match=r"handler '.*create'.*parameter 'tx'.*callable.*42"):
        server.register_handler(create)

    async def listed(client: Client, packet: Packet) -> None: ...

    with pytest.raises(UsageError, match=r"handler '.*listed'.*dependencies=\[\.\.\.\].*callable.*'nope'"):
        server.register_handler(listed, dependencies=[Depends("nope")])  # type: ignore[arg-type]

    with pytest.raises(UsageError, match=r"Router\(dependencies=\.\.\.\).*callable.*None"):
        Router(dependencies=[Depends(None)])  # type: ignore[arg-type]  # no handler yet: fails at once


# -- a signal while the lifespan starts ------------------------------------------------------


@pytest.mark.parametrize("how", ["start", "cli"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_slow_lifespan_startup_stops_cleanly(how: str, sig: signal.Signals, tmp_path: Path) -> None:
    """SIGTERM killed the process by the signal (exit -15); both stop it with status 0, logged."""
    log = tmp_path / "lifespan.log"
    port = free_port()
    env = {**os.environ, "LIFESPAN_LOG": str(log), "LIFESPAN_SLOW": "60", "PORT": str(port), "PYTHONPATH": str(ROOT)}
    if how == "cli":
        args = ["-m", "asyncapy", "run", "tests.servers.lifespan_app:server", "--port", str(port)]
    else:
        args = ["tests/servers/lifespan_app.py"]
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (log.exists() and "starting" in log.read_text()):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert "starting" in log.read_text()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "interrupted" in log.read_text()  # the lifespan saw the cancellation (its cleanup ran)
    assert "Stopped before serving" in err and "Serving on" not in err and "Traceback" not in err, err



async def test_a_lifespan_entered_is_exited_when_the_server_cannot_listen() -> None:
    """The port is taken: start_serving raises, and what the lifespan opened is closed."""
    import socket
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    events: list[str] = []

    @asynccontextmanager
    async def lifespan(server: Any) -> AsyncIterator[None]:
        events.append("enter")
        yield
        events.append("exit")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = make_server(port=taken.getsockname()[1], lifespan=lifespan)
        with pytest.raises(OSError):
            await server.start_serving()
    assert events == ["enter", "exit"]

# -- exact values: NaN and infinities in JSON, integers ZiProto cannot carry (DESIGN §10) ----


class Measure(BaseModel):
    value: float
    extra: dict[str, Any] = {}


class Count(BaseModel):
    n: int


def _inexact_server(store: dict[str, Any]) -> Any:
    server = make_server()

    @server.add_handler()
    async def inexact(client: Client, packet: Packet) -> Any:
        what = packet["what"]
        if what == "dict":
            return {"value": math.nan, "fine": None}
        if what == "nested":
            return {"rows": [{"value": 1.0}, {"value": -math.inf}]}
        if what == "model":
            return Measure(value=math.inf)
        if what == "model dict":
            return Measure(value=1.0, extra={"ratio": math.nan})
        if what == "send":
            await client.send({"value": math.nan})
            return None
        if what == "api error":
            raise ApiError("ERR_ODD", {"value": math.nan})
        if what == "api error big":
            raise ApiError("ERR_ODD", {"n": store["n"]})
        if what == "store":
            store["n"] = packet["n"]
            return {"stored": True}
        if what == "get":
            return {"n": store["n"]}
        if what == "get model":
            return Count(n=store["n"])
        return {"value": None, "ok": 1.5}

    return server


INTERNAL = "ERR_INTERNAL"


@pytest.mark.parametrize("what", ["dict", "nested", "model", "model dict", "send", "api error"])
async def test_nan_and_infinity_in_a_json_reply_are_err_internal_never_null(what: str, caplog: pytest.LogCaptureFixture) -> None:
    """They were sent as ``null`` (a dict and a model reply alike; an ``ApiError`` detail with one
    closed the connection with asyncio's "Fatal error" once NaN was refused)."""
    async with running(_inexact_server({})) as server, AsyncClient("127.0.0.1", server.port, timeout=5) as client:
        caplog.clear()
        await client.send({"what": what})
        reply = await client.receive()
        assert reply["error"] == INTERNAL, reply
        assert await client.request({"what": "plain"}) == {"value": None, "ok": 1.5}  # open; null itself is fine
    reasons = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(reasons) == 1 and "NaN" in reasons[0].getMessage(), [r.getMessage() for r in reasons]
    assert reasons[0].exc_info is None  # the reason, not a traceback


@pytest.mark.parametrize("what", ["get", "get model", "api error big"])
async def test_an_integer_a_ziproto_session_cannot_carry_is_err_internal_with_the_reason(
    what: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A big integer stored from JSON and sent on a ZiProto session failed with a traceback (in an
    ``ApiError`` detail it closed the connection: asyncio's "Fatal error")."""
    store: dict[str, Any] = {}
    async with running(_inexact_server(store)) as server:
        async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
            assert await client.request({"what": "store", "n": 2**70}) == {"stored": True}
        caplog.clear()
        async with AsyncClient("127.0.0.1", server.port, timeout=5, encoding="ziproto") as client:
            await client.send({"what": what})
            reply = await client.receive()
            assert reply["error"] == INTERNAL, reply
            assert await client.request({"what": "plain"}) == {"value": None, "ok": 1.5}
    reasons = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(reasons) == 1 and "64 bits" in reasons[0].getMessage(), [r.getMessage() for r in reasons]
    assert reasons[0].exc_info is None


# -- ERR_NO_HANDLER amplification -----------------------------------------------------------------


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")
    v: int
    kids: dict[str, Node] = {}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int
    scores: dict[str, int] = {}
    tree: Optional[Node] = None


def _strict_server(handlers: int) -> Any:
    server = make_server(max_packet_size=4 << 20)
    for i in range(handlers):

        async def strict(client: Client, packet: Packet[Strict]) -> None: ...

        strict.__qualname__ = f"strict_{i}"
        server.register_handler(strict)
    return server


def _deep(levels: int, key: str) -> dict[str, Any]:
    node: dict[str, Any] = {"v": "not a number"}
    for _ in range(levels):
        node = {"v": 1, "kids": {key: node}}
    return node


AMPLIFIERS = {
    "a huge field name": {"k" * 300_000: 1},
    "a huge map key": {"a": 1, "scores": {"k" * 300_000: "x", "j" * 1_000: "y"}},
    "many long names": {f"k{i}" * 2_000: 1 for i in range(150)},
    "control characters": {"\x01" * 50_000: 1},
    "a deep path": {"a": 1, "tree": _deep(60, "k" * 200)},
    "a small packet": {"b": 1},
}


@pytest.mark.parametrize("encoding", ["json", "ziproto"])
@pytest.mark.parametrize("name", list(AMPLIFIERS))
async def test_an_err_no_handler_reply_is_never_larger_than_64_kib_or_its_request(name: str, encoding: str) -> None:
    """A 300 KB packet with a huge field name was answered by 20 handlers' worth of it: 6 MB (20x)."""
    codec = get_codec(encoding)
    request = codec.encode(AMPLIFIERS[name])
    async with running(_strict_server(20)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(encode_frame(request, codec.id))
            _, payload = await asyncio.wait_for(read_frame(reader), 10)
        finally:
            writer.close()
    assert len(payload) <= max(64 * 1024, len(request)), (len(payload), len(request))
    reply = codec.decode(payload)
    assert reply["error"] == "ERR_NO_HANDLER" and reply["detail"]
    assert reply["errors"] and all(set(e) == {"handler", "group", "reason", "loc", "msg"} for e in reply["errors"])
    assert reply["errors"][0]["handler"] == "strict_0"
    if name == "a small packet":  # what a mistake looks like is unchanged
        assert reply["errors"][0]["loc"] == ["a"] and reply["errors"][0]["msg"] == "Field required"
        assert len(reply["errors"]) == 20


# -- log injection: one event, one line --------------------------------------------------------

FORGED = "FAKE 10.0.0.1:1 admin OK 1us"
LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO |WARNING|ERROR) ")
INJECTIONS: list[tuple[str, dict[str, Any]]] = [
    ("json", {f"x\n2026-01-01 00:00:00.000 INFO  asyncapy.access: {FORGED}\n\x1b[2J\u2028": 1}),  # a field name
    ("ziproto", {"status": "failure", "error": f"X\n{FORGED}\r\x1b[2J"}),  # an echo shaped like an error reply
    ("json", {"status": "failure", "error": "A" * 100_000}),  # a 100 KB error code
    ("json", {"k" * 100_000: 1}),  # a 100 KB field name
    ("ziproto", {"\x1b]0;owned\x07" + "\\x0a" * 10: 1}),  # a terminal title, and text that looks escaped
]


def _send_hostile(port: int) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for encoding, payload in INJECTIONS:
            codec = get_codec(encoding)
            sock.sendall(encode_frame(codec.encode(payload), codec.id))
        received = b""
        deadline = time.monotonic() + 10
        while received.count(b"\x16") < len(INJECTIONS) and time.monotonic() < deadline:  # bounded
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += chunk
        sock.sendall(encode_frame(get_codec("json").encode({"a": 1}), 0))  # still served, in order
        assert sock.recv(1 << 20)


def _check_lines(text: str, where: str, escaped: bool = True) -> None:
    lines = text.splitlines()  # also splits at \x1c-\x1e, \x85, \u2028, \u2029: none may be there
    assert lines, where
    for line in lines:
        assert LINE_START.match(line), f"{where}: a line that is no event of its own: {line[:200]!r}"
        assert len(line.encode()) < 8 * 1024, f"{where}: a line of {len(line.encode())} bytes"
        assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in line), f"{where}: {line[:200]!r}"
    if escaped:
        assert "\\x0a" in text and "\\x1b" in text, where  # escaped as nginx does, not dropped


@pytest.mark.parametrize("target", ["logger", "file"])
def test_client_text_in_the_access_and_debug_logs_is_one_line_escaped_and_bounded(target: str, tmp_path: Path) -> None:
    """Field names and echoed error codes wrote newlines, ANSI escapes and 100 KB lines: a forged
    ``FAKE 10.0.0.1:1 admin OK 1us`` line appeared as if the server wrote it."""
    port = free_port()
    access = tmp_path / "access.log"
    flag = ["--access-log"] if target == "logger" else ["--access-log-file", str(access)]
    cmd = [sys.executable, "-m", "asyncapy", "run", "tests.servers.hostile_logs:server", "--port", str(port), "--log-level", "debug", *flag]
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:  # a file: a pipe nobody reads would block the server's logging
        proc = subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_for_port(port, proc)
            _send_hostile(port)
        finally:
            stop_process(proc)
    err = log.read_text()
    assert proc.returncode == 0, err[-2000:]
    _check_lines(err, "stderr")
    assert "Replying ERR_NO_HANDLER" in err
    text = err if target == "logger" else access.read_text()
    if target == "file":
        _check_lines(text, "access log file", escaped=False)
        assert len(text.splitlines()) == len(INJECTIONS) + 1, text[:2000]
    # An echoed packet shaped like an error reply is an OK answer: the outcome is what the
    # application answered, so the client's "error" text never reaches the access log.
    access_lines = [line for line in text.splitlines() if re.match(r"\S+ \S+ INFO  (\[\d+\] )?asyncapy\.access: ", line)]
    assert access_lines and FORGED not in "".join(access_lines) and "AAA" not in "".join(access_lines)
    assert all(line.split()[-2] in {"OK", "ERR_NO_HANDLER", "ERR_REQUEST_MALFORMED"} for line in access_lines), access_lines


# -- a malformed PROXY header: logged once --------------------------------------------------------

MALFORMED_HEADERS = [
    b"PROXY TCP4 999.0.0.1 10.0.0.1 1 2\r\n",
    b"PROXY \x1b[2J\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00\x00\x00\x05\x16\x00{}",
    b"PROXY " + b"A" * 200,
    encode_v2(("203.0.113.1", 1))[:13] + b"\x12" + encode_v2(("203.0.113.1", 1))[14:],
    b"\r\n\r\n\x00\r\nQUIX\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 1\r\n",
    b"PROXY TCP4 1.2.3.4",  # then EOF: cut short
    b"\r\n\r\n\x00",  # then EOF
]


def test_a_malformed_proxy_header_from_a_trusted_peer_is_logged_once(tmp_path: Path) -> None:
    """22 malformed connections wrote 23 lines: a connection that sends nothing at all (the
    readiness probe, a balancer's TCP check) was logged as one more malformed header."""
    import socket

    port = free_port()
    cmd = [sys.executable, "-m", "asyncapy", "run", "tests.servers.hostile_logs:server", "--port", str(port), "--proxy-protocol"]
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_for_port(port, proc)  # itself a connection that sends nothing
            for data in MALFORMED_HEADERS * 2:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(data)
                    sock.shutdown(socket.SHUT_WR)
                    with contextlib.suppress(ConnectionResetError):
                        assert sock.recv(100) == b""  # closed without a reply
            for _ in range(3):  # probes: connect, close
                socket.create_connection(("127.0.0.1", port), timeout=10).close()
        finally:
            stop_process(proc)
    err = log.read_text()
    assert proc.returncode == 0, err
    dropped = [line for line in err.splitlines() if "Closed a connection without reply" in line]
    assert len(dropped) == 2 * len(MALFORMED_HEADERS), "\n".join(dropped)
    ports = [re.search(r"127\.0\.0\.1:(\d+)", line) for line in dropped]
    assert all(ports) and len({m.group(1) for m in ports if m}) == len(dropped)  # one line per connection


# -- API keys while Redis is frozen: fail closed ----------------------------------------------------


async def test_api_keys_fail_closed_while_redis_is_frozen(redis_server: RedisProcess) -> None:  # noqa: F811
    """Redis stops answering (SIGSTOP: it connects, never answers). Every packet that needs a
    key check gets ERR_INTERNAL "the shared state is unavailable", from many clients at once
    (more than the pool's connections); none is accepted, a revoked key never passes, and
    the packets that need no Redis are served. Once Redis answers again, keys work again.

    The issue saw keys accepted during the outage; on this code the test passed before the
    change that came with it (each Redis call now bounded as a whole by ``timeout``, pool
    wait and connect included: up to 2.4 times ``timeout`` before)."""
    from asyncapy.redis import RedisState
    from asyncapy.shared.state import SHARED_STATE_UNAVAILABLE

    state = RedisState(redis_server.url, namespace="frozen", timeout=0.3, max_connections=4)
    keys = APIKeyFactory(store=state)
    server = make_server()

    @server.add_handler(ApiKey(keys))
    async def private(client: Client, packet: Packet) -> dict[str, Any]:
        return {"private": True}

    @server.add_handler()
    async def public(client: Client, packet: Packet) -> dict[str, Any]:
        return {"public": True}

    unavailable = {"status": "failure", "error": "ERR_INTERNAL", "detail": SHARED_STATE_UNAVAILABLE}
    async with running(server):
        good, revoked = await keys.acreate(), await keys.acreate()
        assert await keys.arevoke(revoked)
        clients = [AsyncClient("127.0.0.1", server.port, timeout=10) for _ in range(12)]  # 10 s: never hangs
        try:
            for client in clients:
                await client.connect()
            assert await clients[0].request({"api_key": good}) == {"private": True}
            redis_server.pause()
            try:
                for _ in range(3):
                    replies = await asyncio.gather(
                        *(c.request({"api_key": good if i % 2 else revoked}) for i, c in enumerate(clients))
                    )
                    assert replies == [unavailable] * len(clients)
                    assert await clients[0].request({"hello": 1}) == {"public": True}  # needs no Redis
            finally:
                redis_server.resume()
            assert await clients[0].request({"api_key": good}) == {"private": True}
            assert (await clients[1].request({"api_key": revoked}))["public"]  # refused by the filter
        finally:
            for client in clients:
                await client.close()
    await state.aclose()
