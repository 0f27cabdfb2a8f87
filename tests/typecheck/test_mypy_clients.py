"""``request(..., reply=Model)`` is typed ``Model`` for every client, as mypy sees it."""

from __future__ import annotations

from pathlib import Path

from . import HERE, run_mypy


def test_request_returns_the_reply_model_to_mypy() -> None:
    output, status = run_mypy(HERE / "clients.py")
    assert status == 0, output


def test_a_wrong_reply_type_is_reported(tmp_path: Path) -> None:
    code = (HERE / "clients.py").read_text(encoding="utf-8") + (
        "\n\ndef wrong(client: Client) -> None:\n"
        "    assert_type(client.request({}, reply=Welcome), Login)\n"
    )
    path = tmp_path / "wrong_clients.py"
    path.write_text(code, encoding="utf-8")
    output, status = run_mypy(path)
    assert status == 1, output
    assert 'Expression is of type "Welcome", not "Login"' in output, output
