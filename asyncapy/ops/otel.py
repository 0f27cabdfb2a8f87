"""OpenTelemetry tracing: ``server.middleware(TracingMiddleware())`` (the ``otel`` extra).

One span per packet, of kind SERVER, named after the handler(s) that ran (``person``;
``audit,person`` when two groups ran; ``asyncapy`` when none did), with attributes

- ``network.peer.address``, ``network.peer.port``: the peer
- ``asyncapy.handler``: the handler(s), ``-`` for none
- ``asyncapy.outcome``: ``OK`` or the error code the peer got (ERR_NO_HANDLER, an
  ``ApiError``'s code, ERR_INTERNAL, or a code an exception handler answered with)
- ``asyncapy.encoding``: ``json`` or ``ziproto``

An exception a handler raised is recorded on the span (``record_exception``), and the
span's status is ERROR when the outcome is ERR_INTERNAL or ERR_TIMED_OUT. The span is
the current one while the packet is routed, so spans the handlers start are its
children. It ends once the packet's replies are queued, the error reply included.

Only ``opentelemetry-api`` is needed; without an SDK configured, the API's no-op
tracer makes this nearly free. Pass ``tracer_provider=`` to use one other than the
global provider.
"""

from __future__ import annotations

from typing import Any, Final

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..wire.errors import StopPropagation
from ..app.middleware import CallNext
from .observe import handlers_of, when_reported
from ..model.packet import Packet
from ..model.peer import Client
from ..wire.version import __version__

__all__ = ["TracingMiddleware"]

#: The span's name while the packet is routed, and when no handler ran.
PACKET_SPAN: Final = "asyncapy"
#: Outcomes that are the server's failure (the others are the peer's, or the application's answer).
SERVER_ERRORS: Final = frozenset({"ERR_INTERNAL", "ERR_TIMED_OUT"})


class TracingMiddleware:
    """A middleware that traces every packet (see the module docstring).

    Example:
        from asyncapy.otel import TracingMiddleware

        server.middleware(TracingMiddleware())
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("asyncapy", __version__, tracer_provider=tracer_provider)
        self._noop = isinstance(self._tracer, trace.NoOpTracer)

    @property
    def needs_handler_names(self) -> bool:
        """The server observes packets when a middleware says so (``asyncapy.ops.observe``): that is
        how a span learns the handlers' names and the outcome code. Not for a no-op tracer."""
        return not self._noop

    async def __call__(self, client: Client, packet: Packet[Any], call_next: CallNext) -> None:
        if self._noop:  # a no-op provider was given: not even a span object
            await call_next()
            return
        span = self._tracer.start_span(
            PACKET_SPAN,
            kind=SpanKind.SERVER,
            attributes={
                "network.peer.address": client.address,
                "network.peer.port": client.port,
                "asyncapy.encoding": packet.encoding,
            },
        )
        if not span.get_span_context().is_valid:  # the no-op tracer's: nothing to record or propagate
            await call_next()
            return
        token = context.attach(trace.set_span_in_context(span))
        outcome = "OK"
        try:
            await call_next()
        except StopPropagation:
            raise
        except BaseException as exc:
            outcome = getattr(exc, "code", None) or "ERR_INTERNAL"  # an ApiError's, or the default
            if span.is_recording():
                span.record_exception(exc)
            raise
        finally:
            context.detach(token)
            if not span.is_recording():  # sampled out: it ends now, its context was propagated
                span.end()
            elif not when_reported(client, lambda handlers, code: _end(span, handlers, code)):
                _end(span, handlers_of(client) or "-", outcome)  # a connection that is not observed

    def __repr__(self) -> str:
        return "TracingMiddleware()"


def _end(span: trace.Span, handlers: str, outcome: str) -> None:
    if span.is_recording():
        if handlers != "-":
            span.update_name(handlers)
        span.set_attribute("asyncapy.handler", handlers)
        span.set_attribute("asyncapy.outcome", outcome)
        if outcome in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, outcome))
    span.end()
