"""Health probes (DESIGN §10): ``Server(health=True)`` answers ``{"asyncapy": "health"}`` itself.

The probe is recognised before anything else looks at the packet (routing, the
server's rate limit, filters, middleware): ``health_layer`` is the pipeline's outermost
packet layer, and is only there when ``health=True`` (a server without it
pays nothing). The answer, in the probe's encoding, is ``{"status": "SERVING"}``
while the server serves and ``{"status": "NOT_SERVING"}`` from the moment a graceful
stop begins, so that a balancer takes the instance out before it stops accepting
(``Server(drain=...)`` keeps it serving that long). ``asyncapy probe HOST:PORT`` asks
it from the command line; ``examples/deploy/haproxy.cfg`` from HAProxy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ..model.answers import answers_of
from ..model.packet import Packet
from ..model.peer import Client
from ..wire.codecs import CODEC_IDS, get_codec
from ..wire.protocol import Byteorder, encode_frame
from .exchange import Layer

__all__ = ["HEALTH_PACKET", "NOT_SERVING", "SERVING", "Health", "health_frame", "health_layer", "is_probe"]

#: The probe: a packet of its own, which no application route ever sees.
HEALTH_PACKET: Final = {"asyncapy": "health"}
SERVING: Final = "SERVING"
#: How the access log and the metrics name a probe's handler.
PROBE_NAME: Final = "asyncapy.serve.health"
NOT_SERVING: Final = "NOT_SERVING"


class Health:
    """Whether this server is serving: set when a serving run starts, cleared when a graceful stop begins."""

    __slots__ = ("serving",)

    def __init__(self) -> None:
        self.serving = False

    def reply(self) -> dict[str, str]:
        return {"status": SERVING if self.serving else NOT_SERVING}


def is_probe(payload: dict[str, Any]) -> bool:
    """True for the health packet (its ``"asyncapy"`` key says ``"health"``)."""
    return payload.get("asyncapy") == "health"


def health_layer(health: Health) -> Callable[[Layer], Layer]:
    """The outermost packet layer (``asyncapy.serve.pipeline``): the probe is answered here,
    before the rate limit, the middleware and routing see it."""

    def layer(inner: Layer) -> Layer:
        def probe(client: Client, packet: Packet[Any]) -> Any:
            if is_probe(packet.payload):  # type: ignore[arg-type]  # a received payload is a dict
                answers = answers_of(client)
                answers.note(PROBE_NAME)
                answers.reply(health.reply(), CODEC_IDS[packet.encoding])
                return None
            return inner(client, packet)

        return probe

    return layer


def health_frame(status: str | None = None, header_size: int = 4, byteorder: Byteorder = "big") -> bytes:
    """The probe (``status=None``) or its answer as one JSON frame: what a balancer sends and expects."""
    payload = HEALTH_PACKET if status is None else {"status": status}
    codec = get_codec("json")
    return encode_frame(codec.encode(payload), codec.id, header_size, byteorder)
