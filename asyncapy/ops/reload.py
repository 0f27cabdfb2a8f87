"""``asyncapy run --reload``: restart the server when a ``.py`` file of the app changes.

For development (the ``reload`` extra: watchfiles). This process
imports nothing of the app: it runs ``asyncapy run`` (the same arguments, without
``--reload``) as a child process, watches the app's directory, and on a change stops
the child with SIGINT (it finishes its packets, as on Ctrl-C) and starts a new one. An
app that fails to import leaves the watcher running: fix the file and it starts again.
"""

from __future__ import annotations

from importlib.machinery import PathFinder
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("asyncapy")

#: Milliseconds of quiet after a change before restarting: an editor saving several
#: files (or writing one in steps) causes one restart, not several.
DEBOUNCE_MS = 400


def app_directory(spec: str, cwd: str | None = None) -> Path:
    """The directory to watch for ``MODULE:SERVER``: its top-level package, or the module's directory.

    Found without importing the app, where ``asyncapy run`` looks: the current directory first.
    """
    cwd = cwd or os.getcwd()
    top = spec.partition(":")[0].split(".")[0]
    found = PathFinder.find_spec(top, [cwd, *sys.path]) if top else None
    if found is None or found.origin in (None, "built-in", "frozen"):
        return Path(cwd)
    return Path(found.origin).parent  # a package's __init__.py, or the module itself


def run_reloading(spec: str, child_args: Sequence[str]) -> int:
    """Serve ``asyncapy run CHILD_ARGS`` in a child process, restarted on each change; until a signal."""
    try:
        from watchfiles import PythonFilter, run_process
    except ImportError:
        from ..model.install import install_hint

        print(f"asyncapy: error: --reload needs watchfiles: {install_hint('reload')}", file=sys.stderr)
        return 2
    directory = app_directory(spec)
    command = shlex.join([sys.executable, "-m", "asyncapy", "run", *child_args])
    print(f"asyncapy: watching {directory} for changes to .py files", file=sys.stderr, flush=True)

    def restarting(changes: set[tuple[Any, str]]) -> None:
        names = sorted({os.path.relpath(path, directory) for _, path in changes})
        print(f"asyncapy: {', '.join(names)} changed: restarting", file=sys.stderr, flush=True)

    try:
        run_process(
            directory,
            target=command,
            target_type="command",
            watch_filter=PythonFilter(),
            callback=restarting,
            debounce=DEBOUNCE_MS,
        )
    except KeyboardInterrupt:  # SIGINT, or SIGTERM (watchfiles turns it into one): the child is stopped
        pass
    return 0
