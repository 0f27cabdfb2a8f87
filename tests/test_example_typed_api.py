"""examples/typed_api.py, driven through the TestClient."""

from __future__ import annotations

import math

from asyncapy.testing import TestClient
from examples.typed_api import Add, Circle, add, area, ping, server


def test_typed_api_replies() -> None:
    with TestClient(server) as client:
        assert client.request({"kind": "ping"}) == {"kind": "pong"}
        assert client.request({"kind": "add", "a": 2, "b": 3}, "ziproto") == {"kind": "sum", "result": 5}
        assert client.request({"kind": "square", "side": 3}) == {"kind": "area", "area": 9.0}
        reply = client.request({"kind": "circle", "radius": 1})
        assert math.isclose(reply["area"], math.pi)
        assert client.request({"user": "ada"}) == {"hello": "ada"}


def test_typed_api_calls_are_typed() -> None:
    with TestClient(server) as client:
        client.request({"kind": "add", "a": 1, "b": 1})
        client.request({"kind": "circle", "radius": 2})
        assert client.calls_of(add)[0].data == Add(kind="add", a=1, b=1)
        assert client.calls_of(area) == [Circle(kind="circle", radius=2)]
        assert client.calls_of(ping) == []


def test_typed_api_rejects_what_no_model_accepts() -> None:
    with TestClient(server) as client:
        for payload in ({"kind": "add", "a": "x", "b": 1}, {"kind": "circle", "radius": -1}, {"user": "ADA"}):
            reply = client.request(payload)
            assert reply["error"] == "ERR_NO_HANDLER", payload


def test_typed_api_schema_names_its_models() -> None:
    doc = server.schema()
    assert [r["handler"] for r in doc["routes"]] == ["ping", "add", "area", "hello"]
    assert {"Ping", "Pong", "Add", "Sum", "Circle", "Square", "Area"} <= set(doc["$defs"])
