"""Each example runs as written: real processes, real sockets."""

from __future__ import annotations

import subprocess
import sys

from asyncapy.client import Client

from .procs import ROOT, free_port, server_process


def test_getting_started_echo_server_and_test_client() -> None:
    port = free_port()
    with server_process(["examples/echo_server.py", str(port)], port) as proc:
        out = subprocess.run(
            [sys.executable, "examples/testclient.py", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        assert out.strip() == repr(b'\x00\x00\x00\x0c\x16\x00{"test":1}')
    stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "Hello world from Client(127.0.0.1)!" in stdout
    assert 'Echoing back Packet({"test": 1})...' in stdout
    assert "New session started" in stderr and "Server stopped" in stderr


def test_groups_example_answers_twice_then_closes() -> None:
    port = free_port()
    with server_process(["examples/groups.py", str(port)], port) as proc:
        with Client("127.0.0.1", port, timeout=10) as client:
            client.send({"test": 1})
            assert client.receive() == {"test": 1}
            assert client.receive() == {"test": 1}
    stdout, _ = proc.communicate(timeout=15)
    assert stdout.index("inside a group") < stdout.index("Hello world from Client(127.0.0.1)!\n")


def run_example(name: str) -> str:
    return subprocess.run(
        [sys.executable, f"examples/{name}"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout


def test_clients_example() -> None:
    out = run_example("clients.py")
    assert "raw packet: b'\\x00\\x00\\x00\\x0c\\x16\\x00{\"test\":1}'" in out
    assert "ZiProto reply: {'z': [1, 2]}" in out
    assert "async client: {'hello': 'world'}" in out
    assert "error reply: ERR_INTERNAL" in out
    assert "typed reply: total=3" in out and "each its own answer: True" in out


def test_filters_example() -> None:
    lines = run_example("filters.py").splitlines()
    assert lines[:3] == ["{'area': 'admin'}", "{'area': 'office', 'user': 'ada'}", "{'area': 'lobby'}"]
    assert "ERR_NO_HANDLER" in lines[3] and "wrong" not in lines[3]
