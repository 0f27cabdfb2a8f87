"""The pipeline's layers per request on AsyncAProto v2 (DESIGN §8): rate limits, PROXY,
the access log, tracing, background sends, EOF. Real sockets, raw v2 frames."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from asyncapy import Client, Packet
from asyncapy.app.filters import RateLimit
from asyncapy.otel import TracingMiddleware
from asyncapy.wire.protocol import PUSH, REPLY, SENT_BY_SERVER, FrameDecoder, V2Frame, encode_request

from ..conftest import make_server, running


class Ask(BaseModel):
    n: int
    sleep: float = 0


async def _v2_frames(reader: asyncio.StreamReader, count: int) -> list[V2Frame]:
    """Read ``count`` v2 frames (bounded: 10 s a read)."""
    decoder = FrameDecoder(kinds=SENT_BY_SERVER)
    frames: list[V2Frame] = []
    while len(frames) < count:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, f"the server closed after {len(frames)} frames"
        decoder.feed(data)
        while isinstance(event := decoder.next_event(), V2Frame):
            frames.append(event)
    return frames


def _request(sid: int, obj: Any) -> bytes:
    return encode_request(sid, json.dumps(obj).encode(), 0)


def _asker(**kwargs: Any) -> Any:
    server = make_server(**kwargs)

    @server.add_handler()
    async def ask(client: Client, packet: Packet[Ask]) -> dict[str, int]:
        if packet.data.sleep:
            await asyncio.sleep(packet.data.sleep)
        return {"n": packet.data.n}

    return server, ask


async def test_a_server_rate_limit_counts_each_v2_request() -> None:
    server, _ = _asker(rate_limit=RateLimit("3/minute"))
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"".join(_request(sid, {"n": sid, "sleep": 0.05}) for sid in range(1, 6)))
        frames = await _v2_frames(reader, 5)
        writer.close()
    answers = {f.stream_id: json.loads(f.payload) for f in frames}
    assert all(f.kind == REPLY for f in frames)
    assert [answers[sid] for sid in (1, 2, 3)] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [answers[sid]["error"] for sid in (4, 5)] == ["ERR_RATE_LIMITED"] * 2


async def test_a_v2_client_behind_a_proxy_is_served_as_the_client_it_names(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    server = make_server(proxy_protocol=True, trusted_proxies=["127.0.0.0/8"], access_log=str(path))
    seen: list[str] = []

    @server.add_handler()
    async def ask(client: Client, packet: Packet[Ask]) -> dict[str, int]:
        seen.append(client.address)
        return {"n": packet.data.n}

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 1500\r\n" + _request(1, {"n": 1}) + _request(2, {"n": 2}))
        frames = await _v2_frames(reader, 2)
        writer.close()
    assert sorted((f.stream_id, json.loads(f.payload)["n"]) for f in frames) == [(1, 1), (2, 2)]
    assert seen == ["203.0.113.7"] * 2
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all("203.0.113.7" in line for line in lines)


async def test_the_access_log_has_one_line_per_v2_request_with_its_outcome(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    server, ask = _asker(access_log=str(path))
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(_request(1, {"n": 1, "sleep": 0.05}) + _request(2, {"n": 2}) + _request(3, {"nope": 1}))
        await _v2_frames(reader, 3)
        writer.close()
    outcomes = sorted(tuple(line.split()[-3:-1]) for line in path.read_text().splitlines())
    assert outcomes == sorted([(ask.__qualname__, "OK"), (ask.__qualname__, "OK"), ("-", "ERR_NO_HANDLER")])


async def test_each_v2_request_is_a_span_of_its_own() -> None:
    provider = TracerProvider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    server, _ = _asker()
    server.middleware(TracingMiddleware(tracer_provider=provider))
    try:
        async with running(server):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"".join(_request(sid, {"n": sid, "sleep": 0.02}) for sid in range(1, 5)))
            await _v2_frames(reader, 4)
            writer.close()
        finished = spans.get_finished_spans()
        assert len(finished) == 4
        assert len({span.context.trace_id for span in finished}) == 4  # not nested in one another
    finally:
        provider.shutdown()


async def test_a_send_from_a_background_task_is_a_push_and_requests_go_on() -> None:
    server = make_server()
    tasks: set[asyncio.Task[None]] = set()

    @server.add_handler()
    async def subscribe(client: Client, packet: Packet[Ask]) -> dict[str, bool]:
        async def later() -> None:
            await asyncio.sleep(0.01)
            await client.send({"news": packet.data.n})

        task = asyncio.create_task(later())
        tasks.add(task)
        return {"subscribed": True}

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(_request(9, {"n": 7}))
        reply, push = await _v2_frames(reader, 2)
        writer.close()
    assert (reply.kind, reply.stream_id, json.loads(reply.payload)) == (REPLY, 9, {"subscribed": True})
    assert (push.kind, push.stream_id, json.loads(push.payload)) == (PUSH, 0, {"news": 7})


async def test_requests_sent_before_the_client_half_closes_are_all_answered() -> None:
    server, _ = _asker()
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"".join(_request(sid, {"n": sid, "sleep": 0.02 * (sid % 3)}) for sid in range(1, 11)))
        writer.write_eof()
        frames = await _v2_frames(reader, 10)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # then the server closes
        writer.close()
    assert sorted(f.stream_id for f in frames) == list(range(1, 11))
