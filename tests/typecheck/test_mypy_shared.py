"""``mypy --strict`` on user-shaped code of PROXY protocol, RedisState, RateLimit and API keys."""

from __future__ import annotations

from pathlib import Path

from mypy import api

HERE = Path(__file__).parent
CONFIG = HERE.parent.parent / "mypy.ini"


def test_shared_state_code_type_checks() -> None:
    stdout, stderr, status = api.run(["--strict", "--config-file", str(CONFIG), "--no-incremental", str(HERE / "usage_shared.py")])
    assert status == 0, stdout + stderr
