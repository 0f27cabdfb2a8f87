"""Run ``mypy --strict`` on user-shaped code: good code passes, misuse is reported."""

from __future__ import annotations


from . import HERE
from . import run_mypy as _mypy


def test_user_code_type_checks() -> None:
    output, status = _mypy(HERE / "usage.py")
    assert status == 0, output


def test_misuse_is_reported() -> None:
    output, status = _mypy(HERE / "fail" / "misuse.py")
    assert status == 1, output
    lines = [line for line in output.splitlines() if ": error:" in line]
    assert any('expression has type "str", variable has type "int"' in line for line in lines), output
    assert any("Callable[[Client, Packet[Login]], Coroutine[Any, Any, None]]" in line for line in lines), output
    assert len(lines) == 2, output
