"""``request(..., reply=Model)`` is typed ``Model`` for every client, as mypy sees it."""

from __future__ import annotations

from pathlib import Path

from mypy import api

HERE = Path(__file__).parent
CONFIG = HERE.parent.parent / "mypy.ini"


def test_request_returns_the_reply_model_to_mypy() -> None:
    stdout, stderr, status = api.run(["--strict", "--config-file", str(CONFIG), "--no-incremental", str(HERE / "clients.py")])
    assert status == 0, stdout + stderr


def test_a_wrong_reply_type_is_reported(tmp_path: Path) -> None:
    code = (HERE / "clients.py").read_text(encoding="utf-8") + (
        "\n\ndef wrong(client: Client) -> None:\n"
        "    assert_type(client.request({}, reply=Welcome), Login)\n"
    )
    path = tmp_path / "wrong_clients.py"
    path.write_text(code, encoding="utf-8")
    stdout, stderr, status = api.run(["--strict", "--config-file", str(CONFIG), "--no-incremental", str(path)])
    assert status == 1, stdout + stderr
    assert 'Expression is of type "Welcome", not "Login"' in stdout, stdout
