"""The cases of AsyncAPY's own test suite (``tests/tests_asyncapy.py`` of AsyncAPY), run the
way it runs them: a blocking socket client that writes AsyncAProto v1 frames by hand and
reads replies as AsyncAPY's ``defaultclient.receive_all`` does, against an asyncapy echo
server with AsyncAPY's exact error replies (``error_details=False``). v2 must not change
a byte of what such a client sees (DESIGN §8).

Where AsyncAPY's suite and DESIGN §1 disagree (it expected ERR_REQUEST_MALFORMED for
Protocol-Version 11; §1 makes an unknown version ERR_HEADER_INVALID, which AsyncAPY 0.5
sends) §1 wins, and the case says so. Its timeout case read from a closed socket and
asserted on an unbound name; here it checks what AsyncAPY's server did: the error reply,
then the close.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

from asyncapy import Client, Packet
from asyncapy.wire.codecs import get_codec

from .conftest import make_server, running

HEADER_SIZE = 4


def echo_server(**kwargs: Any) -> Any:
    server = make_server(error_details=False, **kwargs)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    return server


def v1_frame(payload: bytes, encoding: int = 0, version: int = 22) -> bytes:
    return (len(payload) + 2).to_bytes(HEADER_SIZE, "big") + bytes((version, encoding)) + payload


def receive_all(sock: socket.socket) -> bytes:
    """One whole packet, header included, read as AsyncAPY's client reads it (bounded: 10 s)."""
    data = b""
    sock.settimeout(10)
    while len(data) < HEADER_SIZE or len(data) - HEADER_SIZE < int.from_bytes(data[:HEADER_SIZE], "big"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def headers_case(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(v1_frame(json.dumps({"test": 1}).encode()))
        response = receive_all(sock)
    assert json.loads(response[6:]) == {"test": 1}
    assert int.from_bytes(response[:4], "big") == len(response) - 4
    assert response[4] == 22 and response[5] == 0


def encodings_case(port: int) -> None:
    payload = {"req": "test_payload"}
    with _connect(port) as sock:
        sock.sendall(v1_frame(json.dumps(payload).encode(), 0))
        assert json.loads(receive_all(sock)[6:]) == payload
    with _connect(port) as sock:
        sock.sendall(v1_frame(get_codec("ziproto").encode(payload), 1))
        response = receive_all(sock)
        assert response[5] == 1 and get_codec("ziproto").decode(response[6:]) == payload


def header_rebuilding_case(port: int) -> None:
    payload = json.dumps({"req": "test_payload"}).encode()
    with _connect(port) as sock:
        for byte in v1_frame(payload):  # one byte per send, as AsyncAPY's case does (faster here)
            sock.send(bytes((byte,)))
            time.sleep(0.005)
        assert json.loads(receive_all(sock)[6:]) == json.loads(payload)


def invalid_version_case(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(v1_frame(json.dumps({"req": "test_payload"}).encode(), version=11))
        response = receive_all(sock)
    assert response[4] == 22  # answered in v1, whatever version was asked
    assert json.loads(response[6:]) == {"status": "failure", "error": "ERR_HEADER_INVALID"}  # §1 (AsyncAPY 0.5)


def wrong_encoding_header_case(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(v1_frame(json.dumps({"req": "test_payload"}).encode(), encoding=1))  # JSON sent as ZiProto
        response = receive_all(sock)
    assert response[5] == 1  # the reply speaks the encoding the frame declared
    assert get_codec("ziproto").decode(response[6:]) == {"status": "failure", "error": "ERR_REQUEST_MALFORMED"}


def timeout_case(port: int) -> None:
    with _connect(port) as sock:
        response = receive_all(sock)  # sends nothing: the server times it out
        assert json.loads(response[6:]) == {"status": "failure", "error": "ERR_TIMED_OUT"}
        assert sock.recv(1024) == b""  # then closes


async def test_asyncapy_suite_cases_pass_against_an_asyncapy_server() -> None:
    server = echo_server(timeout=0.5)
    async with running(server):
        for case in (headers_case, encodings_case, header_rebuilding_case, invalid_version_case,
                     wrong_encoding_header_case, timeout_case):  # fmt: skip
            await asyncio.to_thread(case, server.port)
