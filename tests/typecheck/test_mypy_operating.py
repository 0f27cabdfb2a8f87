"""``mypy --strict`` on user-shaped code of the operating features (DESIGN §7)."""

from __future__ import annotations


from . import HERE, run_mypy


def test_operating_code_type_checks() -> None:
    output, status = run_mypy(HERE / "operating_usage.py")
    assert status == 0, output
