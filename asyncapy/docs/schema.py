"""JSON Schema of what a server accepts and replies, route by route (``server.schema()``).

Read from the compiled plan, so the schema lists routes in the order dispatch tries
them. Models shared by several routes are emitted once, in ``$defs``. A handler's
dependencies never appear, except authentication (``asyncapy.security``): only what the
packet must be (the model, the filters, a scheme's credential field), the reply, the
``ApiError`` codes the route declares (``errors``) and its security schemes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode

DEFS_REF = "#/$defs/{model}"
ANY_MAP: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class RouteSchema:
    """One route, described: the schema of its packets and of its reply."""

    handler: str
    group: int
    style: str
    filters: list[dict[str, Any]]
    accepts: dict[str, Any]
    reply: dict[str, Any] | None
    #: The ``ApiError`` codes the route declares (``add_handler(errors=[...])``).
    errors: list[str] = field(default_factory=list)
    #: The ``asyncapy.security`` schemes guarding it: ``{"name", "scheme"}`` (an AsyncAPI Security Scheme Object).
    security: list[dict[str, Any]] = field(default_factory=list)
    #: A streaming handler: ``reply`` is the schema of each item it yields (DESIGN §9).
    stream: bool = False

    def as_dict(self) -> dict[str, Any]:
        streamed = {"stream": True} if self.stream else {}
        return {
            "handler": self.handler,
            "group": self.group,
            "style": self.style,
            "filters": self.filters,
            "accepts": self.accepts,
            "reply": self.reply,
            "errors": self.errors,
            "security": self.security,
            **streamed,
        }


def schema_document(routes: Sequence[Any], topics: Sequence[Any] = ()) -> dict[str, Any]:
    """``{"routes": [...], "topics": [...], "$defs": {...}}``; every ``$ref`` points into ``$defs``.

    ``topics`` (DESIGN §9): what the server publishes, each ``{"name", "event",
    "max_buffered"}``, ``event`` the schema of its events; the key is left out when there are none.
    """
    described, defs = describe_routes(routes, DEFS_REF)
    document: dict[str, Any] = {"routes": [route.as_dict() for route in described]}
    if topics:
        events, topic_defs = _event_schemas(topics, DEFS_REF)
        defs = {**defs, **topic_defs}
        document["topics"] = [
            {"name": topic.name, "event": events[topic.name], "max_buffered": topic.max_buffered} for topic in topics
        ]
    document["$defs"] = defs
    return document


def _event_schemas(topics: Sequence[Any], ref_template: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The schema of each topic's events, sharing definitions as routes' models do."""
    inputs: list[tuple[str, JsonSchemaMode, TypeAdapter[Any]]] = [
        (topic.name, "serialization", TypeAdapter(topic.model)) for topic in topics
    ]
    by_key, top = TypeAdapter.json_schemas(inputs, ref_template=ref_template)
    return {name: schema for (name, _mode), schema in by_key.items()}, dict(top.get("$defs", {}))


def describe_routes(routes: Sequence[Any], ref_template: str) -> tuple[list[RouteSchema], dict[str, Any]]:
    """Every route's ``RouteSchema`` and the shared definitions they refer to."""
    schemas, defs = _type_schemas(routes, ref_template)
    described = []
    for index, route in enumerate(routes):
        filters = [describe_filter(flt) for flt in route.filters]
        schemes = getattr(route, "security", ())
        required = [flt["schema"] for flt in filters] + [scheme.json_schema() for scheme in schemes]
        accepts = _with_filters(schemas.get((index, "accepts"), ANY_MAP), required)
        described.append(
            RouteSchema(
                handler=route.name,
                group=route.group,
                style=str(route.style),
                filters=filters,
                accepts=accepts,
                reply=schemas.get((index, "reply")),
                errors=list(getattr(route, "errors", ())),
                security=[{"name": scheme.name, "scheme": scheme.security_scheme()} for scheme in schemes],
                stream=bool(getattr(route, "stream", False)),
            )
        )
    return described, defs


def describe_filter(flt: Any) -> dict[str, Any]:
    """A filter in words, and as JSON Schema when it can be expressed as one."""
    describe = getattr(flt, "describe", None)
    text = describe() if callable(describe) else _callable_name(flt)
    to_schema = getattr(flt, "json_schema", None)
    schema = to_schema() if callable(to_schema) else None
    return {"description": text, "schema": schema}


def _type_schemas(
    routes: Sequence[Any], ref_template: str
) -> tuple[dict[tuple[int, str], dict[str, Any]], dict[str, Any]]:
    """One pydantic pass over every accepted and reply type, so shared models share a def."""
    inputs: list[tuple[tuple[int, str], JsonSchemaMode, TypeAdapter[Any]]] = []
    for index, route in enumerate(routes):
        if route.accepts is not None:
            inputs.append(((index, "accepts"), "validation", TypeAdapter(route.accepts)))
        if route.reply_type is not None:
            inputs.append(((index, "reply"), "serialization", TypeAdapter(route.reply_type)))
    if not inputs:
        return {}, {}
    by_key, top = TypeAdapter.json_schemas(inputs, ref_template=ref_template)
    schemas = {key: schema for (key, _mode), schema in by_key.items()}
    return schemas, dict(top.get("$defs", {}))


def _with_filters(schema: dict[str, Any], parts: list[dict[str, Any] | None]) -> dict[str, Any]:
    """A packet must satisfy the model and every filter (and security scheme) that has a schema."""
    extra = [part for part in parts if part is not None]
    if schema == ANY_MAP and extra:
        return extra[0] if len(extra) == 1 else {"allOf": extra}
    return {"allOf": [schema, *extra]} if extra else schema


def _callable_name(flt: Any) -> str:
    name = getattr(flt, "__qualname__", None) or type(flt).__qualname__
    return f"{name}(client, packet)"
