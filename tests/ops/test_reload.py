"""``asyncapy run --reload``: a change to the app's handler file is served without a manual restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asyncapy.client import Client
from asyncapy.wire.errors import ClientError
from asyncapy.ops.reload import app_directory

from ..procs import ROOT, free_port, stop_process, wait_for_port

APP = '''
from asyncapy import Client, Packet, Server

server = Server("127.0.0.1", {port})


@server.add_handler()
async def version(client: Client, packet: Packet) -> dict:
    return {{"version": {version}}}
'''


def ask(port: int) -> object:
    with Client("127.0.0.1", port, timeout=5) as client:
        return client.request({"which": "version"})["version"]


def test_reload_serves_the_edited_handler(tmp_path: Path) -> None:
    port = free_port()
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    handlers = package / "api.py"
    handlers.write_text(APP.format(port=port, version=1))
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "asyncapy", "run", "shop.api:server", "--reload", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc, timeout=30)
        assert ask(port) == 1
        handlers.write_text(APP.format(port=port, version=2))
        deadline = time.monotonic() + 30
        seen: object = 1
        while seen != 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                seen = ask(port)
            except (ClientError, OSError):
                continue  # restarting
        assert seen == 2
    finally:
        err = stop_process(proc)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "api.py changed: restarting" in err, err
    # The watcher stopped its server: nothing listens any more.
    try:
        ask(port)
    except (ClientError, OSError):
        pass
    else:
        raise AssertionError("the reloaded server outlived the watcher")


def test_app_directory_is_the_top_level_package(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "api.py").write_text("")
    (tmp_path / "single.py").write_text("")
    assert app_directory("shop.api:server", str(tmp_path)) == tmp_path / "shop"
    assert app_directory("single:server", str(tmp_path)) == tmp_path


def test_reload_refuses_workers(capsys: pytest.CaptureFixture[str]) -> None:
    from asyncapy.cli import main

    assert main(["run", "examples.typed_api:server", "--reload", "--workers", "2"]) == 2
    assert "--reload runs one process" in capsys.readouterr().err
