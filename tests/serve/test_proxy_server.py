"""``Server(proxy_protocol=True)`` on real sockets: the client's real address everywhere, rejects unanswered."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
from pathlib import Path
from typing import Any

import pytest

from asyncapy import Client, Packet, Server, filters
from asyncapy.wire.codecs import get_codec
from asyncapy.wire.proxy import encode_v1, encode_v2
from asyncapy.wire.protocol import encode_frame

from ..conftest import make_server, read_frame, running
from ..procs import free_port, server_process

JSON = get_codec("json")


def _frame(payload: dict[str, Any]) -> bytes:
    return encode_frame(JSON.encode(payload), JSON.id)


def _whoami_server(**kwargs: Any) -> Server:
    kwargs.setdefault("proxy_protocol", True)
    server = make_server(**kwargs)

    @server.add_handler(filters.Ip("203.0.113.0/24"))
    async def inside(client: Client, packet: Packet) -> dict[str, Any]:
        return {"address": client.address, "port": client.port, "where": "inside", "sessions": len(client.get_sessions())}

    @server.add_handler()
    async def outside(client: Client, packet: Packet) -> dict[str, Any]:
        return {"address": client.address, "port": client.port, "where": "outside", "sessions": len(client.get_sessions())}

    return server


async def _open(port: int, local: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))


async def _ask(port: int, header: bytes, local: str = "127.0.0.1") -> dict[str, Any]:
    reader, writer = await _open(port, local)
    try:
        writer.write(header + _frame({"who": "am I"}))
        _, payload = await asyncio.wait_for(read_frame(reader), 10)
        reply: dict[str, Any] = JSON.decode(payload)
        return reply
    finally:
        writer.close()


async def _closed_without_reply(port: int, data: bytes, local: str = "127.0.0.1") -> None:
    reader, writer = await _open(port, local)
    try:
        writer.write(data)
        try:  # closed unread input may come back as a reset
            assert await asyncio.wait_for(reader.read(), 10) == b""
        except ConnectionResetError:
            pass
    finally:
        writer.close()


@pytest.mark.parametrize("version", [1, 2])
async def test_the_handler_and_ip_filter_see_the_real_client(version: int) -> None:
    encode = encode_v1 if version == 1 else encode_v2
    async with running(_whoami_server()) as server:
        inside = await _ask(server.port, encode(("203.0.113.9", 40000), ("127.0.0.1", server.port)))
        outside = await _ask(server.port, encode(("198.51.100.1", 40001), ("127.0.0.1", server.port)))
        six = await _ask(server.port, encode(("2001:db8::5", 40002), ("::1", server.port)))
    assert inside == {"address": "203.0.113.9", "port": 40000, "where": "inside", "sessions": 1}
    assert outside["address"] == "198.51.100.1" and outside["where"] == "outside"
    assert six["address"] == "2001:db8::5" and six["port"] == 40002


async def test_header_and_packets_in_one_write_and_byte_by_byte() -> None:
    async with running(_whoami_server()) as server:
        reader, writer = await _open(server.port)
        data = encode_v2(("203.0.113.1", 1)) + _frame({"n": 1}) + _frame({"n": 2})
        for byte in data:  # one byte per write: the header and frames cut everywhere
            writer.write(bytes((byte,)))
            await writer.drain()
        replies = [JSON.decode((await asyncio.wait_for(read_frame(reader), 10))[1]) for _ in range(2)]
        writer.close()
    assert [r["address"] for r in replies] == ["203.0.113.1", "203.0.113.1"]


async def test_local_and_unknown_headers_use_the_proxy_address() -> None:
    async with running(_whoami_server()) as server:
        local = await _ask(server.port, encode_v2(None), local="127.0.0.2")
        unknown = await _ask(server.port, b"PROXY UNKNOWN\r\n", local="127.0.0.2")
    assert local["address"] == unknown["address"] == "127.0.0.2"


async def test_session_limit_counts_the_real_address(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "asyncapy")
    async with running(_whoami_server(session_limit=1)) as server:
        first_reader, first = await _open(server.port)
        first.write(encode_v1(("203.0.113.5", 1), ("127.0.0.1", 2)) + _frame({}))
        await read_frame(first_reader)  # the first session of 203.0.113.5 is open
        refused = await _ask(server.port, encode_v1(("203.0.113.5", 2), ("127.0.0.1", 2)))
        other = await _ask(server.port, encode_v1(("203.0.113.6", 3), ("127.0.0.1", 2)))
        first.close()
    assert refused["error"] == "ERR_SESSION_LIMIT_REACHED" and "203.0.113.5" in refused["detail"]
    assert other["address"] == "203.0.113.6"
    text = caplog.text
    assert "New session started from 203.0.113.5:1" in text and "Refused a connection from 203.0.113.5" in text


async def test_untrusted_sources_are_closed_without_reply(caplog: pytest.LogCaptureFixture) -> None:
    async with running(_whoami_server(trusted_proxies=["127.0.0.2"])) as server:
        header = encode_v1(("203.0.113.9", 1), ("127.0.0.1", 2))
        await _closed_without_reply(server.port, header + _frame({}), local="127.0.0.1")
        assert (await _ask(server.port, header, local="127.0.0.2"))["address"] == "203.0.113.9"
    assert "127.0.0.1" in caplog.text and "not a trusted proxy" in caplog.text


@pytest.mark.parametrize(
    "data",
    [
        _frame({"test": 1}),  # a client that went around the balancer
        b"PROXY TCP4 999.0.0.1 10.0.0.1 1 2\r\n" + _frame({}),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        encode_v2(("203.0.113.1", 1))[:13] + b"\x12" + encode_v2(("203.0.113.1", 1))[14:],  # UDP
    ],
)
async def test_invalid_headers_are_closed_without_reply(data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    async with running(_whoami_server()) as server:
        await _closed_without_reply(server.port, data)
        assert (await _ask(server.port, encode_v2(("203.0.113.2", 1))))["address"] == "203.0.113.2"
    assert "Closed a connection without reply" in caplog.text and "PROXY" in caplog.text


async def test_a_missing_header_times_out_unanswered(caplog: pytest.LogCaptureFixture) -> None:
    async with running(_whoami_server(timeout=0.3)) as server:
        reader, writer = await _open(server.port)
        writer.write(b"PROXY TCP4 203.0.113.1")  # and then nothing
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        reader, writer = await _open(server.port)
        writer.write(b"\r\n\r\n")
        writer.write_eof()  # a peer that hangs up before a whole header
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        reader, writer = await _open(server.port)
        writer.write_eof()  # one that sends nothing at all (a port probe): closed, no warning
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    assert "within 0.3 s" in caplog.text and caplog.text.count("closed before a whole PROXY header") == 1


async def test_without_proxy_protocol_a_header_is_an_ordinary_bad_frame() -> None:
    async with running(_whoami_server(proxy_protocol=False)) as server:
        reader, writer = await _open(server.port)
        writer.write(_frame({}))
        assert JSON.decode((await read_frame(reader))[1])["address"] == "127.0.0.1"
        writer.close()


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="proxy_protocol"):
        Server(trusted_proxies=["10.0.0.0/8"])
    with pytest.raises(ValueError, match="not an IP address"):
        Server(proxy_protocol=True, trusted_proxies=["example.com"])
    assert Server(proxy_protocol=True).trusted_proxies == Server(proxy_protocol=False).trusted_proxies


def test_server_ini_keys(tmp_path: Path) -> None:
    ini = tmp_path / "server.ini"
    ini.write_text("[AsyncAPY]\nproxy_protocol = yes\ntrusted_proxies = 10.0.0.0/8, 192.168.1.10 ::1\n")
    server = Server(config=ini)
    assert server.proxy_protocol is True
    assert [str(n) for n in server.trusted_proxies] == ["10.0.0.0/8", "192.168.1.10/32", "::1/128"]
    ini.write_text("[AsyncAPY]\nproxy_protocol = perhaps\n")
    with pytest.raises(ValueError, match="proxy_protocol"):
        Server(config=ini)


APP = """
from asyncapy import Client, Packet, Server

