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


def test_typed_api_bounds_its_inputs() -> None:
    """Out-of-range numbers are refused by validation (ERR_NO_HANDLER), never an OverflowError
    in the handler (ERR_INTERNAL); the largest accepted ones are answered, in both codecs."""
    too_big = [
        {"kind": "circle", "radius": 1e200},
        {"kind": "square", "side": 1e200},
        {"kind": "add", "a": 2**63, "b": 1},
        {"kind": "add", "a": 1, "b": -(2**70)},
    ]
    with TestClient(server) as client:
        for payload in too_big:
            for encoding in ("json", "ziproto"):
                if encoding == "ziproto" and any(isinstance(v, int) and abs(v) >= 2**64 for v in payload.values()):
                    continue  # ZiProto cannot carry it at all: that is the client's encode error, not the server's
                reply = client.request(payload, encoding)
                assert reply["error"] == "ERR_NO_HANDLER", (payload, reply)
                assert "less than or equal" in reply["detail"] or "greater than or equal" in reply["detail"], reply
        assert math.isfinite(client.request({"kind": "circle", "radius": 1e150}, "ziproto")["area"])
        assert client.request({"kind": "add", "a": 2**62, "b": 2**62}, "ziproto") == {"kind": "sum", "result": 2**63}
        assert client.request({"kind": "add", "a": -(2**62), "b": -(2**62)}) == {"kind": "sum", "result": -(2**63)}


def test_a_packet_without_its_tag_is_told_the_field_is_missing() -> None:
    with TestClient(server) as client:
        reply = client.request({"radius": 1})
    assert reply["error"] == "ERR_NO_HANDLER"
    assert "the packet has no 'kind' field" in reply["detail"], reply["detail"]
    assert "no handler takes this" not in reply["detail"]


def test_the_fields_filter_reads_as_a_sentence() -> None:
    with TestClient(server) as client:
        reply = client.request({"user": "ADA"})
    assert "exactly the fields user (matching '[a-z]{1,16}')" in reply["detail"], reply["detail"]
