"""``mypy --strict`` on user-shaped code of the operating features (DESIGN §7)."""

from __future__ import annotations

from pathlib import Path

from mypy import api

HERE = Path(__file__).parent
CONFIG = HERE.parent.parent / "mypy.ini"


def test_operating_code_type_checks() -> None:
    stdout, stderr, status = api.run(
        ["--strict", "--config-file", str(CONFIG), "--no-incremental", str(HERE / "operating_usage.py")]
    )
    assert status == 0, stdout + stderr
