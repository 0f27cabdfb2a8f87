"""Build the load generator ``benchmarks/loadgen`` from ``benchmarks/loadgen.c`` on first use.

Shared by ``run.py`` and ``bench_client.py``: ``cc -O2`` (or ``$CC``) when the binary is
missing or older than its source, built aside and renamed so that two runs at once never
see half a file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "loadgen"
LOADGEN_SRC = HERE / "loadgen.c"


def build_loadgen() -> Path | None:
    """The load generator, built when missing or stale; None when there is no C compiler."""
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return LOADGEN
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return None
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        out = Path(tmp) / "loadgen"
        subprocess.run([cc, "-O2", "-Wall", "-o", str(out), str(LOADGEN_SRC)], check=True)
        out.replace(LOADGEN)
    print(f"built {LOADGEN}", file=sys.stderr)
    return LOADGEN
