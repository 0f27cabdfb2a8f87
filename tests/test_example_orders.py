"""examples/orders.py: through the TestClient, and served by the CLI over a real socket."""

from __future__ import annotations

import json
import subprocess
import sys

from asyncapy.testing import TestClient
from examples.orders import server

from .procs import ROOT, free_port, server_process


def test_orders_service_in_the_test_client() -> None:
    with TestClient(server) as client:
        assert client.request({"kind": "place", "token": "nope", "item": "tea", "qty": 1}) == {
            "status": "failure", "error": "ERR_UNAUTHORIZED", "detail": "log in first",
        }  # fmt: skip
        token = client.request({"kind": "login", "user": "ada"})["token"]
        placed = client.request({"kind": "place", "token": token, "item": "tea", "qty": 2})
        assert placed == {"id": 1, "user": "ada", "item": "tea", "qty": 2}
        assert server.state.store.committed == [1]  # the transaction committed after the reply
        out_of_stock = client.request({"kind": "place", "token": token, "item": "unobtainium", "qty": 1})
        assert out_of_stock["error"] == "ERR_OUT_OF_STOCK"
        assert server.state.store.committed == [1]  # rolled back
        assert client.request({"kind": "show", "token": token, "id": 1})["item"] == "tea"
        assert client.request({"kind": "show", "token": token, "id": 9}) == {
            "status": "failure", "error": "ERR_NOT_FOUND", "detail": "no such order: 9",
        }  # fmt: skip
        zero = client.request({"kind": "place", "token": token, "item": "tea", "qty": 0})
        assert zero["error"] == "ERR_NO_HANDLER" and zero["errors"][0]["loc"] == ["qty"]
        store = server.state.store
    assert not store.open  # the lifespan closed it


def test_orders_service_over_a_socket() -> None:
    port = free_port()

    def send(payload: dict[str, object]) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-m", "asyncapy", "send", f"127.0.0.1:{port}", json.dumps(payload)],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        return json.loads(out)  # type: ignore[no-any-return]

    args = ["-m", "asyncapy", "run", "examples.orders:server", "--port", str(port)]
    with server_process(args, port) as proc:
        assert send({"kind": "login", "user": "ada"}) == {"token": "t-ada"}
        placed = send({"kind": "place", "token": "t-ada", "item": "tea", "qty": 2})
        assert placed == {"id": 1, "user": "ada", "item": "tea", "qty": 2}
    assert proc.returncode == 0, proc.communicate()
