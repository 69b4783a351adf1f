"""An HTTP media host that holds every request until the test opens its gate.

A test that must stop a service "mid-batch" cannot win a race against a fast
machine; a fetch that hangs until told otherwise pins one offset in flight, so
which work is committed at the moment of a kill is known, not hoped for.
"""

from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class GatedSite:
    """Serves files from `root` on 127.0.0.1 once `open()` has been called."""

    def __init__(self, root: Path, hold_s: float = 600.0) -> None:
        self.root = root
        self.gate = threading.Event()
        self.held = threading.Event()  # set once a request is waiting at the gate
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                site.held.set()
                if not site.gate.wait(hold_s):
                    self.send_error(503)
                    return
                path = site.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()
                try:
                    with path.open("rb") as source:
                        shutil.copyfileobj(source, self.wfile)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed while we held it; that is the point

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def open(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> GatedSite:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
