"""``mypy --strict`` on user-shaped code of the application layer (DESIGN §4)."""

from __future__ import annotations


from . import HERE
from . import run_mypy as _mypy


def test_app_layer_code_type_checks() -> None:
    output, status = _mypy(HERE / "app_usage.py")
    assert status == 0, output


def test_app_layer_misuse_is_reported() -> None:
    output, status = _mypy(HERE / "fail" / "app_misuse.py")
    assert status == 1, output
    errors = [line for line in output.splitlines() if ": error:" in line]
    lines = {int(line.split(":")[1]) for line in errors}
    source = (HERE / "fail" / "app_misuse.py").read_text().splitlines()
    expected = {i + 1 for i, text in enumerate(source) if "# E" in text}
    assert expected == lines, output
    assert any('expression has type "int", variable has type "str"' in line for line in errors), output
