"""User-shaped code of the operating features that must type-check under ``mypy --strict``."""

from __future__ import annotations

from pathlib import Path

from opentelemetry import trace
from typing_extensions import assert_type

from asyncapy import Server
from asyncapy.ops.otel import TracingMiddleware

server = Server(port=0, logging_level=10, access_log=True, metrics_port=9100)
to_file = Server(port=0, access_log=Path("access.log"))
also_to_file = Server(port=0, access_log="access.log")
tracing = server.middleware(TracingMiddleware())
assert_type(tracing, TracingMiddleware)
server.middleware(TracingMiddleware(tracer_provider=trace.NoOpTracerProvider()))
assert_type(server.metrics_port, "int | None")
