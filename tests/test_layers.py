"""asyncapy's layers import downwards only, and no two modules import each other.

Every import counts: module level, under ``if TYPE_CHECKING:`` and inside functions.
``LAYERS`` is the one ordered list of the layer folders (bottom first); a module may
import its own layer and the layers below it. Modules directly in ``asyncapy/`` (the
package itself, ``cli``, ``__main__`` and the re-export modules at the documented paths)
are the top layer, ``TOP``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "asyncapy"

TOP = "top"
#: Bottom first. ``ops`` sits above ``serve`` for now (``ops.observe`` subclasses the
#: connection); moving it below is a one-line edit here.
LAYERS: list[str] = ["wire", "model", "shared", "app", "ops", "serve", "docs", "client", "server", "testing", TOP]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(root, path): path for path in sorted(root.rglob("*.py"))}


def layer_of(module: str) -> str:
    """The layer of a module: the folder (or module) right under the package, else ``TOP``."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return TOP


def imports(path: Path, name: str, known: set[str]) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every import of a module of the package in ``path``, wherever it stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import name`: name may be a module of pkg (then that module is imported)
            targets = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known] or [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield node.lineno, target


def graph(root: Path) -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    """The modules of the package and, for each, the modules it imports (with the line of the first import)."""
    files = modules(root)
    known = set(files)
    edges: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        found: dict[str, int] = {}
        for line, target in imports(path, name, known):
            found.setdefault(target, line)
        edges[name] = found
    return files, edges


def layer_violations(root: Path) -> list[str]:
    """One line per import that points to a higher layer, naming the file, the line and both layers."""
    files, edges = graph(root)
    order = {layer: rank for rank, layer in enumerate(LAYERS)}
    unplaced = sorted({p.parent.name for p in files.values() if p.parent != root and p.parent.parent == root} - set(LAYERS))
    problems = [f"asyncapy/{folder}/ is in no layer: add it to LAYERS in tests/test_layers.py" for folder in unplaced]
    for name, targets in edges.items():
        mine = layer_of(name)
        for target, line in sorted(targets.items()):
            theirs = layer_of(target)
            if order[theirs] > order[mine]:
                where = files[name].relative_to(root.parent)
                problems.append(
                    f"{where}:{line} imports {target} (layer {theirs!r}) from layer {mine!r}: "
                    f"a layer imports only itself and those below it ({' < '.join(LAYERS)})"
                )
    return problems


def cycles(root: Path) -> list[list[str]]:
    """Groups of modules that import each other, directly or not (Tarjan's strongly connected components)."""
    _, edges = graph(root)
    # importing pkg.mod runs pkg/__init__.py first: that is not an import written in pkg.mod
    deps = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(deps[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(deps):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_no_import_cycles() -> None:
    found = cycles(PACKAGE)
    assert not found, "import cycles (every import counts, TYPE_CHECKING and function-local too):\n" + "\n".join(
        " <-> ".join(group) for group in found
    )


def test_imports_point_down_the_layers() -> None:
    problems = layer_violations(PACKAGE)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_every_layer_folder_exists() -> None:
    """``LAYERS`` names real folders (or, for ``server``, the module), so a rename cannot make it vacuous."""
    for layer in LAYERS[:-1]:
        assert (PACKAGE / layer).is_dir() or (PACKAGE / f"{layer}.py").is_file(), f"LAYERS names {layer!r}, not in asyncapy/"
    files, edges = graph(PACKAGE)
    assert len(files) > 60 and sum(map(len, edges.values())) > 150, "the import graph is suspiciously small"


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A package shaped like asyncapy, where each kind of import is written once."""
    root = tmp_path / "asyncapy"
    for folder in ("wire", "model", "serve"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "__init__.py").write_text("from .server import Server\n")
    (root / "server.py").write_text("from .serve.conn import Conn\nServer = Conn\n")
    (root / "serve" / "conn.py").write_text("from ..model.packet import Packet\nConn = Packet\n")
    (root / "wire" / "frames.py").write_text("def f():\n    from ..serve import conn\n    return conn\n")
    (root / "model" / "packet.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .peer import Client\nPacket = 1\n"
    )
    (root / "model" / "peer.py").write_text("from . import packet\nfrom .. import __version__\n")
    return root


def test_the_check_sees_local_and_type_checking_imports(toy: Path) -> None:
    problems = layer_violations(toy)
    assert any(p.startswith("asyncapy/wire/frames.py:2 imports asyncapy.serve.conn (layer 'serve') from layer 'wire'") for p in problems), problems
    assert any(p.startswith("asyncapy/model/peer.py:2 imports asyncapy (layer 'top') from layer 'model'") for p in problems), problems
    assert len(problems) == 2, problems
    assert cycles(toy) == [["asyncapy.model.packet", "asyncapy.model.peer"]]


def test_the_check_names_an_unplaced_folder(toy: Path) -> None:
    (toy / "extras").mkdir()
    (toy / "extras" / "thing.py").write_text("")
    assert "asyncapy/extras/ is in no layer: add it to LAYERS in tests/test_layers.py" in layer_violations(toy)
