"""Messages for a missing optional dependency spell the install as it was made (a path or git URL)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from asyncapy.model.install import GENERIC, hint_for, install_hint

from ..procs import ROOT


def test_this_editable_install_is_named_by_its_path() -> None:
    assert install_hint("redis") == f"pip install -e '{ROOT}[redis]'"


def test_spellings_of_each_origin() -> None:
    git = {"url": "https://git.example.com/asyncapy.git", "vcs_info": {"vcs": "git", "commit_id": "ab12", "requested_revision": "v1"}}
    assert hint_for(git, "reload") == "pip install 'asyncapy[reload] @ git+https://git.example.com/asyncapy.git@v1'"
    copy = {"url": "file:///src/my%20asyncapy", "dir_info": {}}
    assert hint_for(copy, "otel") == "pip install '/src/my asyncapy[otel]'"
    assert hint_for({}, "uvloop") == GENERIC.format(extra="uvloop")
    assert "'asyncapy[" not in GENERIC.partition(" (or")[0]  # never the index spelling alone


@pytest.mark.parametrize(
    ("missing", "code", "says"),
    [
        ("watchfiles", "from asyncapy.cli import main; sys.exit(main(['run', 'examples.typed_api:server', '--reload']))", "--reload needs watchfiles"),
        ("uvloop", "from asyncapy import Server; Server(uvloop=True)", "uvloop=True needs uvloop"),
        ("redis", "import asyncapy.redis", "asyncapy.redis needs the redis package"),
        ("prometheus_client", "from asyncapy import Server; Server(metrics_port=0)", "metrics_port needs prometheus-client"),
    ],
)
def test_a_missing_extra_says_how_to_add_it_here(missing: str, code: str, says: str) -> None:
    """The package is hidden from the import system, as in an install without that extra."""
    hide = f"import sys; sys.modules[{missing!r}] = None; "  # import then raises ImportError
    out = subprocess.run([sys.executable, "-c", hide + code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    extra = {"watchfiles": "reload", "prometheus_client": "prometheus"}.get(missing, missing)
    assert says in out.stderr and f"pip install -e '{ROOT}[{extra}]'" in out.stderr, out.stderr[-2000:]
