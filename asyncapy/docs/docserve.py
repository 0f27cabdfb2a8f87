"""``asyncapy docs --serve``: the page over HTTP (the standard library's server), until a signal."""

from __future__ import annotations

import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


def serve_page(page: str, document: str, host: str, port: int) -> None:
    """Serve ``page`` at ``/`` and ``document`` at ``/asyncapi.json`` until SIGINT or SIGTERM."""
    files = {
        "/": (page.encode(), "text/html; charset=utf-8"),
        "/asyncapi.json": (document.encode(), "application/json"),
    }
    files["/index.html"] = files["/"]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            found = files.get(self.path.split("?", 1)[0])
            if found is None:
                self.send_error(404)
                return
            body, kind = found
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
            pass

    httpd = ThreadingHTTPServer((host, port), Handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    print(f"Serving the API docs on http://{host}:{httpd.server_port}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        httpd.server_close()
