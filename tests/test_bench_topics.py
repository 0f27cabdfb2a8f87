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


def row(stdout: str, name: str) -> list[str]:
    """The cells of the markdown row whose first cell starts with ``name``, that one dropped."""
    for line in stdout.splitlines():
        parts = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and parts[0].startswith(name):
            return parts[1:]
    raise AssertionError(f"no row {name!r} in:\n{stdout}")


def number(cell: str) -> float:
    return float(cell.split()[0].replace(",", ""))


def test_bench_fanout_runs_every_row() -> None:
    require("redis-server", "redis-server")
    require("cc", "gcc")
    args = ["--conns", "20", "--events", "5", "--redis-conns", "5", "--publishes", "20", "--paced", "5", "--timeout", "60"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fanout.py"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    raw = row(out.stdout, "raw asyncio, transport.write loop")
    ours = row(out.stdout, "asyncapy streaming handler + topic")
    for cells in (raw, ours):  # delivered/s, ratio, CPU µs per event, ratio, first ITEM, errors
        assert number(cells[0]) > 0 and number(cells[2]) > 0 and number(cells[5]) == 0, out.stdout
    assert number(ours[1]) > 0 and number(ours[3]) > 0, out.stdout
    for name in ("20 publishes back to back", "5 paced publishes"):
        assert all(number(cell) > 0 for cell in row(out.stdout, name)), out.stdout
    for name in ("idle v2 connection", "connection holding an idle streamed subscription", "idle subscription"):
        number(row(out.stdout, name)[0])  # a figure (RSS of 20 connections is too coarse to be sure of its sign)
