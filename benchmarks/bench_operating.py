"""The Python cost per packet of the operating features, without sockets: ``python benchmarks/bench_operating.py``.

The harness of ``bench_connection.py`` (one framed request per ``data_received``, a
transport that swallows the replies) on the typed handler, served as the server would
serve it: plain, with the access log on (to a file), with metrics on, and with
``TracingMiddleware`` (no-op provider; SDK with an in-memory exporter) when the server
has ``middleware``. Rows run interleaved, ``--repeat`` times; the best run of each is
kept and shown as µs per packet and as a ratio to the typed row (higher is better).
``run_operating.py`` measures the same over real sockets.

On a busy machine, count instructions instead (deterministic), per row: run
``valgrind --tool=callgrind --callgrind-out-file=/dev/null python
benchmarks/bench_operating.py --only ROW --repeat 1 --packets N`` for N = 2000 and
6000; the difference of the totals over 4000 is the instructions per packet.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_connection  # noqa: E402
import operating  # noqa: E402
import servers  # noqa: E402

from asyncapy import Server  # noqa: E402
from asyncapy.serve.connection import Connection  # noqa: E402
from asyncapy.ops.observe import make_observer  # noqa: E402

Factory = Callable[[], Callable[[], asyncio.Protocol]]


def protocol(server: Server) -> Callable[[], asyncio.Protocol]:
    """What ``start_serving`` builds for ``server``: its pipeline, observed when something observes."""
    ctx = server._serving_context(server.compile(), server._observer())
    return lambda: Connection(ctx)


def rows() -> dict[str, Factory]:
    found: dict[str, Factory] = {
        "typed": lambda: protocol(servers.typed_server()),
        "typed + access log (file)": lambda: protocol(operating.operating_server("access", servers.typed_server)),
        "typed + metrics (counting only)": lambda: metrics_protocol(),
    }
    if hasattr(Server, "middleware"):
        found["typed + pass-through middleware"] = lambda: protocol(operating.operating_server("middleware", servers.typed_server))
        for kind in ("otel-noop", "otel-sdk"):
            found[f"typed + tracing ({kind[5:]})"] = lambda kind=kind: protocol(operating.operating_server(kind, servers.typed_server))  # type: ignore[misc]
    return found


def metrics_protocol() -> Callable[[], asyncio.Protocol]:
    """The metrics' per-packet work without the HTTP endpoint (it costs nothing per packet)."""
    from asyncapy.ops.metrics import ProcessMetrics

    server = servers.typed_server()
    observer = make_observer(None, ProcessMetrics())
    assert observer is not None
    ctx = server._serving_context(server.compile(), observer)
    return lambda: Connection(ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", help="run only the row of this name (for callgrind, see below)")
    args = parser.parse_args()
    os.chdir(tempfile.gettempdir())
    data = bench_connection.frame(bench_connection.PERSON)
    factories = {name: make() for name, make in rows().items() if args.only in (None, name)}
    best = {name: float("inf") for name in factories}
    for _ in range(args.repeat):
        for name, factory in factories.items():  # interleaved: noise hits every row alike
            for exporter in operating.EXPORTERS:
                exporter.clear()  # as an exporter sends them: a growing list slows every collection
            gc.collect()
            elapsed, written = asyncio.run(bench_connection.feed(factory, data, args.packets))
            assert written, name
            best[name] = min(best[name], elapsed / args.packets * 1e6)
    print(f"# {args.packets} packets per run, best of {args.repeat}, python {sys.version.split()[0]}")
    print(f"{'row':34} {'us/packet':>9} {'extra us':>8} {'ratio':>6}")
    base = best.get("typed", 0.0)
    for name, us in best.items():
        print(f"{name:34} {us:9.2f} {us - base:8.2f} {base / us:6.2f}")


if __name__ == "__main__":
    main()
