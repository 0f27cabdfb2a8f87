"""How to add an extra to this install, spelled as it was installed.

asyncapy is installed from a path or a git URL, not from an index, so "pip install
'asyncapy[redis]'" would fetch nothing useful. The messages for a missing optional
dependency say instead what works here, read from the install's ``direct_url.json``
(PEP 610): ``pip install -e '/path/to/asyncapy[redis]'`` or
``pip install 'asyncapy[redis] @ git+https://...'``.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any
from urllib.parse import unquote, urlparse

GENERIC = "pip install -e '/path/to/asyncapy[{extra}]' (or 'asyncapy[{extra}] @ git+URL-of-asyncapy')"


def install_hint(extra: str) -> str:
    """The pip command that adds ``extra`` (``"redis"``, ``"reload"``...) to this install."""
    return hint_for(_direct_url(), extra)


def hint_for(origin: dict[str, Any], extra: str) -> str:
    """The pip command for ``extra``, given a PEP 610 ``direct_url.json`` (``{}``: unknown)."""
    url = str(origin.get("url", ""))
    if "vcs_info" in origin:
        vcs = origin["vcs_info"]
        rev = f"@{vcs['requested_revision']}" if vcs.get("requested_revision") else ""
        return f"pip install 'asyncapy[{extra}] @ {vcs.get('vcs', 'git')}+{url}{rev}'"
    if url.startswith("file://") and "dir_info" in origin:
        path = unquote(urlparse(url).path)
        editable = "-e " if origin["dir_info"].get("editable") else ""
        return f"pip install {editable}'{path}[{extra}]'"
    return GENERIC.format(extra=extra)


def _direct_url() -> dict[str, Any]:
    try:
        text = metadata.distribution("asyncapy").read_text("direct_url.json")
        found = json.loads(text) if text else {}
    except (metadata.PackageNotFoundError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
