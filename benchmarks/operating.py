"""The typed benchmark server with one operating feature on (``servers.py typed-FEATURE PORT``).

FEATURE: ``access`` (access log to a file in the temp directory), ``metrics``
(Prometheus counters, ``/metrics`` on a free port), ``middleware`` (one that only calls
``call_next``: what the tracing rows pay for the middleware layer itself), ``otel-noop`` (``TracingMiddleware``
on OpenTelemetry's default no-op tracer provider), ``otel-sdk`` (the SDK's tracer
provider with an in-memory exporter behind a simple span processor).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

from asyncapy import Server


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

    from asyncapy.otel import TracingMiddleware

    provider: Any = trace.NoOpTracerProvider()
    if feature == "otel-sdk":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        server.bench_exporter = exporter  # type: ignore[attr-defined]  # kept alive with the server
    server.middleware(TracingMiddleware(tracer_provider=provider))  # type: ignore[attr-defined]
    return server
