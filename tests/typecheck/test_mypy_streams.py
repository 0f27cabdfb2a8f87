"""Streaming handlers and ``stream(..., item=Model)`` as mypy sees them (DESIGN §9)."""

from __future__ import annotations

import re
from pathlib import Path

from . import HERE, run_mypy


def test_streaming_code_passes_strict_mypy() -> None:
    output, status = run_mypy(HERE / "streams.py")
    assert status == 0, output


def test_the_items_of_a_stream_are_revealed_as_the_item_model(tmp_path: Path) -> None:
    code = (HERE / "streams.py").read_text(encoding="utf-8") + (
        "\n\nasync def revealed(client: AsyncClient) -> None:\n"
        "    async for tick in client.stream(Watch(symbol='A'), item=Tick):\n"
        "        reveal_type(tick)\n"
    )
    path = tmp_path / "revealed_streams.py"
    path.write_text(code, encoding="utf-8")
    output, _ = run_mypy(path)
    assert 'Revealed type is "revealed_streams.Tick"' in output, output


def test_the_items_of_a_blocking_stream_are_revealed_as_the_item_model(tmp_path: Path) -> None:
    code = (HERE / "streams.py").read_text(encoding="utf-8") + (
        "\n\ndef revealed(client: BlockingClient) -> None:\n"
        "    for tick in client.stream(Watch(symbol='A'), item=Tick):\n"
        "        reveal_type(tick)\n"
        "    for item in client.stream({'symbol': 'A'}):\n"
        "        reveal_type(item)\n"
    )
    path = tmp_path / "revealed_blocking_streams.py"
    path.write_text(code, encoding="utf-8")
    output, _ = run_mypy(path)
    assert 'Revealed type is "revealed_blocking_streams.Tick"' in output, output
    assert re.search(r'Revealed type is "(builtins\.)?dict\[(builtins\.)?str, Any\]"', output), output
