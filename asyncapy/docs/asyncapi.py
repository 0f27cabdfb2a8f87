"""An AsyncAPI 3.0.0 document of a server (``server.asyncapi()``).

One server, one channel (an AsyncAProto connection carries every message both ways),
one ``receive`` operation per route, with a ``reply`` when the handler declares a
reply type; each topic (``server.topic``) is a channel of its own with a ``send``
operation carrying its event model (``x-asyncapy-topic``); and a ``security`` list when an ``asyncapy.security`` scheme guards it (the
schemes are in ``components/securitySchemes``). Groups, styles and filters go in ``x-asyncapy-*`` fields. Schemas come
from ``asyncapy.docs.schema`` with their refs pointed at ``components/schemas``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pydantic import TypeAdapter

from ..shared.topics import Topic
from ..wire.codecs import CODECS
from ..wire.errors import ERR_SLOW_CONSUMER, ERROR_CODES
from ..wire.protocol import PROTOCOL_VERSION
from .schema import RouteSchema, describe_routes

ASYNCAPI_VERSION = "3.0.0"
CHANNEL = "connection"
SERVER = "main"
COMPONENT_REF = "#/components/schemas/{model}"
ERROR_MESSAGE = "error"
# JSON Schema keywords whose value maps names to schemas: their keys are not keywords.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
# Keywords whose value is data, never a schema.
_DATA = frozenset({"const", "default", "enum", "examples", "example"})


class Endpoint(Protocol):
    """What the document tells of the server: where it listens and how it frames packets.

    ``asyncapy.Server`` is one; this layer never imports it (it sits above).
    """

    @property
    def addr(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def ssl(self) -> object: ...

    @property
    def header_size(self) -> int: ...

    @property
    def byteorder(self) -> str: ...

    @property
    def max_packet_size(self) -> int: ...


def asyncapi_document(
    server: Endpoint,
    routes: Sequence[Any],
    *,
    title: str,
    version: str,
    description: str | None = None,
    topics: Mapping[str, Topic[Any]] | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``server`` whose compiled routes are ``routes`` (and its ``topics``)."""
    described, defs = describe_routes(routes, COMPONENT_REF)
    ids = operation_ids([route.handler for route in described])
    declared = sorted({code for route in described for code in route.errors} | ({ERR_SLOW_CONSUMER} if topics else set()))
    messages: dict[str, Any] = {ERROR_MESSAGE: _error_message(declared)}
    operations: dict[str, Any] = {}
    schemes: dict[str, Any] = {}
    for route, described_route, op_id in zip(routes, described, ids):
        messages.update(_messages(described_route, op_id))
        operations[op_id] = _operation(described_route, op_id, _summary(route))
        if described_route.security:
            names = [_scheme_key(entry, schemes) for entry in described_route.security]
            operations[op_id]["security"] = [{"$ref": f"#/components/securitySchemes/{name}"} for name in names]
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    channels = {CHANNEL: _channel(messages)}
    if topics:
        _add_topics(list(topics.values()), set(operations), channels, operations, messages, defs)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": info,
        "defaultContentType": "application/json",
        "servers": {SERVER: _server(server)},
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {name: asyncapi_schema(schema) for name, schema in defs.items()},
            "messages": messages,
            **({"securitySchemes": schemes} if schemes else {}),
        },
    }


def _add_topics(
    topics: Sequence[Topic[Any]],
    taken: set[str],
    channels: dict[str, Any],
    operations: dict[str, Any],
    messages: dict[str, Any],
    defs: dict[str, Any],
) -> None:
    """A channel, a ``send`` operation and an event message per topic; their models join ``defs``."""
    inputs = [(topic.name, "serialization", TypeAdapter(topic.model)) for topic in topics]
    by_key, top = TypeAdapter.json_schemas(inputs, ref_template=COMPONENT_REF)  # type: ignore[arg-type]
    for name, schema in top.get("$defs", {}).items():
        defs.setdefault(name, schema)
    for topic in topics:
        key = _topic_key(topic.name, taken)
        message = f"{key}.event"
        messages[message] = {
            "name": message,
            "title": f"An event of topic {topic.name}",
            "payload": asyncapi_schema(by_key[(topic.name, "serialization")]),
        }
        channels[key] = {
            "address": topic.name,
            "title": f"Topic {topic.name}",
            "description": (
                "Events the server publishes; a handler that subscribes forwards them on its connection. "
                f"A subscriber more than {topic.max_buffered} events behind ends with {ERR_SLOW_CONSUMER}."
            ),
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        }
        operations[key] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{key}"},
            "title": f"topic {topic.name}",
            "messages": [{"$ref": f"#/channels/{key}/messages/{message}"}],
            "x-asyncapy-topic": topic.name,
            "x-asyncapy-max-buffered": topic.max_buffered,
        }


def _topic_key(name: str, taken: set[str]) -> str:
    """A channel and operation key for topic ``name`` (``[A-Za-z0-9_-]``), unlike any in ``taken``."""
    base = "topic_" + re.sub(r"[^A-Za-z0-9_\-]+", "_", name)
    key, n = base, 1
    while key in taken or key == CHANNEL:
        n += 1
        key = f"{base}_{n}"
    taken.add(key)
    return key


