"""Benchmark asyncapy against a raw asyncio baseline, side by side in one run.

Usage: ``python benchmarks/run.py [--quick] [--duration S] [--runs N] [--only TEXT]``.
See benchmarks/README.md for what each row measures and how to read the table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOADGEN = HERE / "loadgen"
LOADGEN_SRC = REPO.parent / "shared" / "bench" / "loadgen.c"
TICKS = os.sysconf("SC_CLK_TCK")

PERSON = '{"name": "Ada Lovelace", "age": 36, "email": "ada@example.org", "score": 9.5, "active": true}'


@dataclass(frozen=True)
class Spec:
    """One server process: what it serves and how it runs."""

    kind: str
    workers: int = 1
    uvloop: bool = False


@dataclass(frozen=True)
class Scenario:
    """One row of the table: a server, the load, and the row it is a ratio of."""

    name: str
    spec: Spec
    load: tuple[str, ...] = ()
    base: str | None = None


@dataclass
class Result:
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    util: list[float] = field(default_factory=list)
    errors: int = 0


def scenarios(zip_file: Path, typed_router: bool, uvloop: bool) -> list[Scenario]:
    raw, echo = Spec("raw"), Spec("echo")
    tagged_last = '{"kind": "m999", "value": 7}'
    rows = [
        Scenario("raw echo", raw),
        Scenario("asyncapy echo", echo, base="raw echo"),
        Scenario("raw echo, 5-field payload", raw, ("--payload", PERSON)),
        Scenario("asyncapy typed handler", Spec("typed"), ("--payload", PERSON), "raw echo, 5-field payload"),
        Scenario("raw ziproto", raw, ("--payload-file", str(zip_file), "--enc", "1")),
        Scenario("asyncapy ziproto", echo, ("--payload-file", str(zip_file), "--enc", "1"), "raw ziproto"),
        Scenario("raw depth 8", raw, ("--depth", "8")),
        Scenario("asyncapy depth 8", echo, ("--depth", "8"), "raw depth 8"),
        Scenario("raw reconnect", raw, ("--reconnect",)),
        Scenario("asyncapy reconnect", echo, ("--reconnect",), "raw reconnect"),
        Scenario("asyncapy workers=2", Spec("echo", workers=2), (), "raw echo"),
    ]
    if uvloop:
        rows.append(Scenario("asyncapy uvloop", Spec("echo", uvloop=True), (), "raw echo"))
    if typed_router:
        rows.append(Scenario("asyncapy 1 tagged handler", Spec("tagged1"), ("--payload", '{"kind": "m0", "value": 7}'), "raw echo"))
        rows.append(Scenario("asyncapy 1000 tagged handlers", Spec("tagged1000"), ("--payload", tagged_last), "asyncapy 1 tagged handler"))
    if (REPO / "asyncapy" / "depends.py").exists():  # the application layer (issue 10)
        person = ("--payload", PERSON)
        rows.append(Scenario("asyncapy typed + dependency", Spec("typed+dep"), person, "raw echo, 5-field payload"))
        rows.append(Scenario("asyncapy typed + middleware", Spec("typed+mw"), person, "raw echo, 5-field payload"))
        rows.append(Scenario("asyncapy typed + dep + middleware", Spec("typed+dep+mw"), person, "raw echo, 5-field payload"))
    return rows


def ensure_loadgen() -> Path:
    """Build the load generator from ../shared/bench/loadgen.c unless it is there."""
    if LOADGEN.exists():
        return LOADGEN
    if not LOADGEN_SRC.exists():
        sys.exit(f"no load generator: build {LOADGEN} from {LOADGEN_SRC} (not found)")
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-o", str(LOADGEN), str(LOADGEN_SRC)], check=True)
    return LOADGEN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(cmd: list[str], cores: str, pin: bool) -> list[str]:
    return ["taskset", "-c", cores, *cmd] if pin else cmd


def start_server(spec: Spec, pin: bool, verbose: bool) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [sys.executable, str(HERE / "servers.py"), spec.kind, str(port), "--workers", str(spec.workers)]
    if spec.uvloop:
        cmd.append("--uvloop")
    # A multi-worker server gets both cores: that is the point of the row.
    # Servers log "socket.send() raised exception" when loadgen drops a connection; keep it quiet.
    output = None if verbose else subprocess.DEVNULL
    proc = subprocess.Popen(pinned(cmd, "0" if spec.workers == 1 else "0,1", pin), stderr=output)
    return proc, port


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"a server exited early with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"no server listening on port {port} after {timeout} s")


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
    """utime + stime of ``pids``, from /proc/PID/stat."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def loadgen(port: int, load: tuple[str, ...], conns: int, amount: list[str], pin: bool) -> dict[str, str]:
    cmd = [str(LOADGEN), "--port", str(port), "--conns", str(conns), *amount, *load]
    out = subprocess.run(pinned(cmd, "1", pin), capture_output=True, text=True, check=False)
    if not out.stdout.strip():
        sys.exit(f"loadgen failed: {out.stderr.strip()}")
    return dict(pair.split("=", 1) for pair in out.stdout.split())


