"""``asyncapy.otel``: OpenTelemetry tracing, at the path the README documents (the code is ``asyncapy.ops.otel``)."""

from .ops.otel import (
    TracingMiddleware,
)

__all__ = [
    "TracingMiddleware",
]
