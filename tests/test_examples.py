"""The examples under ``examples/`` work, driven through the TestClient."""

from __future__ import annotations

from asyncapy.testing import TestClient
from examples.typed_api import Ping, ping, server


def test_typed_api_ping() -> None:
    with TestClient(server) as client:
        assert client.request({"kind": "ping"}) == {"kind": "pong"}
        assert client.request({"kind": "ping"}, "ziproto") == {"kind": "pong"}
        assert len(client.calls_of(ping)) == 2


def test_typed_api_schema_names_its_models() -> None:
    routes = server.schema()["routes"]
    assert [(r["group"], r["handler"]) for r in routes] == [(0, "ping"), (0, "add")]
    assert Ping.model_json_schema()["properties"]["kind"]["const"] == "ping"
