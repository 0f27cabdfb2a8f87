"""Start the whole deployment on loopback ports: one Redis, two asyncapy instances, one HAProxy.

    .venv/bin/python -m examples.deploy.stack          # start it, show what it does, stop it
    .venv/bin/python -m examples.deploy.stack --keep   # ... and keep it running until Ctrl-C

Needs ``redis-server`` and ``haproxy`` (``apt-get install -y redis-server haproxy``).
Every process gets a free port and is ended on exit; the tests use this same module.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from asyncapy.codecs import get_codec
from asyncapy.protocol import NEED_DATA, Frame, FrameDecoder, FrameError, encode_frame

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parent.parent
#: Seconds a process gets to listen on its port.
START_TIMEOUT: Final = 20.0
JSON: Final = get_codec("json")


class MissingTool(RuntimeError):
    """A program the deployment needs is not installed."""


def find_tool(command: str, package: str) -> str:
    path = shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        raise MissingTool(f"{command} is not installed: apt-get install -y {package}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Stack:
    """The processes of the deployment and their ports; see the module docstring."""

    workdir: Path
    session_limit: int = 10
    rate: str = "5/minute"
    namespace: str = "deploy-demo"
    #: Generous: the demo and the tests may run on a busy machine (a dead Redis fails at once anyway).
    redis_timeout: float = 2.0
    #: How often HAProxy probes each instance (``tcp-check`` of the health packet), and how
    #: long a stopping instance keeps serving with its probe failing: over 2 intervals (``fall 2``).
    check_inter: str = "1s"
    drain: float = 3.0
    redis_port: int = field(default_factory=free_port)
    app_ports: tuple[int, int] = field(default_factory=lambda: (free_port(), free_port()))
    front_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start(self) -> None:
        self.start_redis()
        env = dict(
            os.environ,
            ASYNCAPY_REDIS_URL=self.redis_url,
            ASYNCAPY_NAMESPACE=self.namespace,
            ASYNCAPY_SESSION_LIMIT=str(self.session_limit),
            ASYNCAPY_RATE=self.rate,
            ASYNCAPY_REDIS_TIMEOUT=str(self.redis_timeout),
            ASYNCAPY_DRAIN=str(self.drain),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        for n, port in enumerate(self.app_ports, 1):
            args = [sys.executable, "-m", "asyncapy", "run", "examples.deploy.app:server", "--port", str(port),
                    "--proxy-protocol", "--trusted-proxy", "127.0.0.1", "--log-level", "info"]  # fmt: skip
            self._spawn(f"app{n}", args, port, env)
        haproxy = find_tool("haproxy", "haproxy")
        ports = dict(
            FRONT_PORT=str(self.front_port), APP1_PORT=str(self.app_ports[0]), APP2_PORT=str(self.app_ports[1]),
            CHECK_INTER=self.check_inter,
        )  # fmt: skip
        self._spawn("haproxy", [haproxy, "-db", "-f", str(HERE / "haproxy.cfg")], self.front_port, dict(os.environ, **ports))

    def start_redis(self) -> None:
        redis = find_tool("redis-server", "redis-server")
        args = [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._spawn("redis", args, self.redis_port, dict(os.environ))

    def kill_redis(self) -> None:
        """SIGKILL Redis: an outage (it comes back empty with ``start_redis``)."""
        self._end("redis", signal.SIGKILL)

    def terminate(self, name: str) -> subprocess.Popen[bytes]:
        """SIGTERM one process without waiting: an instance's graceful stop (``proc.wait()`` for its end)."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        return proc

    def stop(self) -> None:
        """The balancer first, then both instances at once (each drains), then Redis."""
        self._end("haproxy", signal.SIGTERM)
        for name in ("app1", "app2"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in ("app1", "app2", "redis"):
            self._end(name, signal.SIGTERM)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def _spawn(self, name: str, args: list[str], port: int, env: dict[str, str]) -> None:
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{name} did not listen on port {port} within {START_TIMEOUT} s:\n{self.log(name)}")

    def _end(self, name: str, sig: signal.Signals) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_stack(workdir: Path | None = None, **settings: Any) -> Iterator[Stack]:
    """The deployment, started; every process is ended when the block exits."""
    with contextlib.ExitStack() as exits:
        if workdir is None:
            workdir = Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="asyncapy-deploy-")))
        stack = Stack(workdir, **settings)
        exits.callback(stack.stop)
        stack.start()
        yield stack


class Peer:
    """A blocking connection from ``local`` (e.g. 127.0.0.2, a second loopback address) to ``port``."""

    def __init__(self, port: int, local: str = "127.0.0.2", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(local, 0))
        self.decoder = FrameDecoder()

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one packet and return the reply (``{}`` if the server closed instead)."""
        self.sock.sendall(encode_frame(JSON.encode(payload), JSON.id))
        while True:
            event = self.decoder.next_event()
            if isinstance(event, Frame):
                reply: dict[str, Any] = get_codec(event.encoding).decode(event.payload)
                return reply
            if isinstance(event, FrameError):
                raise ValueError(event.detail)
            assert event is NEED_DATA
            data = self.sock.recv(65536)
            if not data:
                return {}
            self.decoder.feed(data)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def demo(keep: bool) -> None:
    with running_stack() as stack:
        front = stack.front_port
        print(f"Redis on {stack.redis_port}, instances on {stack.app_ports}, HAProxy on {front}")
        for _ in range(2):
            with Peer(front) as peer:
                print("whoami from 127.0.0.2 ->", peer.request({"kind": "whoami"}))
        with Peer(front) as admin, Peer(front) as other:
            key = admin.request({"kind": "admin", "op": "create_key"})["key"]
            print("a key made on one instance works on the other ->", other.request({"kind": "private", "api_key": key}))
        with Peer(front) as peer:
            print("rate limit", stack.rate, "->", [peer.request({"kind": "limited"}).get("error", "ok") for _ in range(7)])
        if keep:
            print(f"Serving through 127.0.0.1:{front}; logs in {stack.workdir}. Ctrl-C to stop.")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the deployment running until Ctrl-C")
    args = parser.parse_args()
    try:
        demo(args.keep)
    except MissingTool as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
