"""``Server(workers=N)`` and ``Server(uvloop=True)``, each run in a real subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from asyncapy import Server
from asyncapy.client import Client as SyncClient

REPO = Path(__file__).resolve().parents[2]

SERVER_SCRIPT = """
import asyncio, os, sys
sys.path.insert(0, {repo!r})
from asyncapy import Client, Packet, Server

server = Server("127.0.0.1", {port}, workers={workers}, uvloop={uvloop}, shutdown_timeout=2)

@server.add_handler()
async def who(client: Client, packet: Packet) -> dict[str, object]:
    await asyncio.sleep(0)
    task = asyncio.current_task()
    return {{"pid": os.getpid(), "task": task is not None, "loop": type(asyncio.get_running_loop()).__module__}}

server.start()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(port: int, workers: int = 1, uvloop: bool = False) -> subprocess.Popen[bytes]:
    script = SERVER_SCRIPT.format(repo=str(REPO), port=port, workers=workers, uvloop=uvloop)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)])


def request(port: int, deadline: float) -> dict[str, object]:
    """One request on a new connection, retried while the server is starting."""
    while True:
        try:
            with SyncClient("127.0.0.1", port, timeout=5) as client:
                return client.request({"hello": 1})
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc").is_dir(), reason="needs fork and /proc")
def test_two_workers_share_the_port_and_all_stop_on_sigterm() -> None:
    port = free_port()
    proc = spawn(port, workers=2)
    try:
        deadline = time.monotonic() + 20
        request(port, deadline)
        workers = children_of(proc.pid)
        assert len(workers) == 2
        pids = {request(port, deadline)["pid"] for _ in range(60)}
        assert pids <= set(workers)
        assert len(pids) == 2  # 60 connections never all land on one of two workers
    finally:
        status = stop(proc)
    assert status == 0
    time.sleep(0.2)
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def test_uvloop_option() -> None:
    pytest.importorskip("uvloop")
    port = free_port()
    proc = spawn(port, uvloop=True)
    try:
        reply = request(port, time.monotonic() + 20)
    finally:
        status = stop(proc)
    assert reply["task"] is True
    assert str(reply["loop"]).startswith("uvloop")
    assert status == 0


def test_bad_workers_and_uvloop_arguments_fail_early() -> None:
    with pytest.raises(ValueError):
        Server(workers=0)
    try:
        import uvloop  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="uvloop"):
            Server(uvloop=True)
