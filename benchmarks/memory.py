"""Memory per idle connection: asyncapy against a raw asyncio framing echo, in one run.

Each server runs as its own process (``servers.py KIND PORT``). This script opens
``--connections`` connections to it, sends one packet on each and reads its reply,
then leaves them open and idle, and reads the server's resident memory (VmRSS) before
and after. The figure is the growth divided by the number of connections; the ratio
is against the raw server measured in the same run.

    python benchmarks/memory.py --connections 8000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKET = (b'{"id": 1, "name": "ada"}', 0)


def frame(payload: bytes, encoding: int = 0) -> bytes:
    return (len(payload) + 2).to_bytes(4, "big") + bytes((22, encoding)) + payload


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "servers.py"), kind, str(port)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{kind} did not listen")


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` connections, each having sent one packet and read its reply."""
    writers: list[asyncio.StreamWriter] = []
    data = frame(*PACKET)
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        length = int.from_bytes(await asyncio.wait_for(reader.readexactly(4), 10), "big")
        await asyncio.wait_for(reader.readexactly(length), 10)
        writers.append(writer)
    return writers


async def measure(kind: str, count: int) -> float:
    """KiB of server memory per idle connection."""
    proc, port = start(kind)
    try:
        await open_idle(port, 50)  # warm-up: imports, caches and the first host tasks
        time.sleep(0.5)
        before = rss_kib(proc.pid)
        writers = await open_idle(port, count)
        time.sleep(2.5)  # idle: past the server's sweep (a second or two)
        after = rss_kib(proc.pid)
        for writer in writers:
            writer.close()
        return (after - before) / count
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=8000)
    parser.add_argument("--kinds", default="raw,echo,typed")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    gc.collect()
    results = {kind: asyncio.run(measure(kind, args.connections)) for kind in args.kinds.split(",")}
    raw = results.get("raw")
    print(f"memory per idle connection ({args.connections} connections, one packet each; pid {os.getpid()})")
    for kind, kib in results.items():
        ratio = f"  {kib / raw:.2f}x raw" if raw else ""
        print(f"  {kind:<8} {kib:6.2f} KiB{ratio}")


if __name__ == "__main__":
    main()
