"""``server.ini``: AsyncAPY's configuration file, an ``[AsyncAPY]`` section."""

from __future__ import annotations

import configparser
import logging
import os
from collections.abc import Callable
from typing import Any

SECTION = "AsyncAPY"


def _level(text: str) -> int:
    if text.strip().lstrip("-").isdigit():
        return int(text)
    level = logging.getLevelName(text.strip().upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown logging level {text!r}")
    return level


def _encoding(text: str) -> str:
    name = text.strip().lower()
    if name not in ("json", "ziproto"):
        raise ValueError(f"encoding must be json or ziproto, not {text!r}")
    return name


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"expected true or false, not {text!r}")


def _list(text: str) -> list[str]:
    """Comma- or whitespace-separated values: ``10.0.0.0/8, 192.168.1.10``."""
    return text.replace(",", " ").split()


#: Each key AsyncAPY's config file had, plus the newer limits, with its parser.
_KEYS: dict[str, Callable[[str], Any]] = {
    "addr": str.strip,
    "port": int,
    "encoding": _encoding,
    "header_size": int,
    "byteorder": str.strip,
    "timeout": float,
    "logging_level": _level,
    "session_limit": int,
    "max_connections": int,
    "max_packet_size": int,
    "shutdown_timeout": float,
    "max_pending": int,
    "max_streams": int,
    "handler_timeout": float,  # 0: no limit
    "error_details": _boolean,
    "proxy_protocol": _boolean,
    "trusted_proxies": _list,
    # AsyncAPY's read size; asyncio picks its own, so the value is read and ignored.
    "buf": int,
}


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings in ``path``'s ``[AsyncAPY]`` section, parsed to their types.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the section is missing, or a key is unknown or has a bad value.
    """
    parser = configparser.ConfigParser()
    with open(path, encoding="utf-8") as fp:
        parser.read_file(fp)
    if not parser.has_section(SECTION):
        raise ValueError(f"{os.fspath(path)}: no [{SECTION}] section")
    settings: dict[str, Any] = {}
    for key, text in parser.items(SECTION):
        convert = _KEYS.get(key)
        if convert is None:
            known = ", ".join(sorted(_KEYS))
            raise ValueError(f"{os.fspath(path)}: unknown key {key!r} in [{SECTION}]; known keys: {known}")
        try:
            settings[key] = convert(text)
        except ValueError as exc:
            raise ValueError(f"{os.fspath(path)}: bad value for {key!r}: {exc}") from None
    settings.pop("buf", None)
    return settings
