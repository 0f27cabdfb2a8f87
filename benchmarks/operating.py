"""The typed benchmark server with one operating feature on (``servers.py typed-FEATURE PORT``).

FEATURE: ``access`` (access log to a file in the temp directory), ``metrics``
(Prometheus counters, ``/metrics`` on a free port), ``middleware`` (one that only calls
``call_next``: what the tracing rows pay for the middleware layer itself), ``otel-noop`` (``TracingMiddleware``
on OpenTelemetry's default no-op tracer provider), ``otel-sdk`` (the SDK's tracer
provider with an in-memory exporter behind a simple span processor).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from typing import Any

from asyncapy import Server


#: The in-memory exporters made here (``bench_operating.py`` clears them between runs).
EXPORTERS: list[Any] = []


def operating_server(feature: str, make: Callable[..., Server], **kw: Any) -> Server:
    if feature == "access":
        path = os.path.join(tempfile.gettempdir(), f"asyncapy-bench-access-{os.getpid()}.log")
        return make(access_log=path, **kw)
    if feature == "metrics":
        return make(metrics_port=0, **kw)
    if feature == "middleware":  # what any middleware costs (the application layer's), for reference
        server = make(**kw)
        server.middleware(_pass_through)  # type: ignore[attr-defined]
        return server
    if feature.startswith("otel-"):
        return _traced(feature, make(**kw))
    raise SystemExit(f"unknown feature {feature!r}")


async def _pass_through(client: Any, packet: Any, call_next: Any) -> None:
    await call_next()


def _traced(feature: str, server: Server) -> Server:
    from opentelemetry import trace

    from asyncapy.ops.otel import TracingMiddleware

    provider: Any = trace.NoOpTracerProvider()
    if feature == "otel-sdk":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        setup = server.setup

        async def setup_and_drain() -> None:
            # Drop the finished spans every second, as an exporter would send them: a list of
            # hundreds of thousands of spans would make every garbage collection slower.
            await setup()
            loop = asyncio.get_running_loop()

            def drain() -> None:
                exporter.clear()
                loop.call_later(1.0, drain)

            drain()

        server.setup = setup_and_drain  # type: ignore[method-assign]
        EXPORTERS.append(exporter)
    server.middleware(TracingMiddleware(tracer_provider=provider))  # type: ignore[attr-defined]
    return server
