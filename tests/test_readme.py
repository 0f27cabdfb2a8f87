"""The README and the site's pages run as written: every block, every shell command, every link.

- Each ```python block of README.md and docs/*.md runs alone in a fresh interpreter (as a
  module named ``readme_block``, so ``if __name__ == "__main__":`` stays shut), from an
  empty directory with the repository on ``sys.path``. A block whose first line names a
  file (``# app.py``) is that file of a project: it is written there under that name,
  with the page's file blocks before it beside it, so ``test_app.py`` imports ``app``.
- Each ```sh block runs in bash (``set -eo pipefail``) from the repository's root, with
  ``.venv/bin`` first on ``PATH`` (as after ``source .venv/bin/activate``), and each port
  it names (``127.0.0.1:N``, ``localhost:N``, ``--port N``; 1500 always) rewritten to a
  free port; ``PORT`` is set to the one for 1500. A block whose only command
  is a server, marked by a comment containing ``Ctrl-C``, is started in the background;
  the next ```sh block runs against it, then it gets SIGINT and must exit 0.
  Two commands are shortened, since the test checks the command, not the duration:
  ``scripts/test`` runs one test file (the whole suite would run itself), and
  ``benchmarks/run.py`` runs 1 s rows once. A comment ``# prints {...}`` (or ``# {...}``)
  is checked: the block must print that JSON value on a line of its own.
- A shell block that starts with ``python3 -m venv .venv`` starts *your own project*: it
  and the shell blocks after it in the same ``##`` section run in a new empty directory
  holding the section's file blocks, one after the other, with ``/path/to/asyncapy``
  standing for this repository (a real install into a new virtual environment).
- Every relative link resolves to a file (and its ``#anchor`` to a heading), and every
  repository path in backticks exists.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .procs import ROOT, free_port

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
README_PORT = "1500"
PROJECT_START = "python3 -m venv .venv"
FILE_NAME = re.compile(r"^# ([\w.-]+\.py)\n")
PORT_USE = re.compile(r"(?:127\.0\.0\.1:|localhost:|--port[ =])(\d{4,5})\b")
SERVER_MARK = "Ctrl-C"
REWRITES = [  # (pattern on a command line without its comment, replacement)
    (re.compile(r"^scripts/test\s*$"), "scripts/test tests/wire/test_protocol.py -q"),
    (re.compile(r"^(.*benchmarks/run\.py.*)$"), r"\1 --duration 1 --runs 1"),
]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    section: int  # how many ``##`` headings come before it

    @property
    def id(self) -> str:
        first = next((ln for ln in self.code.splitlines() if ln.strip() and not ln.startswith("#")), "")
        return f"{self.path.relative_to(ROOT)}:{self.line}:{first[:40]}"

    @property
    def file_name(self) -> str | None:
        """``app.py`` for a block that starts ``# app.py``: a file of a project."""
        named = FILE_NAME.match(self.code) if self.lang == "python" else None
        return named[1] if named else None

    @property
    def starts_project(self) -> bool:
        return self.lang in SHELL_LANGS and self.code.lstrip().startswith(PROJECT_START)

    @property
    def is_server(self) -> bool:
        lines = [ln for ln in self.code.splitlines() if ln.strip()]
        return self.lang == "sh" and len(lines) == 1 and SERVER_MARK in lines[0]


SHELL_LANGS = ("sh", "bash", "shell", "console")


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found = []
    for m in re.finditer(r"^```(\w+)\n(.*?)^```", text, flags=re.S | re.M):
        before = re.sub(r"^```.*?^```", "", text[: m.start()], flags=re.S | re.M)
        section = len(re.findall(r"^## ", before, flags=re.M))
        found.append(Block(path, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2), section))
    return found


BLOCKS = {path: blocks(path) for path in DOCS}
PYTHON = [b for path in DOCS for b in BLOCKS[path] if b.lang == "python"]


def projects() -> list[list[Block]]:
    """The shell blocks of each own-project walk-through: from ``python3 -m venv .venv`` to the section's end."""
    found: list[list[Block]] = []
    for path in DOCS:
        shell = [b for b in BLOCKS[path] if b.lang in SHELL_LANGS]
        for start in (b for b in shell if b.starts_project):
            found.append([b for b in shell if b.section == start.section and b.line >= start.line])
    return found


PROJECTS = projects()
IN_PROJECTS = {b for project in PROJECTS for b in project}
SHELL = {path: [b for b in BLOCKS[path] if b.lang in SHELL_LANGS and b not in IN_PROJECTS] for path in DOCS}


def pair_servers(shell: list[Block]) -> list[tuple[Block, Block | None]]:
    """Each shell block alone, or a server block with the block that runs against it (if any)."""
    units: list[tuple[Block, Block | None]] = []
    i = 0
    while i < len(shell):
        if shell[i].is_server:
            units.append((shell[i], shell[i + 1] if i + 1 < len(shell) else None))
            i += 2
        else:
            units.append((shell[i], None))
            i += 1
    return units


def project_files(block: Block) -> list[Block]:
    """The file blocks of ``block``'s page up to it (the files of the project it belongs to)."""
    return [b for b in BLOCKS[block.path] if b.file_name and b.section == block.section and b.line <= block.line]


