"""Benchmark asyncapy against a raw asyncio baseline and its peers, side by side in one run.

Usage: ``python benchmarks/run.py [--peers] [--quick] [--duration S] [--runs N] [--only TEXT] [--list]``.
Prints a markdown table (README-ready): each row's req/s and server CPU per request, and
both as a ratio to the row's baseline. See benchmarks/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

import peers  # modules beside this script, so on sys.path when it runs
from loadgen_build import LOADGEN, LOADGEN_SRC, build_loadgen

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")

PERSON = '{"name": "Ada Lovelace", "age": 36, "email": "ada@example.org", "score": 9.5, "active": true}'
BASELINE = "raw asyncio"
# What a row needs besides the load generator: (tool on PATH, Debian package), Python modules.
TOOLS = {"h2load": "nghttp2-client", "wrk": "wrk"}
PEER_MODULES = {
    "grpc": ("grpc", "google.protobuf"),
    "fastapi": ("fastapi", "uvicorn", "uvloop", "httptools"),
}
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{"test": 1}'
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass(frozen=True)
class Spec:
    """One server process: what it serves and how it runs."""

    kind: str
    workers: int = 1
    uvloop: bool = False


@dataclass(frozen=True)
class Scenario:
    """One row of the table: a server, the load and its driver, and the row it is a ratio of."""

    name: str
    spec: Spec
    load: tuple[str, ...] = ()
    base: str | None = None
    driver: str = "loadgen"  # or "h2load" (gRPC) or "wrk" (HTTP)
    peer: bool = False  # one of the --peers rows


@dataclass
class Stats:
    """What a driver reports for one measured run."""

    requests: int
    rps: float
    p50: float
    p99: float
    errors: int


@dataclass
class Result:
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    util: list[float] = field(default_factory=list)
    errors: int = 0


def scenarios(zip_file: Path) -> list[Scenario]:
    raw, echo = Spec("raw"), Spec("echo")
    test = ("--expect", '"test"')  # a reply without the field (an error reply) counts as an error
    tagged_last = '{"kind": "m999", "value": 7}'
    person = ("--payload", PERSON, "--expect", '"ok"')
    return [
        Scenario(BASELINE, raw, peer=True),
        Scenario("asyncapy typed", Spec("typed-test"), test, BASELINE, peer=True),
        Scenario("asyncapy typed, uvloop", Spec("typed-test", uvloop=True), test, BASELINE, peer=True),
        Scenario("gRPC aio (grpcio)", Spec("grpc"), (), BASELINE, "h2load", peer=True),
        Scenario("FastAPI, uvicorn", Spec("fastapi"), (), BASELINE, "wrk", peer=True),
        Scenario("asyncapy echo", echo, (), BASELINE),
        Scenario("raw, 5-field payload", raw, ("--payload", PERSON)),
        Scenario("asyncapy typed, 5 fields", Spec("typed"), ("--payload", PERSON, "--expect", '"ok"'), "raw, 5-field payload"),
        Scenario("raw ziproto", raw, ("--payload-file", str(zip_file), "--enc", "1")),
        Scenario("asyncapy ziproto", echo, ("--payload-file", str(zip_file), "--enc", "1"), "raw ziproto"),
        Scenario("raw depth 8", raw, ("--depth", "8")),
        Scenario("asyncapy depth 8", echo, ("--depth", "8"), "raw depth 8"),
        # AsyncAProto v2 (issue 22): the same server, 8 requests in flight per connection
        # on Stream-Ids instead of 8 pipelined v1 requests; the ratio is v2 over v1
        Scenario("asyncapy typed depth 8", Spec("typed-test"), ("--depth", "8", *test), "raw depth 8"),
        Scenario("asyncapy typed depth 8, v2", Spec("typed-test"), ("--depth", "8", "--v2", *test), "asyncapy typed depth 8"),
        Scenario("asyncapy echo depth 8, v2", echo, ("--depth", "8", "--v2"), "asyncapy depth 8"),
        Scenario("raw reconnect", raw, ("--reconnect",)),
        Scenario("asyncapy reconnect", echo, ("--reconnect",), "raw reconnect"),
        Scenario("asyncapy workers=2", Spec("echo", workers=2), (), BASELINE),
        Scenario("asyncapy echo, uvloop", Spec("echo", uvloop=True), (), BASELINE),
        Scenario("asyncapy 1 tagged handler", Spec("tagged1"), ("--payload", '{"kind": "m0", "value": 7}'), BASELINE),
        Scenario("asyncapy 1000 tagged handlers", Spec("tagged1000"), ("--payload", tagged_last), "asyncapy 1 tagged handler"),
        # the application layer (issue 10): one generator dependency, one middleware, both
        Scenario("asyncapy typed + dependency", Spec("typed+dep"), person, "raw, 5-field payload"),
        Scenario("asyncapy typed + middleware", Spec("typed+mw"), person, "raw, 5-field payload"),
        Scenario("asyncapy typed + dep + middleware", Spec("typed+dep+mw"), person, "raw, 5-field payload"),
    ]


def unavailable(sc: Scenario) -> str | None:
    """Why the row cannot run on this machine (a tool or module missing), or None."""
    if sc.driver in TOOLS and shutil.which(sc.driver) is None:
        return f"{sc.driver} not found (Debian: apt-get install {TOOLS[sc.driver]})"
    needed = PEER_MODULES.get(sc.spec.kind, ()) + (("uvloop",) if sc.spec.uvloop else ())
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        return f"Python module {', '.join(missing)} missing (pip install -e '.[bench]')"
    return None


def ensure_loadgen() -> Path:
    loadgen = build_loadgen()
    if loadgen is None:
        sys.exit(f"no C compiler ({os.environ.get('CC', 'cc')}) to build {LOADGEN} from {LOADGEN_SRC}: apt-get install gcc, or set CC")
    return loadgen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(cmd: list[str], cores: str, pin: bool) -> list[str]:
    return ["taskset", "-c", cores, *cmd] if pin else cmd


def start_server(spec: Spec, pin: bool, verbose: bool) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    if spec.kind in PEER_MODULES:
        cmd = [sys.executable, str(HERE / "peers.py"), spec.kind, str(port)]
    else:
        cmd = [sys.executable, str(HERE / "servers.py"), spec.kind, str(port), "--workers", str(spec.workers)]
        if spec.uvloop:
            cmd.append("--uvloop")
    # A multi-worker server gets both cores: that is the point of the row.
    # Servers log "socket.send() raised exception" when a driver drops a connection; keep it quiet.
    output = None if verbose else subprocess.DEVNULL
    proc = subprocess.Popen(pinned(cmd, "0" if spec.workers == 1 else "0,1", pin), stderr=output)
    return proc, port


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"a server exited early with status {proc.returncode} (run with -v to see why)")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"no server listening on port {port} after {timeout} s")


def check_peer(spec: Spec, port: int) -> None:
    """One request with the peer's own client: the drivers count HTTP statuses only."""
    if spec.kind == "grpc":
        answer = peers.grpc_check(port)
    else:
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/echo", data=b'{"test": 1}', headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = response.read().decode()
    if answer not in ("test=1", '{"test":1}'):
        sys.exit(f"the {spec.kind} peer answered {answer!r}")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (the workers of a multi-process server)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(entry))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (all their threads), from /proc/PID/stat."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def run_tool(cmd: list[str], pin: bool) -> str:
    out = subprocess.run(pinned(cmd, "1", pin), capture_output=True, text=True, check=False, timeout=600)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def drive_loadgen(sc: Scenario, port: int, args: argparse.Namespace, amount: list[str]) -> Stats:
    cmd = [str(LOADGEN), "--port", str(port), "--conns", str(args.conns), *amount, *sc.load]
    pairs = dict(pair.split("=", 1) for pair in run_tool(cmd, args.pin).split())
    return Stats(int(pairs["requests"]), float(pairs["rps"]), float(pairs["p50_us"]), float(pairs["p99_us"]), int(pairs["errors"]))


