"""``server.asyncapi()``: an AsyncAPI 3.0.0 document the official tooling accepts."""

from __future__ import annotations

from pathlib import Path
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel, Field

from asyncapy import Client, Packet, Server

from asyncapy.docs.asyncapi import asyncapi_document, asyncapi_schema, operation_ids
from examples.typed_api import server as typed_server

from ..asyncapi_validation import json_schema_errors, parse_with_official_parser, require_parser
from ..conftest import make_server
from ..routing_cases import build_server
from ..schema_routes import ROUTES


class Watch(BaseModel):
    symbol: str


class Tick(BaseModel):
    symbol: str
    last_price: float = Field(alias="lastPrice")


def streaming_server() -> Server:
    """A server with a streaming handler (DESIGN §9) beside a plain one."""
    server = make_server()

    @server.add_handler()
    async def watch(client: Client, packet: Packet[Watch]) -> AsyncIterator[Tick]:
        """Every tick of one symbol, as it comes."""
        yield Tick(symbol=packet.data.symbol, lastPrice=1.0)

    @server.add_handler()
    async def quote(client: Client, packet: Packet[Tick]) -> Tick:
        return packet.data

    return server


def _documents() -> dict[str, dict[str, Any]]:
    return {
        "streaming": streaming_server().asyncapi(title="Ticks", version="1.0.0"),
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


def test_a_streaming_handler_exports_its_item_model_as_the_reply_marked_as_a_stream() -> None:
    doc = DOCUMENTS["streaming"]
    ops = {op["x-asyncapy-handler"].rsplit(".", 1)[-1]: op for op in doc["operations"].values()}
    assert ops["watch"]["x-asyncapy-stream"] is True and "x-asyncapy-stream" not in ops["quote"]
    [ref] = ops["watch"]["reply"]["messages"]
    message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]]
    assert "stream" in message["title"]
    payload = message["payload"]
    if "$ref" in payload:
        payload = doc["components"]["schemas"][payload["$ref"].rsplit("/", 1)[-1]]
    assert set(payload["properties"]) == {"symbol", "lastPrice"}  # the wire names
    routes = streaming_server().schema()["routes"]
    assert [r.get("stream", False) for r in routes] == [True, False]


def test_the_docs_page_marks_a_streaming_operation() -> None:
    from asyncapy.docs.docspage import render

    page = render(DOCUMENTS["streaming"])
    articles = page.split('<article class="operation"')[1:]
    [watch] = [a for a in articles if "locals&gt;.watch" in a]
    [quote] = [a for a in articles if "locals&gt;.quote" in a]
    assert '<span class="tag stream">' in watch and "Items (a stream)" in watch
    assert "tag stream" not in quote and "Items (a stream)" not in quote
