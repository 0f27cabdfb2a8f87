"""Validate AsyncAPI documents offline: the official parser (node) and the 3.0.0 JSON Schema."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC_SCHEMA = Path(__file__).resolve().parent / "data" / "asyncapi-3.0.0.schema.json"
VALIDATOR = ROOT / "tools" / "asyncapi-validate"


def parser_available() -> bool:
    """node is installed and ``tools/asyncapi-validate`` has its packages (``npm ci`` ran)."""
    return shutil.which("node") is not None and (VALIDATOR / "node_modules" / "@asyncapi" / "parser").is_dir()


def require_parser() -> None:
    """Fail (never skip) with how to install the parser when it is missing."""
    if not parser_available():
        pytest.fail(
            "the official AsyncAPI parser is missing: install node and npm (apt-get install nodejs npm), then"
            " `(cd tools/asyncapi-validate && npm ci --ignore-scripts)`; scripts/test does both"
        )


def parse_with_official_parser(docs: dict[str, dict[str, Any]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``node validate.mjs`` on every document at once; return code 0 only without errors."""
    paths = []
    for name, doc in docs.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        paths.append(str(path))
    return subprocess.run(
        ["node", str(VALIDATOR / "validate.mjs"), *paths],
        cwd=VALIDATOR,
        capture_output=True,
        text=True,
        timeout=120,
    )


def json_schema_errors(doc: dict[str, Any]) -> list[str]:
    """Where ``doc`` breaks the AsyncAPI 3.0.0 JSON Schema (vendored from ``@asyncapi/specs``)."""
    schema = json.loads(SPEC_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
