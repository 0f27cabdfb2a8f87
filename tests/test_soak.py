"""A short soak run: mixed traffic loses no reply and leaves no descriptor behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"
#: Seconds of traffic: long enough for every client kind to cycle many times.
DURATION = 5
#: RSS growth after warm-up, loose on purpose: a 5 s run is noisy; the 5 min run reports the real figure.
RSS_GROWTH_BOUND_PCT = 50


def test_short_soak() -> None:
    done = subprocess.run(
        [sys.executable, str(SOAK), "--duration", str(DURATION)], capture_output=True, text=True, timeout=120
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["lost"] == 0 and report["out_of_order"] == 0
    assert report["valid_answered"] > 0
    assert report["fds"]["after"] <= report["fds"]["baseline"]
    assert report["client_errors"] == []
    assert report["server_exit_code"] == 0
    assert report["rss_growth_pct"] < RSS_GROWTH_BOUND_PCT
    for kind, right in report["right_error_replies"].items():
        if kind != "slowloris":  # the last slowloris of the run is cut by the stop, not the server
            assert right == report["inputs_sent"][kind], kind
    assert done.returncode == 0, done.stderr
