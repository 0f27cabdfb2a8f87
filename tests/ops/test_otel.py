"""``TracingMiddleware``: one span per packet, with the SDK's in-memory exporter, over real sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from asyncapy import ApiError, Client, Packet, Server
from asyncapy.client import AsyncClient
from asyncapy.ops.otel import TracingMiddleware
from asyncapy.testing import AsyncTestClient

from ..conftest import make_server, running


class Person(BaseModel):
    name: str


class Reply(BaseModel):
    hello: str


@pytest.fixture
def exporter() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider = TracerProvider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider, spans
    provider.shutdown()


def traced_server(provider: TracerProvider, **kwargs: object) -> Server:
    server = make_server(**kwargs)
    server.middleware(TracingMiddleware(tracer_provider=provider))
    inner = provider.get_tracer("shop")

    @server.add_handler(lambda client, packet: "audit" in packet, group=-1)
    async def audit(client: Client, packet: Packet) -> None:
        pass

    @server.add_handler(errors=["ERR_NOT_FOUND"])  # declared: its own outcome label (else "other")
    async def person(client: Client, packet: Packet[Person]) -> Reply:
        name = packet.data.name
        if name == "boom":
            raise RuntimeError("on purpose")
        if name == "anon":
            raise ApiError("ERR_UNAUTHORIZED", "log in first")
        if name == "missing":
            raise KeyError(name)
        with inner.start_as_current_span("lookup"):
            return Reply(hello=name)

    @server.exception_handler(KeyError)
    async def not_found(client: Client, packet: Packet, exc: KeyError) -> dict[str, str]:
        return {"status": "failure", "error": "ERR_NOT_FOUND", "detail": str(exc)}

    return server


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


async def test_one_span_per_packet(exporter: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, spans = exporter
    server = traced_server(provider)
    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert await client.request({"name": "ada"}) == {"hello": "ada"}
            assert (await client.request({"name": "boom"}))["error"] == "ERR_INTERNAL"
            assert (await client.request({"name": "anon"}))["error"] == "ERR_UNAUTHORIZED"
            assert (await client.request({"name": "missing"}))["error"] == "ERR_NOT_FOUND"
            assert (await client.request({"nobody": 1}))["error"] == "ERR_NO_HANDLER"
            assert await client.request({"name": "bo", "audit": 1}) == {"hello": "bo"}
    packets = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(packets) == 6
    outcomes = [(s.name, s.attributes["asyncapy.handler"], s.attributes["asyncapy.outcome"]) for s in packets]  # type: ignore[index]
    person = traced_name(server, "person")
    audit = traced_name(server, "audit")
    assert outcomes == [
        (person, person, "OK"),
        (person, person, "ERR_INTERNAL"),
        (person, person, "ERR_UNAUTHORIZED"),
        (person, person, "ERR_NOT_FOUND"),
        ("asyncapy", "-", "ERR_NO_HANDLER"),
        (f"{audit},{person}", f"{audit},{person}", "OK"),
    ]
    for span in packets:
        assert span.attributes is not None
        assert span.attributes["network.peer.address"] == "127.0.0.1"
        assert isinstance(span.attributes["network.peer.port"], int)
    ok, failed, unauthorized = packets[0], packets[1], packets[2]
    assert ok.status.status_code is StatusCode.UNSET and not ok.events
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]
    assert failed.events[0].attributes is not None
    assert failed.events[0].attributes["exception.type"] == "RuntimeError"
    assert unauthorized.status.status_code is StatusCode.UNSET  # the application's answer, not a failure
    # The handler's own span is a child of the packet's.
    (lookup,) = by_name(spans.get_finished_spans())["lookup"][:1]
    assert lookup.parent is not None and ok.context is not None
    assert lookup.parent.span_id == ok.context.span_id and lookup.context is not None
    assert lookup.context.trace_id == ok.context.trace_id


def traced_name(server: Server, short: str) -> str:
    """A handler's name as routes know it (its qualified name)."""
    return next(route.name for route in server.compile().routes if route.name.endswith(short))


async def test_no_op_provider_is_not_observed() -> None:
    server = make_server()
    server.middleware(TracingMiddleware(tracer_provider=trace.NoOpTracerProvider()))

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert await client.request({"a": 1}) == {"a": 1}
        assert server._ctx is not None and server._ctx.pipeline.observer is None  # nothing to name: not observed


async def test_without_an_observed_connection(exporter: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    """Under the in-memory TestClient the span ends in the middleware, with what it saw."""
    provider, spans = exporter
    server = traced_server(provider)
    async with AsyncTestClient(server) as client:
        assert await client.request({"name": "ada"}) == {"hello": "ada"}
        assert (await client.request({"name": "anon"}))["error"] == "ERR_UNAUTHORIZED"
    packets = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert [s.attributes["asyncapy.outcome"] for s in packets] == ["OK", "ERR_UNAUTHORIZED"]  # type: ignore[index]


async def test_access_log_sees_the_application_layer(tmp_path: Path) -> None:
    """With middleware, ApiError and exception handlers, the outcome is what the peer got."""
    path = tmp_path / "access.log"
    provider = TracerProvider()
    server = traced_server(provider, access_log=str(path))
    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            for name in ("ada", "boom", "anon", "missing"):
                await client.request({"name": name})
            await client.request({"nobody": 1})
    outcomes = [line.split()[-2] for line in path.read_text().splitlines()]
    assert outcomes == ["OK", "ERR_INTERNAL", "ERR_UNAUTHORIZED", "ERR_NOT_FOUND", "ERR_NO_HANDLER"]
