"""``server.schema()`` and ``asyncapy.docs.schema``: routes, filters, accepted packets, replies."""

from __future__ import annotations

from asyncapy.docs.schema import describe_filter, schema_document

from ..routing_cases import build_server
from ..schema_routes import ROUTES, NameFilter


def test_routes_in_dispatch_order_with_filters() -> None:
    doc = build_server().schema()
    names = [(r["group"], r["handler"]) for r in doc["routes"]]
    assert names[:2] == [(-1, "tag"), (-1, "stopper")]
    assert names[-1] == (1, "echo")
    first = doc["routes"][0]
    assert first["style"] == "untyped" and first["accepts"] == {"type": "object"} and first["reply"] is None
    [described] = first["filters"]
    assert "has.<locals>.check" in described["description"] and described["schema"] is None
    assert set(doc["$defs"]) == {"Order", "AnyOrder"}


def test_models_share_defs_and_refs_resolve() -> None:
    doc = schema_document(ROUTES)
    defs = doc["$defs"]
    assert set(defs) == {"Owner", "Cat", "Dog", "Ack"}
    adopt, feed, anything = doc["routes"]
    assert adopt["accepts"] == {
        "allOf": [{"$ref": "#/$defs/Owner"}, NameFilter().json_schema()],
    }
    assert adopt["reply"] == {"$ref": "#/$defs/Ack"}
    assert feed["accepts"]["discriminator"]["propertyName"] == "kind"
    assert {"$ref": "#/$defs/Cat"} in feed["accepts"]["oneOf"]
    assert feed["filters"] == [{"description": "Ip('10.0.0.0/8')", "schema": None}]
    assert anything["accepts"] == {"type": "object"} and anything["style"] == "untyped"
    _assert_refs_resolve(doc, doc)


def test_describe_filter_of_a_plain_callable() -> None:
    def only_admins(client: object, packet: object) -> bool:
        return True

    described = describe_filter(only_admins)
    assert described == {
        "description": "test_describe_filter_of_a_plain_callable.<locals>.only_admins(client, packet)",
        "schema": None,
    }


def _assert_refs_resolve(node: object, doc: dict[str, object]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in doc["$defs"]  # type: ignore[operator]
        for value in node.values():
            _assert_refs_resolve(value, doc)
    elif isinstance(node, list):
        for item in node:
            _assert_refs_resolve(item, doc)
