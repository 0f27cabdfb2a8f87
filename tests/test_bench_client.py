"""``benchmarks/bench_client.py`` in a tiny run prints every row (no speed is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_client_benchmark_prints_its_rows() -> None:
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_client.py"), "--requests", "200", "--runs", "1", "--no-pin"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stderr
    rows = (
        "AsyncClient v2, 50 in flight",
        "AsyncClient v1 pool=1, 50 in flight",
        "AsyncClient v1 pool=8, 50 in flight",
        "Client (blocking) v2, 50 threads",
        "raw asyncio, 1 conn, depth 50",
    )
    for row in rows:
        assert any(line.startswith(row) for line in out.stdout.splitlines()), (row, out.stdout)
    assert "client cpu us/req" in out.stdout