def test_the_readme_has_blocks_to_run() -> None:
    readme = BLOCKS[ROOT / "README.md"]
    assert sum(b.lang == "python" for b in readme) >= 3 and sum(b.lang in SHELL_LANGS for b in readme) >= 4
    assert len(PYTHON) >= 30 and PROJECTS, "the site's pages lost their examples"
    assert all(b.lang != "console" for path in DOCS for b in BLOCKS[path]), "write ```sh blocks (console prompts are not run)"


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block_runs_alone(block: Block, tmp_path: Path) -> None:
    for file in project_files(block):
        (tmp_path / str(file.file_name)).write_text(file.code, encoding="utf-8")
    script = tmp_path / "block.py"
    script.write_text(block.code, encoding="utf-8")
    code = f"import runpy, sys; sys.path.insert(0, {str(ROOT)!r}); runpy.run_path({str(script)!r}, run_name='readme_block')"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{block.id} failed when run alone:\n{out.stderr[-3000:]}"


def free_ports(*codes: str) -> dict[str, str]:
    """A free port for each port the blocks name (and for 1500, which ``PORT`` stands for)."""
    named = {README_PORT, *(m for code in codes for m in PORT_USE.findall(code))}
    return {port: str(free_port()) for port in named}


def rewrite(code: str, ports: dict[str, str]) -> str:
    code = code.replace("/path/to/asyncapy", str(ROOT))
    code = re.sub(r"\b\d{4,5}\b", lambda m: ports.get(m.group(0), m.group(0)), code)
    lines = []
    for line in code.splitlines():
        command, comment = re.match(r"^(.*?)(\s+#\s.*)?$", line).groups(default="")  # type: ignore[union-attr]
        for pattern, replacement in REWRITES:
            command = pattern.sub(replacement, command)
        lines.append(command + comment)
    return "set -eo pipefail\n" + "\n".join(lines) + "\n"


def shell_env(ports: dict[str, str]) -> dict[str, str]:
    # scripts/test inside a test only reports missing Debian packages, never installs them.
    path = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return dict(os.environ, PATH=path, PORT=ports[README_PORT], PYTHONUNBUFFERED="1", ASYNCAPY_NO_APT="1")


def promised_json(code: str) -> list[object]:
    """The JSON values the block's comments say it prints (``# prints {...}`` or ``# {...}``)."""
    return [json.loads(m) for m in re.findall(r"#\s*(?:prints\s+)?(\{.*\})\s*$", code, flags=re.M)]


def run_shell(block: Block, ports: dict[str, str], cwd: Path = ROOT) -> None:
    out = subprocess.run(
        ["bash", "-c", rewrite(block.code, ports)], cwd=cwd, env=shell_env(ports), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, f"{block.id} failed (exit {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    printed = []
    for line in out.stdout.splitlines():
        try:
            printed.append(json.loads(line))
        except ValueError:
            pass
    for value in promised_json(block.code):
        assert value in printed, f"{block.id}: the README says it prints {value}, it printed:\n{out.stdout[-2000:]}"


def wait_listening(port: int, proc: subprocess.Popen[str], block: Block) -> None:
    deadline = time.monotonic() + 120  # a first scripts/run installs into .venv
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{block.id} exited ({proc.returncode}) before listening on {port}: {proc.communicate()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{block.id} did not listen on port {port}")


UNITS = [unit for path in DOCS for unit in pair_servers(SHELL[path])]


@pytest.mark.parametrize("unit", UNITS, ids=[u[0].id for u in UNITS])
def test_shell_block_runs(unit: tuple[Block, Block | None]) -> None:
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.fail("the README's commands use .venv: run scripts/test (or scripts/run) once to create it")
    run_unit(unit)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("project", PROJECTS, ids=[p[0].id for p in PROJECTS])
def test_own_project_walkthrough_runs(project: list[Block], tmp_path: Path) -> None:
    """Your own project, as the page tells it: a new venv, asyncapy installed from this
    clone with extras, the page's app and test files, pytest, mypy --strict, serve, send."""
    for file in project_files(project[-1]):
        (tmp_path / str(file.file_name)).write_text(file.code, encoding="utf-8")
    assert project_files(project[-1]), f"{project[0].id}: the section has no file blocks (# app.py) to use"
    for unit in pair_servers(project):
        run_unit(unit, tmp_path)


def run_unit(unit: tuple[Block, Block | None], cwd: Path = ROOT) -> None:
    first, then = unit
    ports = free_ports(first.code, then.code if then else "")
    if not first.is_server:
        run_shell(first, ports, cwd)
        return
    listens = PORT_USE.findall(first.code)
    port = int(ports[listens[0] if listens else README_PORT])
    server = subprocess.Popen(
        ["bash", "-c", "exec " + rewrite(first.code, ports).splitlines()[1]],
        cwd=cwd, env=shell_env(ports), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        wait_listening(port, server, first)
        if then is not None:
            run_shell(then, ports, cwd)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)
        try:
            _, err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            _, err = server.communicate()
    assert server.returncode == 0, f"{first.id} did not stop cleanly on Ctrl-C ({server.returncode}):\n{err[-2000:]}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_link_resolves(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):
            continue  # an external address: not fetched (tests run offline)
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    for path in re.findall(r"`((?:asyncapy|examples|tests|benchmarks|docs|scripts|tools|fuzz|\.ci)/[\w./-]*)`", prose):
        if not (ROOT / path).exists():
            broken.append(path)
    assert not broken, f"{doc.name} points to what is not in the repository: {broken}"


def test_the_tutorial_shows_the_files_it_names() -> None:
    """The tutorial's finished service and its tests are the repository's files, whole."""
    shown = [b.code for b in BLOCKS[ROOT / "docs" / "tutorial.md"] if b.lang == "python"]
    for path in ("examples/notes.py", "tests/test_example_notes.py"):
        assert (ROOT / path).read_text(encoding="utf-8") in shown, f"docs/tutorial.md must show {path} as it is"
