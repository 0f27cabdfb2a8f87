"""Typing tests: ``mypy --strict`` with the repository's config on user-shaped code."""

from __future__ import annotations

from pathlib import Path

from mypy import api

HERE = Path(__file__).parent
CONFIG = HERE.parent.parent / "mypy.ini"


def run_mypy(path: Path) -> tuple[str, int]:
    """Check ``path`` as CI does (strict, no cache); returns mypy's output and exit status."""
    stdout, stderr, status = api.run(["--strict", "--config-file", str(CONFIG), "--no-incremental", str(path)])
    return stdout + stderr, status
