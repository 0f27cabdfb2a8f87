"""``benchmarks/loadgen.c`` against toy servers: it parses replies however they are cut."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from asyncapy.wire.protocol import encode_frame, encode_reply, encode_v2

from .procs import ROOT, free_port, server_process

Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The load generator, built from its source as ``benchmarks/run.py`` builds it."""
    if shutil.which("cc") is None:
        pytest.fail("no C compiler: install one (apt-get install gcc, or scripts/test installs it)")
    out = tmp_path_factory.mktemp("loadgen") / "loadgen"
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(out), str(ROOT / "benchmarks" / "loadgen.c")], check=True)
    return out


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], int]]:
    """Start an asyncio server in a thread on a free port, answering each connection with ``reply``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: list[asyncio.Server] = []

    def start(reply: Reply) -> int:
        server = asyncio.run_coroutine_threadsafe(asyncio.start_server(reply, "127.0.0.1", 0), loop).result(10)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start

    async def shut() -> None:
        """Close the servers and end every connection's task (one accepted last included)."""
        for server in servers:
            server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(shut(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    length = int.from_bytes(await reader.readexactly(4), "big")
    return await reader.readexactly(length)


def echo(cut: Callable[[bytes], list[bytes]], batch: int = 1, close: bool = False, version: int = 22) -> Reply:
    """Echo each request's payload, ``batch`` replies joined, written in the pieces ``cut`` makes."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                frames = []
                for _ in range(batch):
                    rest = await read_request(reader)
                    frame = bytearray(encode_frame(rest[2:], rest[1]))
                    frame[4] = version
                    frames.append(bytes(frame))
                for piece in cut(b"".join(frames)):
                    writer.write(piece)
                    await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return reply


def run(loadgen: Path, port: int, *args: str) -> dict[str, str]:
    out = subprocess.run([str(loadgen), "--port", str(port), *args], capture_output=True, text=True, timeout=60)
    pairs = dict(pair.split("=", 1) for pair in out.stdout.split())
    pairs["exit"] = str(out.returncode)
    return pairs


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize("cut", [whole, bytewise], ids=["whole", "one byte per write"])
def test_counts_every_reply_however_it_is_cut(loadgen: Path, serve: Callable[[Reply], int], cut: Callable[[bytes], list[bytes]]) -> None:
    port = serve(echo(cut))
    stats = run(loadgen, port, "--conns", "4", "--requests", "400", "--expect", '"test"')
    assert stats["exit"] == "0" and stats["errors"] == "0" and int(stats["requests"]) >= 400, stats
    assert float(stats["p50_us"]) > 0 and float(stats["p99_us"]) >= float(stats["p50_us"])


def test_several_replies_in_one_read_with_depth(loadgen: Path, serve: Callable[[Reply], int]) -> None:
    port = serve(echo(whole, batch=4))
    stats = run(loadgen, port, "--conns", "3", "--depth", "4", "--requests", "400")
    assert stats["errors"] == "0" and int(stats["requests"]) >= 400, stats


def test_a_bad_protocol_version_is_an_error(loadgen: Path, serve: Callable[[Reply], int]) -> None:
    port = serve(echo(whole, version=23))
    stats = run(loadgen, port, "--conns", "2", "--requests", "10")
    assert stats["exit"] == "1" and stats["requests"] == "0" and int(stats["errors"]) >= 10, stats


def test_a_reply_without_the_expected_text_is_an_error(loadgen: Path, serve: Callable[[Reply], int]) -> None:
    port = serve(echo(whole))
    stats = run(loadgen, port, "--conns", "2", "--requests", "10", "--expect", '"status"')
    assert stats["requests"] == "0" and int(stats["errors"]) >= 10, stats


def test_reconnect_mode_and_a_server_that_closes_after_each_reply(loadgen: Path, serve: Callable[[Reply], int]) -> None:
    port = serve(echo(whole, close=True))
    stats = run(loadgen, port, "--conns", "4", "--requests", "200", "--reconnect")
    assert stats["errors"] == "0" and int(stats["requests"]) >= 200 and int(stats["connects"]) >= 200, stats
    persistent = run(loadgen, port, "--conns", "2", "--requests", "50")  # no --reconnect: closes are counted
    assert int(persistent["peer_closes"]) > 0, persistent


def test_duration_mode_stops_by_itself(loadgen: Path, serve: Callable[[Reply], int]) -> None:
    port = serve(echo(whole))
    stats = run(loadgen, port, "--conns", "5", "--duration", "0.5")
    assert 0.45 <= float(stats["seconds"]) <= 0.6 and int(stats["requests"]) > 0, stats


def test_no_server_gives_up(loadgen: Path) -> None:
    stats = run(loadgen, free_port(), "--duration", "30", "--conns", "2")
    assert stats["exit"] == "1" and stats["no_server"] == "1", stats


# -- v2 (--v2): REQUEST frames on Stream-Ids 1..depth, REPLYs matched by Stream-Id -----------


async def read_v2_request(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """(Stream-Id, Deadline-Ms, payload) of one REQUEST; anything else fails the toy server."""
    body = await read_request(reader)
    assert body[0] == 23 and body[2] == 0, body[:11]  # Protocol-Version 23, Kind REQUEST
    return int.from_bytes(body[3:7], "big"), int.from_bytes(body[7:11], "big"), body[11:]


def echo_v2(cut: Callable[[bytes], list[bytes]], batch: int = 1, frame: Callable[[int, bytes], bytes] | None = None) -> Reply:
    """Answer each ``batch`` of REQUESTs in reverse order (``frame(sid, payload)`` makes each reply)."""
    make = frame or (lambda sid, payload: encode_reply(sid, payload, 0))
    seen: list[int] = []  # Deadline-Ms of every request, for the test to check

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                got = [await read_v2_request(reader) for _ in range(batch)]
                seen.extend(deadline for _, deadline, _ in got)
                frames = [make(sid, payload) for sid, _, payload in reversed(got)]
                for piece in cut(b"".join(frames)):
                    writer.write(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    reply.seen = seen  # type: ignore[attr-defined]
    return reply


@pytest.mark.parametrize("cut", [whole, bytewise], ids=["whole", "one byte per write"])
def test_v2_replies_out_of_order_however_they_are_cut(loadgen: Path, serve: Callable[[Reply], int], cut: Callable[[bytes], list[bytes]]) -> None:
    """Eight requests in flight per connection, answered last first: each matched by its Stream-Id."""
    port = serve(echo_v2(cut, batch=8))
    stats = run(loadgen, port, "--v2", "--conns", "3", "--depth", "8", "--requests", "400", "--expect", '"test"')
    assert stats["exit"] == "0" and stats["errors"] == "0" and int(stats["requests"]) >= 400, stats
    assert stats["v2"] == "1" and stats["depth"] == "8" and stats["peer_closes"] == "0", stats
    assert float(stats["p50_us"]) > 0 and float(stats["p99_us"]) >= float(stats["p50_us"])


def test_v2_requests_carry_the_deadline(loadgen: Path, serve: Callable[[Reply], int]) -> None:
    reply = echo_v2(whole)
    port = serve(reply)
    stats = run(loadgen, port, "--v2", "--deadline-ms", "1500", "--conns", "2", "--requests", "20")
    assert stats["errors"] == "0" and int(stats["requests"]) >= 20, stats
    seen: list[int] = reply.seen  # type: ignore[attr-defined]
    assert len(seen) >= 20 and set(seen) == {1500}, seen


@pytest.mark.parametrize(
    "frame",
    [
        lambda sid, payload: encode_v2(2, sid, payload, 0),  # an ITEM, not a REPLY
        lambda sid, payload: encode_reply(sid + 100, payload, 0),  # a Stream-Id never sent
        lambda sid, payload: encode_reply(0, payload, 0),  # an error of the connection
        lambda sid, payload: encode_frame(payload, 0),  # a v1 frame
        lambda sid, payload: encode_v2(1, sid, payload, 0, deadline_ms=5),  # Deadline-Ms on a REPLY
    ],
    ids=["item", "unknown stream", "stream 0", "v1 frame", "deadline on reply"],
)
def test_v2_a_reply_it_cannot_match_is_an_error(loadgen: Path, serve: Callable[[Reply], int], frame: Callable[[int, bytes], bytes]) -> None:
    port = serve(echo_v2(whole, frame=frame))
    stats = run(loadgen, port, "--v2", "--conns", "2", "--depth", "2", "--requests", "10")
    assert stats["exit"] == "1" and stats["requests"] == "0" and int(stats["errors"]) >= 10, stats


def test_v2_a_stream_id_answered_twice_is_an_error(loadgen: Path, serve: Callable[[Reply], int]) -> None:
    """The second REPLY on a Stream-Id no longer in flight (depth 1: nothing else was sent)."""
    port = serve(echo_v2(whole, frame=lambda sid, payload: encode_reply(sid, payload, 0) * 2))
    stats = run(loadgen, port, "--v2", "--conns", "2", "--requests", "10")
    assert int(stats["errors"]) >= 2, stats


def test_v2_against_an_asyncapy_server(loadgen: Path) -> None:
    """The benchmark's typed server answers 50 x 8 in flight on v2, and v1 pipelined on the same process."""
    port = free_port()
    with server_process([str(ROOT / "benchmarks" / "servers.py"), "typed-test", str(port)], port):
        v2 = run(loadgen, port, "--v2", "--conns", "10", "--depth", "8", "--requests", "2000", "--expect", '"test"')
        v1 = run(loadgen, port, "--conns", "10", "--depth", "8", "--requests", "2000", "--expect", '"test"')
        with_deadline = run(loadgen, port, "--v2", "--deadline-ms", "60000", "--conns", "2", "--requests", "50", "--expect", '"test"')
    for stats in (v2, v1, with_deadline):
        assert stats["exit"] == "0" and stats["errors"] == "0" and int(stats["requests"]) >= 50, stats
    assert int(v2["requests"]) >= 2000 and v2["v2"] == "1" and "v2" not in v1, (v2, v1)