def percentile(values: list[float], p: float) -> float:
    """Nearest rank, as loadgen computes it."""
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values), max(1, int(p * len(values) + 0.999999))) - 1]


def drive_h2load(port: int, args: argparse.Namespace, amount: list[str], tmp: Path) -> Stats:
    """h2load: 50 HTTP/2 connections, one stream in flight each (``-m 1``), one thread."""
    body, log = tmp / "grpc.body", tmp / "h2load.log"
    body.write_bytes(peers.GRPC_BODY)
    log.unlink(missing_ok=True)
    cmd = ["h2load", "-c", str(args.conns), "-m", "1", "-t", "1", *amount, "-d", str(body), "--log-file", str(log)]
    cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers", f"http://127.0.0.1:{port}{peers.GRPC_METHOD}"]
    out = run_tool(cmd, args.pin)
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    finished = re.search(r"finished in ([\d.]+)(m?s)", out)
    if done is None or finished is None:
        sys.exit(f"cannot read h2load's output:\n{out}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    latencies = [float(row[2]) for row in rows if row[1] == "200"]
    errors = int(done.group(4)) + int(done.group(5)) + int(done.group(6)) + len(rows) - len(latencies)
    ok = len(latencies)
    return Stats(ok, ok / seconds, percentile(latencies, 0.5), percentile(latencies, 0.99), errors)


WRK_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def drive_wrk(port: int, args: argparse.Namespace, seconds: float, tmp: Path) -> Stats:
    """wrk: 50 HTTP/1.1 keep-alive connections, one request in flight each, one thread."""
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT)
    duration = f"{max(1, round(seconds))}s"  # wrk takes whole seconds
    url = f"http://127.0.0.1:{port}/echo"
    out = run_tool(["wrk", "-t1", f"-c{args.conns}", f"-d{duration}", "--latency", "-s", str(script), url], args.pin)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if total is None:
        sys.exit(f"cannot read wrk's output:\n{out}")
    lat = {p: float(v) * WRK_UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)$", out, flags=re.M)}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    requests = int(total.group(1)) - (int(bad.group(1)) if bad else 0)
    elapsed = float(total.group(2)) * WRK_UNITS[total.group(3)] / 1e6
    return Stats(requests, requests / elapsed, lat.get("50", 0.0), lat.get("99", 0.0), errors)


