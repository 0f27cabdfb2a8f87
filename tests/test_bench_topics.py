"""``benchmarks/topics.py`` end to end in its quickest mode (no speed is asserted)."""

from __future__ import annotations

import subprocess
import sys

from .procs import ROOT
from .services import require


def test_bench_topics_runs_every_row() -> None:
    require("redis-server", "redis-server")
    args = ["--subscribers", "200", "--events", "3", "--repeat", "1", "--publishes", "200", "--latency", "20"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "topics.py"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for row in ("raw asyncio.Queue loop", "topic.publish -> subscribe()", "publishes/s", "delivered of those | 200 / 200",
                "publish-to-delivery p50", "publish-to-delivery p99"):  # fmt: skip
        assert row in out.stdout, out.stdout
