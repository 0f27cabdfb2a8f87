"""The two commands: ``scripts/run`` from a fresh clone, ``scripts/test``'s exit status, and
the Debian package list's installer."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from asyncapy.client import Client

from .procs import ROOT, free_port, wait_for_port


def test_scripts_run_sets_itself_up_in_a_fresh_clone(tmp_path: Path) -> None:
    """A clone with no .venv: ``scripts/run`` creates it, installs asyncapy and serves the example."""
    if shutil.which("git") is None:
        pytest.fail("git is missing: apt-get install git")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=60)
    assert not (clone / ".venv").exists()
    port = free_port()
    env = dict(os.environ, PORT=str(port))
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.Popen(
        ["scripts/run"], cwd=clone, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_for_port(port, proc, timeout=240)  # the first run installs asyncapy and its dependencies
        with Client("127.0.0.1", port, timeout=10) as client:
            assert client.request({"kind": "add", "a": 1, "b": 2}) == {"kind": "sum", "result": 3}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert (clone / ".venv" / "bin" / "asyncapy").exists()
    assert f"127.0.0.1:{port}" in err and "Ctrl-C" in err


def test_scripts_test_exits_non_zero_when_tests_fail(tmp_path: Path) -> None:
    failing = tmp_path / "test_failing.py"
    failing.write_text("def test_fails() -> None:\n    assert False\n")
    env = dict(os.environ, ASYNCAPY_NO_APT="1")
    out = subprocess.run(["scripts/test", str(failing), "-q"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "1 failed" in out.stdout, out.stdout + out.stderr


def test_missing_system_packages_are_named_with_the_install_command(tmp_path: Path) -> None:
    listing = tmp_path / "packages.txt"
    listing.write_text("# comment\n\nsh bash-is-there\nno-such-command-xyz pkg-one\nno-such-command-abc pkg-two\nalso-missing-xyz pkg-one\n")
    env = dict(os.environ, ASYNCAPY_NO_APT="1")
    out = subprocess.run([str(ROOT / "scripts" / "install-system-packages"), str(listing)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "install them with: sudo apt-get install pkg-one pkg-two\n" in out.stderr
    assert "bash-is-there" not in out.stderr


def test_every_listed_command_names_a_package() -> None:
    for line in (ROOT / "scripts" / "system-packages.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert len(line.split()) == 2, f"scripts/system-packages.txt: {line!r} is not '<command> <debian-package>'"
