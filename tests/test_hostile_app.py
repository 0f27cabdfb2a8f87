"""Hardening, round three (issue 21): hostile input meets the application and operating layers.

Every test here reproduced its failure on real sockets, a real server process or a
real Redis before the fix, unless its docstring says otherwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import pytest

from asyncapy import Client, Depends, Packet, Router, UsageError

from .conftest import make_server
from .procs import ROOT, free_port


# -- Depends(42): the programmer's slip, named at registration ------------------------------


def test_depends_on_a_non_callable_names_the_handler_and_the_parameter() -> None:
    server = make_server()

    async def create(client: Client, packet: Packet, tx: Annotated[int, Depends(42)]) -> None: ...

    with pytest.raises(UsageError, match=r"handler '.*create'.*parameter 'tx'.*callable.*42"):
        server.register_handler(create)

    async def listed(client: Client, packet: Packet) -> None: ...

    with pytest.raises(UsageError, match=r"handler '.*listed'.*dependencies=\[\.\.\.\].*callable.*'nope'"):
        server.register_handler(listed, dependencies=[Depends("nope")])  # type: ignore[arg-type]

    with pytest.raises(UsageError, match=r"Router\(dependencies=\.\.\.\).*callable.*None"):
        Router(dependencies=[Depends(None)])  # type: ignore[arg-type]  # no handler yet: fails at once


# -- a signal while the lifespan starts ------------------------------------------------------


@pytest.mark.parametrize("how", ["start", "cli"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_slow_lifespan_startup_stops_cleanly(how: str, sig: signal.Signals, tmp_path: Path) -> None:
    """SIGTERM killed the process by the signal (exit -15); both stop it with status 0, logged."""
    log = tmp_path / "lifespan.log"
    port = free_port()
    env = {**os.environ, "LIFESPAN_LOG": str(log), "LIFESPAN_SLOW": "60", "PORT": str(port), "PYTHONPATH": str(ROOT)}
    if how == "cli":
        args = ["-m", "asyncapy", "run", "tests.servers.lifespan_app:server", "--port", str(port)]
    else:
        args = ["tests/servers/lifespan_app.py"]
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (log.exists() and "starting" in log.read_text()):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert "starting" in log.read_text()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "interrupted" in log.read_text()  # the lifespan saw the cancellation (its cleanup ran)
    assert "Stopped before serving" in err and "Serving on" not in err and "Traceback" not in err, err
