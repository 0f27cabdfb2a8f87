"""An editable install is visible to type checkers (issue 15).

setuptools' default editable install is an import hook that mypy cannot follow:
``mypy`` run on an application outside the repository reported ``Cannot find
implementation or library stub for module named "asyncapy"``. The project now builds
with hatchling, whose editable install is a path entry (a ``.pth`` line). This runs
``mypy --strict`` on a small application in a temporary directory outside the
repository, with the interpreter that runs the tests, as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent

APP = '''
from pydantic import BaseModel
from typing_extensions import assert_type

from asyncapy import Client, Packet, Server


class Order(BaseModel):
    qty: int


server = Server(port=0)


@server.add_handler()
async def order(client: Client, packet: Packet[Order]) -> Order:
    assert_type(packet.data, Order)
    return Order(qty=packet.data.qty + 1)
'''


def test_mypy_strict_sees_the_installed_package_from_outside_the_repository(tmp_path: Path) -> None:
    assert REPO not in tmp_path.parents
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    where = subprocess.run(
        [sys.executable, "-c", "import asyncapy; print(asyncapy.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert where.returncode == 0, f"asyncapy is not installed in {sys.prefix}: pip install -e '.[dev]'\n{where.stderr}"
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "app.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
