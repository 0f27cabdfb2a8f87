"""``server.asyncapi()``: an AsyncAPI 3.0.0 document the official tooling accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asyncapy.docs.asyncapi import asyncapi_document, asyncapi_schema, operation_ids
from examples.typed_api import server as typed_server

from ..asyncapi_validation import json_schema_errors, parse_with_official_parser, require_parser
from ..conftest import make_server
from ..routing_cases import build_server
from ..schema_routes import ROUTES


def _documents() -> dict[str, dict[str, Any]]:
    return {
        "examples.typed_api": typed_server.asyncapi(title="Typed API", version="1.0.0"),
        "routing_cases": build_server().asyncapi(title="Routing", version="0.1.0", description="cases"),
        "contract_routes": asyncapi_document(make_server(), ROUTES, title="Pets", version="2.0.0"),
        "no_routes": make_server().asyncapi(),
    }


DOCUMENTS = _documents()


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_valid_against_the_asyncapi_json_schema(name: str) -> None:
    assert json_schema_errors(DOCUMENTS[name]) == []


def test_accepted_by_the_official_parser(tmp_path: Path) -> None:
    require_parser()
    result = parse_with_official_parser(DOCUMENTS, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("valid AsyncAPI 3.0.0") == len(DOCUMENTS)


def test_the_parser_check_rejects_a_broken_document(tmp_path: Path) -> None:
    require_parser()
    doc = dict(DOCUMENTS["contract_routes"])
    doc["operations"] = {"x": {"action": "get"}}
    result = parse_with_official_parser({"good": DOCUMENTS["no_routes"], "broken": doc}, tmp_path)
    assert result.returncode == 1
    assert "error:" in result.stderr


def test_shape_of_the_document() -> None:
    doc = DOCUMENTS["contract_routes"]
    assert doc["asyncapi"] == "3.0.0"
    assert doc["servers"]["main"]["protocol"] == "asyncaproto"
    assert list(doc["channels"]) == ["connection"]
    assert set(doc["operations"]) == {"adopt", "feed", "anything"}
    adopt = doc["operations"]["adopt"]
    assert adopt["action"] == "receive" and adopt["summary"] == "Adopt a pet."
    assert adopt["x-asyncapy-group"] == -1
    assert adopt["x-asyncapy-filters"][0]["description"] == "Fields(name='[a-z]+')"
    assert adopt["reply"]["messages"] == [{"$ref": "#/channels/connection/messages/adopt.reply"}]
    assert "reply" not in doc["operations"]["feed"]
    messages = doc["components"]["messages"]
    assert messages["adopt.reply"]["payload"] == {"$ref": "#/components/schemas/Ack"}
    assert "error" in doc["channels"]["connection"]["messages"]


def test_discriminators_are_property_names() -> None:
    doc = DOCUMENTS["contract_routes"]
    feed = doc["components"]["messages"]["feed.request"]["payload"]
    assert feed["discriminator"] == "kind"
    assert doc["components"]["schemas"]["Owner"]["properties"]["pet"]["discriminator"] == "kind"


def test_discriminator_rewrite_leaves_fields_named_discriminator_alone() -> None:
    schema = {
        "properties": {"discriminator": {"type": "object", "default": {"propertyName": "x"}}},
        "oneOf": [{"$ref": "#/a"}],
        "discriminator": {"propertyName": "kind", "mapping": {}},
    }
    assert asyncapi_schema(schema) == {
        "properties": {"discriminator": {"type": "object", "default": {"propertyName": "x"}}},
        "oneOf": [{"$ref": "#/a"}],
        "discriminator": "kind",
    }


def test_operation_ids_are_unique_and_safe() -> None:
    assert operation_ids(["a", "make.<locals>.h", "a", "Cls.meth"]) == ["a", "make_locals_h", "a_2", "Cls_meth"]
