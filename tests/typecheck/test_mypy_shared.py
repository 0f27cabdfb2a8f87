"""``mypy --strict`` on user-shaped code of PROXY protocol, RedisState, RateLimit and API keys."""

from __future__ import annotations


from . import HERE, run_mypy


def test_shared_state_code_type_checks() -> None:
    output, status = run_mypy(HERE / "usage_shared.py")
    assert status == 0, output