server = Server("127.0.0.1", 0)

@server.add_handler()
async def whoami(client: Client, packet: Packet) -> dict:
    return {"address": client.address}
"""


def _recv_frame(sock: socket.socket) -> dict[str, Any]:
    data = b""
    while len(data) < 6 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        chunk = sock.recv(4096)
        assert chunk, "closed before a whole reply"
        data += chunk
    reply: dict[str, Any] = json.loads(data[6:])
    return reply


def test_cli_proxy_protocol_and_trusted_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "proxied_app.py").write_text(APP)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    port = free_port()
    args = ["-m", "asyncapy", "run", "proxied_app:server", "--port", str(port), "--proxy-protocol", "--trusted-proxy", "127.0.0.2"]
    with server_process(args, port) as proc:
        with socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0), timeout=10) as sock:
            sock.sendall(encode_v1(("203.0.113.77", 5), ("127.0.0.1", port)) + _frame({}))
            assert _recv_frame(sock) == {"address": "203.0.113.77"}
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # 127.0.0.1: not trusted
            sock.sendall(encode_v1(("203.0.113.77", 5), ("127.0.0.1", port)))
            try:
                assert sock.recv(4096) == b""
            except ConnectionResetError:
                pass
    assert proc.returncode == 0, proc.communicate()
    assert "not a trusted proxy" in proc.communicate()[1]


#: Garbage connections against a proxied server: every class many times, still quick.
GARBAGE_CONNECTIONS = 200


def _garbage(rng: random.Random, port: int) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(rng.randrange(120))
    header = encode_v1(("203.0.113.1", 1), ("127.0.0.1", port)) if rng.random() < 0.5 else encode_v2(("203.0.113.1", 1))
    if kind == 1:  # a valid header, garbage after it
        return header + rng.randbytes(rng.randrange(60))
    data = bytearray(header + _frame({"ok": 1}))
    for _ in range(rng.randrange(1, 4)):  # a header with bytes flipped
        data[rng.randrange(len(header))] ^= rng.randrange(1, 256)
    if kind == 2:
        return bytes(data)
    if kind == 3:
        return header[: rng.randrange(len(header))]  # cut short, then EOF
    return b"PROXY " + rng.randbytes(rng.randrange(150))


async def _garbage_connection(port: int, data: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    writer.write_eof()
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        answer = b""
    while answer:  # whatever came back is whole frames of maps
        size = int.from_bytes(answer[:4], "big")
        assert answer[4] == 22 and isinstance(get_codec(answer[5]).decode(answer[6 : 4 + size]), dict)
        answer = answer[4 + size :]
    writer.close()


async def test_proxied_server_survives_garbage(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(12)
    async with running(_whoami_server()) as server:
        for _ in range(GARBAGE_CONNECTIONS // 25):
            await asyncio.gather(*(_garbage_connection(server.port, _garbage(rng, server.port)) for _ in range(25)))
        assert (await _ask(server.port, encode_v2(("203.0.113.3", 1))))["address"] == "203.0.113.3"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_cli_bad_proxy_settings_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from asyncapy.cli import main

    assert main(["run", "examples.typed_api:server", "--trusted-proxy", "10.0.0.0/8"]) == 2
    assert "needs proxy_protocol" in capsys.readouterr().err
    assert main(["run", "examples.typed_api:server", "--proxy-protocol", "--trusted-proxy", "nonsense"]) == 2
    assert "not an IP address" in capsys.readouterr().err
