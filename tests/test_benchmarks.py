"""``benchmarks/run.py`` in its quickest mode runs end to end (no speed is asserted)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOADGEN_SRC = REPO.parent / "shared" / "bench" / "loadgen.c"


@pytest.mark.skipif(sys.platform == "win32", reason="the load generator is POSIX C")
def test_benchmark_quick_mode_prints_a_table() -> None:
    if not (REPO / "benchmarks" / "loadgen").exists() and not (LOADGEN_SRC.exists() and shutil.which("cc")):
        pytest.skip("no load generator and no ../shared/bench/loadgen.c + cc to build it")
    cmd = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--duration", "0.3", "--only", "asyncapy echo"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    rows = {line.split("  ")[0]: line for line in out.stdout.splitlines()}
    assert "raw echo" in rows and "asyncapy echo" in rows
    assert "req/s" in out.stdout and "cpu us/req" in out.stdout


def test_connection_benchmark_prints_every_row_with_its_baseline() -> None:
    """``bench_connection.py`` runs every row (each checks that replies were written)."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_connection.py"), "--packets", "300", "--repeat", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for row in ("raw echo", "asyncapy echo", "asyncapy typed handler", "asyncapy reconnect", "asyncapy 1000 tagged handlers"):
        assert any(line.startswith(row + " ") for line in lines), (row, out.stdout)
    assert "x base" in out.stdout
