"""Real ``redis-server`` and ``haproxy`` processes on free loopback ports, owned and ended by the test.

A missing binary FAILS the test with the command that installs it (never a skip).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .procs import free_port

#: Seconds a service gets to start listening (the machine may be busy).
START_TIMEOUT = 15.0


def require(command: str, package: str) -> str:
    """The path of ``command``, or a test failure saying how to install it."""
    path = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        pytest.fail(
            f"{command} is not installed: apt-get install -y {package} (scripts/system-packages.txt lists every such tool)",
            pytrace=False,
        )
    return path


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}: {out}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on port {port} within {START_TIMEOUT} s")


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@dataclass
class RedisProcess:
    """A ``redis-server`` on ``port``; ``kill()`` and ``start()`` simulate an outage."""

    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = require("redis-server", "redis-server")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _wait_listening(self.port, self.proc, "redis-server")

    def kill(self) -> None:
        """End Redis abruptly (its data is gone, as after a crash without persistence)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        _end(self.proc)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            _end(self.proc)
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: Redis accepts connections (the kernel does) but answers nothing: a slow Redis."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def redis_process() -> Iterator[RedisProcess]:
    redis = RedisProcess(free_port())
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    """A fresh ``redis-server`` for one test."""
    with redis_process() as redis:
        yield redis


HAPROXY_CONFIG = """\
global
    maxconn 1000

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend asyncapy_in
    bind 127.0.0.1:{front}
    default_backend asyncapy_servers

backend asyncapy_servers
    balance roundrobin
{servers}
"""


def haproxy_config(front: int, backends: list[int], proxy_version: int = 2) -> str:
    send = "send-proxy-v2" if proxy_version == 2 else "send-proxy"
    servers = "\n".join(f"    server app{i} 127.0.0.1:{port} {send}" for i, port in enumerate(backends, 1))
    return HAPROXY_CONFIG.format(front=front, servers=servers)


@contextlib.contextmanager
def haproxy_process(config_dir: Path, backends: list[int], proxy_version: int = 2) -> Iterator[int]:
    """``haproxy`` balancing a free front port round-robin over ``backends``, PROXY header included."""
    binary = require("haproxy", "haproxy")
    front = free_port()
    config = config_dir / "haproxy.cfg"
    config.write_text(haproxy_config(front, backends, proxy_version))
    check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_listening(front, proc, "haproxy")
        yield front
    finally:
        _end(proc)
