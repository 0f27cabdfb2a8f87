"""Out of descriptors: a server process under a low RLIMIT_NOFILE, flooded with connections.

    .venv/bin/python benchmarks/fd_starvation.py [--nofile 64] [--clients 100] [--starve 3] [--uvloop]

Starts an echo server in a subprocess whose descriptor limit is ``--nofile``, opens
``--clients`` connections to it (more than it can hold), and holds them for
``--starve`` seconds: meanwhile it measures the server's CPU time (from
/proc/PID/stat) and the bytes it logs. Then it closes the connections the server
did accept and checks that it recovers by itself: every connection still waiting
in the backlog, and a new one, must get its reply. Prints one JSON line:
``cpu_pct`` while starved, ``log_bytes_per_s``, ``log_lines``, ``accepted`` before
the release, ``recovered`` (all later clients answered). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncapy import Client, Packet, Server  # noqa: E402
from asyncapy.wire.codecs import get_codec  # noqa: E402
from asyncapy.wire.protocol import encode_frame  # noqa: E402

JSON = get_codec("json")
REQUEST = encode_frame(JSON.encode({"ping": 1}), 0)


def serve(port_file: str, use_uvloop: bool) -> None:
    """The server process: echo on an OS-picked port, written to ``port_file``."""
    class PortServer(Server):
        async def start_serving(self) -> None:
            await super().start_serving()
            Path(port_file).write_text(str(self.port))

    server = PortServer("127.0.0.1", 0, logging_level=logging.INFO, uvloop=use_uvloop, timeout=60)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> dict[str, int]:
        return {"pong": 1}

    server.start()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request(sock: socket.socket, timeout: float) -> bool:
    """Send one request on ``sock`` and wait for one reply: True when it came."""
    sock.settimeout(timeout)
    try:
        sock.sendall(REQUEST)
        header = b""
        while len(header) < 4:
            chunk = sock.recv(4 - len(header))
            if not chunk:
                return False
            header += chunk
        body = b""
        length = int.from_bytes(header, "big")
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            if not chunk:
                return False
            body += chunk
        return bool(JSON.decode(body[2:]) == {"pong": 1})
    except OSError:
        return False


def requests(socks: list[socket.socket], timeout: float) -> list[bool]:
    """Send one request on each socket; which got its reply within ``timeout`` (together)."""
    for sock in socks:
        try:
            sock.sendall(REQUEST)
        except OSError:
            pass
    return replies(socks, timeout)


def replies(socks: list[socket.socket], timeout: float) -> list[bool]:
    """Which of ``socks`` received one whole reply within ``timeout`` seconds (all waited on together)."""
    got = {sock: b"" for sock in socks}
    done: set[socket.socket] = set()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while len(done) < len(socks) and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    selector.unregister(sock)
                    done.add(sock)
                    continue
                got[sock] += chunk
                data = got[sock]
                if len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[:4], "big"):
                    selector.unregister(sock)
                    done.add(sock)
    ok = []
    for sock in socks:
        data = got[sock]
        ok.append(len(data) >= 6 and JSON.decode(data[6 : 4 + int.from_bytes(data[:4], "big")]) == {"pong": 1})
        sock.setblocking(True)
    return ok


def run(nofile: int, clients: int, starve: float, use_uvloop: bool) -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < clients + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(clients + 64, hard), hard))  # this side holds them all
    with tempfile.TemporaryDirectory() as tmp:
        port_file, log_file = Path(tmp) / "port", Path(tmp) / "server.log"

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        args = [sys.executable, __file__, "--serve", str(port_file)] + (["--uvloop"] if use_uvloop else [])
        with open(log_file, "wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit)
        try:
            deadline = time.monotonic() + 20
            while not port_file.exists() or not port_file.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {log_file.read_text()}")
                time.sleep(0.05)
            port = int(port_file.read_text())
            socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(clients)]
            time.sleep(0.5)  # the server accepts what it can, then starves
            log_before, cpu_before, started = log_file.stat().st_size, cpu_seconds(proc.pid), time.monotonic()
            time.sleep(starve)
            elapsed = time.monotonic() - started
            cpu = cpu_seconds(proc.pid) - cpu_before
            log_bytes = log_file.stat().st_size - log_before
            # Which connections did the server accept? Those answer at once; the rest wait in the backlog.
            answered = requests(socks, 1.0)
            accepted = sum(answered)
            for sock, ok in zip(socks, answered):
                if ok:
                    sock.close()  # descriptors come back: the server must accept the rest by itself
            waiting = [s for s, ok in zip(socks, answered) if not ok]
            waiting_answered = sum(replies(waiting, 10))
            late_attempts, late_answered = 0, False
            while not late_answered and late_attempts < 10:  # uvloop drops connections until it has descriptors
                late_attempts += 1
                with socket.create_connection(("127.0.0.1", port), timeout=5) as late:
                    late_answered = request(late, 5)
                if not late_answered:
                    time.sleep(0.5)
            for sock in waiting:
                sock.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        text = log_file.read_text(errors="replace")
    return {
        "python": sys.version.split()[0],
        "uvloop": use_uvloop,
        "nofile": nofile,
        "clients": clients,
        "starved_s": round(elapsed, 2),
        "cpu_pct": round(100 * cpu / elapsed, 1),
        "log_bytes_per_s": round(log_bytes / elapsed),
        "cannot_accept_lines": text.count("Cannot accept connections"),
        "retry_ms": [int(ms) for ms in re.findall(r"retrying in (\d+) ms", text)],
        "recovered_lines": text.count("Accepting connections again"),
        "accepted_before_release": accepted,
        "waiting_answered": waiting_answered,
        "waiting": len(waiting),
        "late_answered": late_answered,
        "late_attempts": late_attempts,
        "recovered": late_answered and waiting_answered == len(waiting),
        "server_exit_code": proc.returncode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nofile", type=int, default=64)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--starve", type=float, default=3.0)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--serve", metavar="PORT_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.uvloop)
        return
    print(json.dumps(run(args.nofile, args.clients, args.starve, args.uvloop)))


if __name__ == "__main__":
    main()