def drive(sc: Scenario, port: int, args: argparse.Namespace, warm: bool, tmp: Path) -> Stats:
    if sc.driver == "h2load":
        return drive_h2load(port, args, ["-n", "2000"] if warm else ["-D", f"{args.duration:g}"], tmp)
    if sc.driver == "wrk":
        return drive_wrk(port, args, 1 if warm else args.duration, tmp)
    if warm:
        return drive_loadgen(sc, port, args, ["--requests", "300" if "--reconnect" in sc.load else "2000"])
    return drive_loadgen(sc, port, args, ["--duration", str(args.duration)])


def measure(sc: Scenario, proc: subprocess.Popen[bytes], port: int, args: argparse.Namespace, result: Result, tmp: Path) -> None:
    drive(sc, port, args, True, tmp)
    pids = process_tree(proc.pid)
    cpu0, wall0 = cpu_seconds(pids), time.monotonic()
    stats = drive(sc, port, args, False, tmp)
    cpu = cpu_seconds(pids) - cpu0
    wall = time.monotonic() - wall0
    result.rps.append(stats.rps)
    result.p50.append(stats.p50)
    result.p99.append(stats.p99)
    result.cpu_us.append(cpu / max(stats.requests, 1) * 1e6)
    result.util.append(cpu / wall * 100)
    result.errors += stats.errors


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def report(rows: list[Scenario], results: dict[str, Result], skipped: dict[str, str]) -> None:
    """The table in markdown; ratios are the row's median over its baseline's median."""
    print("| row | req/s | req/s ratio | p50 µs | p99 µs | CPU µs/req | CPU ratio | server CPU % | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for sc in rows:
        if sc.name in skipped:
            print(f"| {sc.name} | skipped: {skipped[sc.name]} | | | | | | | |")
            continue
        r = results[sc.name]
        rps, cpu = statistics.median(r.rps), statistics.median(r.cpu_us)
        rps_ratio = cpu_ratio = "baseline" if sc.base is None else ""
        if sc.base is not None and sc.base not in skipped:
            base = results[sc.base]
            rps_ratio = f"{rps / statistics.median(base.rps):.2f}"
            cpu_ratio = f"{cpu / statistics.median(base.cpu_us):.2f}"
        print(
            f"| {sc.name} | {rps:,.0f} | {rps_ratio} | {statistics.median(r.p50):,.0f} | {statistics.median(r.p99):,.0f}"
            f" | {cpu:.1f} | {cpu_ratio} | {statistics.median(r.util):.0f} | {r.errors} |"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", action="store_true", help="only the comparison with gRPC and FastAPI (and its baseline)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions; the table shows medians (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 s runs, 1 repetition (unless set explicitly)")
    parser.add_argument("--conns", type=int, default=50, help="concurrent connections, one request in flight each (default 50)")
    parser.add_argument("--only", action="append", default=[], help="run only rows whose name contains TEXT (repeatable; bases are kept)")
    parser.add_argument("--list", action="store_true", help="print the rows and which would be skipped, then exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the servers' stderr")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin cores with taskset")
    args = parser.parse_args()
    if args.quick:
        if "--duration" not in sys.argv:
            args.duration = 2.0
        if "--runs" not in sys.argv:
            args.runs = 1
    args.pin = args.pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    return args


def select(rows: list[Scenario], only: list[str], peers: bool) -> list[Scenario]:
    if peers:
        rows = [sc for sc in rows if sc.peer]
    if not only:
        return rows
    wanted = {sc.name for sc in rows if any(text in sc.name for text in only)}
    by_name = {sc.name: sc for sc in rows}
    for name in list(wanted):
        while (base := by_name[name].base) is not None:
            wanted.add(base)
            name = base
    return [sc for sc in rows if sc.name in wanted]



def stop_servers(servers: Iterable[tuple[subprocess.Popen[Any], int]]) -> None:
    """Terminate every benchmark server at once, then wait for each (killed past 10 s)."""
    procs = [proc for proc, _ in servers]
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

def main() -> None:
    args = parse_args()
    zip_file = HERE / ".ziproto-payload.bin"
    rows = select(scenarios(zip_file), args.only, args.peers)
    skipped = {sc.name: why for sc in rows if (why := unavailable(sc)) is not None}
    if args.list:
        for sc in rows:
            print(f"{sc.name}: {'skipped: ' + skipped[sc.name] if sc.name in skipped else 'runs'}")
        return
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    ensure_loadgen()
    zip_file.write_bytes(msgpack.packb({"test": 1}))
    measured = [sc for sc in rows if sc.name not in skipped]
    servers: dict[Spec, tuple[subprocess.Popen[bytes], int]] = {}
    results = {sc.name: Result() for sc in measured}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for sc in measured:
                if sc.spec not in servers:
                    servers[sc.spec] = start_server(sc.spec, args.pin, args.verbose)
            for spec, (proc, port) in servers.items():
                wait_listening(port, proc)
                if spec.kind in PEER_MODULES:
                    check_peer(spec, port)
            for rep in range(args.runs):
                for sc in measured:  # interleaved: every row once per repetition
                    proc, port = servers[sc.spec]
                    measure(sc, proc, port, args, results[sc.name], Path(tmp))
                print(f"repetition {rep + 1}/{args.runs} done", file=sys.stderr)
    finally:
        stop_servers(servers.values())
        zip_file.unlink(missing_ok=True)
    command = shlex.join(["python", "benchmarks/run.py", *sys.argv[1:]])
    print(f"`{command}`: {args.runs} run(s) of {args.duration:g} s, {args.conns} connections with one request in flight each (a row named depth 8: eight),"
          f" server pinned to one core and load generator to another: {args.pin}; medians.")
    print(f"Machine: {machine()}.")
    print()
    report(rows, results, skipped)


if __name__ == "__main__":
    main()
