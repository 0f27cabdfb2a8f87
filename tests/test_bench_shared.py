"""``benchmarks/bench_shared.py`` end to end in its quickest mode (no speed is asserted)."""

from __future__ import annotations

import subprocess
import sys

from .procs import ROOT
from .services import require


def test_bench_shared_runs_every_row() -> None:
    require("redis-server", "redis-server")
    require("haproxy", "haproxy")
    require("cc", "gcc")
    args = ["--keys-max", "1000", "--packets", "200", "--repeat", "1", "--haproxy", "--duration", "0.5"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_shared.py"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for row in ("1,000", "typed + RateLimit in memory", "typed + RateLimit on Redis", "connection, shared session_limit",
                "one instance, direct", "HAProxy -> two instances"):  # fmt: skip
        assert row in out.stdout, out.stdout