def _scheme_key(entry: dict[str, Any], schemes: dict[str, Any]) -> str:
    """The key of a security scheme under ``components/securitySchemes`` (added there if new).

    Schemes are told apart by what they say: two with one name but different objects get
    ``name_2``, ``name_3``...
    """
    base = re.sub(r"[^A-Za-z0-9_.\-]+", "_", entry["name"]) or "scheme"
    key, n = base, 1
    while key in schemes and schemes[key] != entry["scheme"]:
        n += 1
        key = f"{base}_{n}"
    schemes[key] = entry["scheme"]
    return key


def asyncapi_schema(schema: Any, names: bool = False) -> Any:
    """``schema`` with pydantic's OpenAPI-style discriminators written AsyncAPI's way.

    pydantic emits ``discriminator: {propertyName, mapping}``; an AsyncAPI Schema
    Object wants the property name itself.
    """
    if isinstance(schema, list):
        return [asyncapi_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if names:
        return {name: asyncapi_schema(sub) for name, sub in schema.items()}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "discriminator" and isinstance(value, dict):
            out[key] = value["propertyName"]
        elif key in _DATA:
            out[key] = value
        else:
            out[key] = asyncapi_schema(value, names=key in _SCHEMA_MAPS)
    return out


def operation_ids(handlers: Sequence[str]) -> list[str]:
    """Unique operation ids made of ``[A-Za-z0-9_-]`` from handler qualnames."""
    ids: list[str] = []
    seen: set[str] = set()
    for name in handlers:
        base = re.sub(r"[^A-Za-z0-9_\-]+", "_", name.replace("<locals>", "locals")).strip("_") or "handler"
        op_id, n = base, 1
        while op_id in seen:
            n += 1
            op_id = f"{base}_{n}"
        seen.add(op_id)
        ids.append(op_id)
    return ids


def _server(server: Endpoint) -> dict[str, Any]:
    return {
        "host": f"{server.addr}:{server.port}",
        "protocol": "asyncaproto",
        "description": (
            "AsyncAProto over TCP"
            + (" with TLS" if server.ssl else "")
            + ": each packet is a Content-Length header, the Protocol-Version byte, the"
            " Content-Encoding byte and one JSON or ZiProto (MessagePack) encoded map."
        ),
        "x-asyncapy-framing": {
            "headerSize": server.header_size,
            "byteorder": server.byteorder,
            "protocolVersion": PROTOCOL_VERSION,
            "encodings": {codec.name: codec_id for codec_id, codec in sorted(CODECS.items())},
            "maxPacketSize": server.max_packet_size,
        },
    }


def _channel(messages: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": "An AsyncAProto connection",
        "description": "Requests and their replies travel on the same connection, in order.",
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
    }


def _messages(route: RouteSchema, op_id: str) -> dict[str, Any]:
    found = {
        f"{op_id}.request": {
            "name": f"{op_id}.request",
            "title": f"A packet {route.handler} accepts",
            "payload": asyncapi_schema(route.accepts),
        }
    }
    if route.reply is not None:
        found[f"{op_id}.reply"] = {
            "name": f"{op_id}.reply",
            "title": f"An item of the stream of {route.handler}" if route.stream else f"The reply of {route.handler}",
            "payload": asyncapi_schema(route.reply),
        }
    return found


def _operation(route: RouteSchema, op_id: str, summary: str | None) -> dict[str, Any]:
    channel = {"$ref": f"#/channels/{CHANNEL}"}
    operation: dict[str, Any] = {
        "action": "receive",
        "channel": channel,
        "title": route.handler,
        "messages": [{"$ref": f"#/channels/{CHANNEL}/messages/{op_id}.request"}],
        "x-asyncapy-handler": route.handler,
        "x-asyncapy-group": route.group,
        "x-asyncapy-style": route.style,
        "x-asyncapy-filters": route.filters,
        "x-asyncapy-errors": route.errors,
    }
    if summary:
        operation["summary"] = summary
    if route.stream:  # the reply is each item of a stream (ITEMs then END on v2; packets on v1)
        operation["x-asyncapy-stream"] = True
    if route.reply is not None:
        operation["reply"] = {
            "channel": channel,
            "messages": [{"$ref": f"#/channels/{CHANNEL}/messages/{op_id}.reply"}],
        }
    return operation


def _error_message(declared: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "name": ERROR_MESSAGE,
        "title": "An error reply",
        "summary": "Sent instead of a reply when a packet is rejected (AsyncAProto's docs/protocol.md lists each code).",
        "payload": {
            "type": "object",
            "required": ["status", "error"],
            "properties": {
                "status": {"const": "failure"},
                "error": {"type": "string", "enum": sorted(ERROR_CODES | set(declared))},
                "detail": {},
            },
        },
    }


def _summary(route: Any) -> str | None:
    doc = inspect.getdoc(route.handler)
    return doc.strip().splitlines()[0] if doc else None
