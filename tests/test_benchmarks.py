"""``benchmarks/run.py`` end to end in its quickest mode (no speed is asserted)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "benchmarks" / "run.py"


def need(*tools: str) -> None:
    packages = {"cc": "gcc", "h2load": "nghttp2-client", "wrk": "wrk"}
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install {' '.join(packages[t] for t in missing)} (scripts/test installs them as root)")


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def table(stdout: str) -> dict[str, list[str]]:
    """The markdown table's rows by name (cells stripped), header included."""
    rows = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_quick_mode_prints_a_markdown_table_with_ratios() -> None:
    need("cc")
    out = run("--quick", "--duration", "0.3", "--only", "asyncapy echo")
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout)
    assert list(rows)[:3] == ["row", "raw asyncio", "asyncapy echo"], out.stdout  # and "asyncapy echo, uvloop"
    assert rows["raw asyncio"][1] == "baseline"
    rps_ratio, cpu_ratio, errors = float(rows["asyncapy echo"][1]), float(rows["asyncapy echo"][5]), rows["asyncapy echo"][7]
    assert rps_ratio > 0 and cpu_ratio > 0 and errors == "0", out.stdout
    assert "Machine: " in out.stdout and "`python benchmarks/run.py --quick" in out.stdout


def test_peers_rows_run_side_by_side() -> None:
    """gRPC aio under h2load and FastAPI under wrk, next to asyncapy and the raw baseline."""
    need("cc", "h2load", "wrk")
    out = run("--peers", "--duration", "1", "--runs", "1")
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout)
    assert list(rows)[1:] == ["raw asyncio", "asyncapy typed", "asyncapy typed, uvloop", "gRPC aio (grpcio)", "FastAPI, uvicorn"]
    for name in list(rows)[1:]:
        req_s, cpu_us, errors = float(rows[name][0].replace(",", "")), float(rows[name][4]), rows[name][7]
        assert req_s > 0 and cpu_us > 0 and errors == "0", (name, out.stdout)


def test_a_row_whose_tool_is_missing_is_skipped_with_the_reason(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # no h2load, no wrk
    out = run("--peers", "--list", env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "gRPC aio (grpcio): skipped: h2load not found (Debian: apt-get install nghttp2-client)" in out.stdout
    assert "FastAPI, uvicorn: skipped: wrk not found (Debian: apt-get install wrk)" in out.stdout
    assert "asyncapy typed: runs" in out.stdout


def test_connection_benchmark_prints_every_row_with_its_baseline() -> None:
    """``bench_connection.py`` runs every row (each checks that replies were written)."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_connection.py"), "--packets", "300", "--repeat", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for row in ("raw echo", "asyncapy echo", "asyncapy typed handler", "asyncapy reconnect", "asyncapy 1000 tagged handlers"):
        assert any(line.startswith(row + " ") for line in lines), (row, out.stdout)
    assert "x base" in out.stdout


def test_protocol_benchmark_prints_every_row_next_to_its_reference() -> None:
    """``bench_protocol.py`` loads the decoder of a git revision next to this tree's (no speed asserted)."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_protocol.py"), "--calls", "200", "--repeat", "1", "--base", "HEAD"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout)
    for row in ("v1 receive 1", "v1 receive 16", "v1 split", "v1 next_event", "v2 receive 1", "v2 receive 16"):
        ns, ref_ns, ratio, _ = rows[row]
        assert float(ns) > 0 and float(ref_ns) > 0 and float(ratio) > 0, (row, out.stdout)
    loop = subprocess.run([*cmd[:2], "--loop", "split", "--calls", "100"], capture_output=True, text=True, timeout=60, check=False)
    assert loop.returncode == 0 and loop.stdout == "", loop.stderr


def test_v2_rows_run_beside_their_v1_rows() -> None:
    """``--only v2``: the v2 rows, each a ratio of the same server's pipelined v1 row (no speed asserted)."""
    need("cc")
    out = run("--only", "v2", "--duration", "0.3", "--runs", "1")
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout)
    names = ["raw depth 8", "asyncapy depth 8", "asyncapy typed depth 8", "asyncapy typed depth 8, v2", "asyncapy echo depth 8, v2"]
    assert list(rows)[1:] == names, out.stdout
    for name in names[1:]:
        req_s, rps_ratio, cpu_ratio, errors = float(rows[name][0].replace(",", "")), float(rows[name][1]), float(rows[name][5]), rows[name][7]
        assert req_s > 0 and rps_ratio > 0 and cpu_ratio > 0 and errors == "0", (name, out.stdout)


def test_head_of_line_prints_each_case() -> None:
    """``head_of_line.py`` with few requests: the four cases, each with its latencies (no speed asserted)."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "head_of_line.py"), "--requests", "40", "--v1-requests", "3", "--timeout", "30"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout)
    expected = {"v2, fast alone": 40, "v2, beside a slow request": 40, "v1, fast alone": 40, "v1, beside a slow request": 3}
    for name, count in expected.items():
        requests, p50, p99, top, slow = rows[name]
        assert int(requests) == count and 0 < float(p50.replace(",", "")) <= float(p99.replace(",", "")), (name, out.stdout)
        assert float(top.replace(",", "")) >= float(p99.replace(",", "")), (name, out.stdout)
        assert (slow == "-") == ("alone" in name), (name, out.stdout)
    assert int(rows["v1, beside a slow request"][4]) >= 1 and int(rows["v2, beside a slow request"][4]) >= 0


def test_stream_benchmark_prints_both_rows() -> None:
    """``bench_stream.py`` reads every item of both handlers back (no speed asserted)."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_stream.py"), "--items", "200", "--repeat", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "stream (async generator)" in out.stdout and "send loop (await client.send)" in out.stdout
