"""``asyncapy docs``: the page renders offline in a real headless Chromium; ``--serve`` serves it."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from asyncapy.cli import load_server
from asyncapy.docs.docspage import example, render

from ..procs import ROOT, free_port

# The page must make no request of its own: nothing loaded, no script, no style sheet outside.
EXTERNAL = re.compile(r"<script|<link|<img|<iframe|@import|url\(|\bsrc=|href=\"(?!#)", re.I)

# innerText of every operation and of the error codes, put in the DOM for --dump-dom to print.
READ_TEXT = """<script>
const read = {operations: {}, errors: document.getElementById("errors").innerText};
for (const op of document.querySelectorAll("article.operation")) read.operations[op.id] = op.innerText;
document.body.innerHTML = "";
const out = document.createElement("pre");
out.id = "rendered";
out.textContent = JSON.stringify(read);
document.body.appendChild(out);
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("these tests need Chromium: apt-get install -y chromium (Debian), listed in scripts/system-packages.txt")


def headless(*args: str) -> subprocess.CompletedProcess[str]:
    """Chromium offline: every host name resolves to nothing, every proxy is a closed port."""
    cmd = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def write_page(spec: str, path: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "asyncapy", "docs", spec, "-o", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return path.read_text(encoding="utf-8")


def rendered_text(page: str, tmp_path: Path) -> dict[str, Any]:
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", READ_TEXT + "</body>"), encoding="utf-8")
    out = headless("--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="rendered">(.*?)</pre>', out.stdout, re.S)
    assert found is not None, out.stderr[-2000:]
    text = found[1].replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    result: dict[str, Any] = json.loads(text)
    return result


@pytest.mark.parametrize("spec", ["examples.typed_api:server", "examples.filters:server", "tests.servers.observed:server"])
def test_every_operation_renders_offline(spec: str, tmp_path: Path) -> None:
    page = write_page(spec, tmp_path / "api.html")
    assert EXTERNAL.search(page) is None, EXTERNAL.search(page)
    doc = load_server(spec).asyncapi()
    read = rendered_text(page, tmp_path)
    assert len(read["operations"]) == len(doc["operations"])
    for op_id, op in doc["operations"].items():
        text = read["operations"][f"op-{op_id}"]
        assert op["x-asyncapy-handler"] in text and f"group {op['x-asyncapy-group']}" in text, text
        assert "REQUEST" in text and "REPLY" in text and "example request" in text, text  # h4s are uppercased by CSS
        for flt in op["x-asyncapy-filters"]:
            assert flt["description"] in text, text
        if not op["x-asyncapy-filters"]:
            assert "none: every packet that validates" in text
        if op.get("summary"):
            assert op["summary"] in text
        if "reply" in op:
            assert "example reply" in text
        assert "on the wire (JSON)" in text and "b'\\x00\\x00" in text  # the example packet, framed
    codes = doc["components"]["messages"]["error"]["payload"]["properties"]["error"]["enum"]
    assert codes and all(code in read["errors"] for code in codes)


def test_typed_api_examples_are_the_models(tmp_path: Path) -> None:
    """The example request of ``add`` is an Add packet, rendered with its fields."""
    page = write_page("examples.typed_api:server", tmp_path / "api.html")
    text = rendered_text(page, tmp_path)["operations"]["op-add"]
    assert '"kind": "add"' in text and '"a": 0' in text and '"b": 0' in text
    assert '"result": 0' in text  # the Sum reply


def test_screenshot(tmp_path: Path) -> None:
    """Chromium lays it out and paints it (docs/api-page.png, shown in docs/schema.md, is made the same way)."""
    page = tmp_path / "api.html"
    write_page("examples.typed_api:server", page)
    shot = tmp_path / "api.png"
    out = headless("--window-size=1280,1400", f"--screenshot={shot}", page.as_uri())
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", out.stderr[-2000:]
    assert shot.stat().st_size > 20_000  # a blank page is a few kB


def test_examples_validate_against_their_models() -> None:
    server = load_server("examples.typed_api:server")
    doc = server.asyncapi()
    schemas = doc["components"]["schemas"]
    from examples.typed_api import Add, Circle, Ping

    for model in (Add, Circle, Ping):
        model.model_validate(example(schemas[model.__name__], schemas))


def test_render_escapes_names() -> None:
    doc = {"info": {"title": "<b>x</b>"}, "operations": {"a<b": {"title": "a<b", "summary": "<script>"}}}
    page = render(doc)
    assert "<b>x</b>" not in page and "<script>" not in page and "&lt;script&gt;" in page


def test_serve(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "asyncapy", "docs", "examples.typed_api:server", "--serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as reply:
                    page = reply.read().decode()
                    kind = reply.headers["Content-Type"]
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/asyncapi.json", timeout=5) as reply:
            doc = json.loads(reply.read())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert kind.startswith("text/html") and page == write_page("examples.typed_api:server", tmp_path / "api.html")
    assert set(doc["operations"]) == {"ping", "add", "area", "hello"}
    assert proc.returncode == 0, err