def measure(sc: Scenario, proc: subprocess.Popen[bytes], port: int, args: argparse.Namespace, result: Result) -> None:
    warm = ["--requests", "300" if "--reconnect" in sc.load else "2000"]
    loadgen(port, sc.load, args.conns, warm, args.pin)
    pids = process_tree(proc.pid)
    cpu0, wall0 = cpu_seconds(pids), time.monotonic()
    stats = loadgen(port, sc.load, args.conns, ["--duration", str(args.duration)], args.pin)
    cpu = cpu_seconds(pids) - cpu0
    wall = time.monotonic() - wall0
    requests = int(stats["requests"])
    result.rps.append(float(stats["rps"]))
    result.p50.append(float(stats["p50_us"]))
    result.p99.append(float(stats["p99_us"]))
    result.cpu_us.append(cpu / max(requests, 1) * 1e6)
    result.util.append(cpu / wall * 100)
    result.errors += int(stats["errors"])


def report(rows: list[Scenario], results: dict[str, Result]) -> None:
    head = f"{'scenario':32} {'req/s':>9} {'ratio':>6} {'p50 us':>7} {'p99 us':>7} {'cpu us/req':>10} {'cpu %':>6} {'errors':>6}"
    print(head)
    print("-" * len(head))
    for sc in rows:
        r = results[sc.name]
        rps = statistics.median(r.rps)
        ratio = ""
        if sc.base is not None:
            ratio = f"{rps / statistics.median(results[sc.base].rps):.2f}"
        print(
            f"{sc.name:32} {rps:9.0f} {ratio:>6} {statistics.median(r.p50):7.0f} {statistics.median(r.p99):7.0f}"
            f" {statistics.median(r.cpu_us):10.1f} {statistics.median(r.util):6.0f} {r.errors:6d}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions; the table shows medians (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 s runs, 1 repetition (unless set explicitly)")
    parser.add_argument("--conns", type=int, default=50, help="concurrent connections (default 50)")
    parser.add_argument("--only", action="append", default=[], help="run only rows whose name contains TEXT (repeatable; bases are kept)")
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


def select(rows: list[Scenario], only: list[str]) -> list[Scenario]:
    if not only:
        return rows
    wanted = {sc.name for sc in rows if any(text in sc.name for text in only)}
    by_name = {sc.name: sc for sc in rows}
    for name in list(wanted):
        while (base := by_name[name].base) is not None:
            wanted.add(base)
            name = base
    return [sc for sc in rows if sc.name in wanted]


def main() -> None:
    args = parse_args()
    ensure_loadgen()
    zip_file = HERE / ".ziproto-payload.bin"
    zip_file.write_bytes(msgpack.packb({"test": 1}))
    typed_router = (REPO / "asyncapy" / "routing" / "compiler.py").exists()
    try:
        import uvloop  # noqa: F401

        has_uvloop = True
    except ImportError:
        has_uvloop = False
    rows = select(scenarios(zip_file, typed_router, has_uvloop), args.only)
    servers: dict[Spec, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for sc in rows:
            if sc.spec not in servers:
                servers[sc.spec] = start_server(sc.spec, args.pin, args.verbose)
        for proc, port in servers.values():
            wait_listening(port, proc)
        results = {sc.name: Result() for sc in rows}
        for rep in range(args.runs):
            for sc in rows:  # interleaved: every row once per repetition
                proc, port = servers[sc.spec]
                measure(sc, proc, port, args, results[sc.name])
            print(f"repetition {rep + 1}/{args.runs} done", file=sys.stderr)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        zip_file.unlink(missing_ok=True)
    print(f"# {args.runs} run(s) of {args.duration:g} s, {args.conns} connections, pinned={args.pin}, python {sys.version.split()[0]}")
    if not typed_router:
        print("# tagged-handler rows skipped: this branch has no typed router yet")
    report(rows, results)


if __name__ == "__main__":
    main()
