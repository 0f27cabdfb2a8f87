"""What operating features cost: the typed row of ``run.py`` with each one on, side by side.

Usage: ``python benchmarks/run_operating.py [--quick] [--duration S] [--runs N] [--only TEXT]``
(the options of ``run.py``). Rows: the typed handler (the baseline of the others), with
the access log on (to a file), with Prometheus metrics on, and with ``TracingMiddleware``
on a no-op tracer provider and on the SDK's with an in-memory exporter (when the
server has ``middleware``). Ratios are req/s against the typed row of the same run;
``cpu us/req`` is the steadier figure on a busy machine.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import sys
from pathlib import Path

import run
from run import PERSON, Result, Scenario, Spec

HERE = Path(__file__).resolve().parent


def scenarios(tracing: bool) -> list[Scenario]:
    load = ("--payload", PERSON)
    base = "asyncapy typed handler"
    rows = [
        Scenario(base, Spec("typed"), load),
        Scenario("typed + access log (file)", Spec("typed-access"), load, base),
        Scenario("typed + metrics", Spec("typed-metrics"), load, base),
    ]
    if tracing:
        rows.append(Scenario("typed + pass-through middleware", Spec("typed-middleware"), load, base))
        rows.append(Scenario("typed + tracing (no-op provider)", Spec("typed-otel-noop"), load, base))
        rows.append(Scenario("typed + tracing (SDK, in-memory)", Spec("typed-otel-sdk"), load, base))
    return rows


def report(rows: list[Scenario], results: dict[str, Result]) -> None:
    run.report(rows, results, {})
    print()
    print(f"{'by cpu us/req':32} {'ratio':>6}")
    for sc in rows:
        if sc.base is not None:
            cpu = statistics.median(results[sc.name].cpu_us)
            base = statistics.median(results[sc.base].cpu_us)
            print(f"{sc.name:32} {base / cpu:6.2f}")


def main() -> None:
    args = run.parse_args()
    run.ensure_loadgen()
    from asyncapy import Server

    tracing = hasattr(Server, "middleware") and (HERE.parent / "asyncapy" / "otel.py").exists()
    rows = run.select(scenarios(tracing), args.only, False)
    servers: dict[Spec, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for sc in rows:
            if sc.spec not in servers:
                servers[sc.spec] = run.start_server(sc.spec, args.pin, args.verbose)
        for proc, port in servers.values():
            run.wait_listening(port, proc)
        results = {sc.name: Result() for sc in rows}
        for rep in range(args.runs):
            for sc in rows:  # interleaved: every row once per repetition
                proc, port = servers[sc.spec]
                run.measure(sc, proc, port, args, results[sc.name], Path(tempfile.gettempdir()))  # tmp: for h2load/wrk only
            print(f"repetition {rep + 1}/{args.runs} done", file=sys.stderr)
    finally:
        run.stop_servers(servers.values())
    print(f"# {args.runs} run(s) of {args.duration:g} s, {args.conns} connections, pinned={args.pin}, python {sys.version.split()[0]}")
    report(rows, results)


if __name__ == "__main__":
    main()
