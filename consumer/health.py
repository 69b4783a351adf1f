"""`/healthz`, `/readyz` and `/metrics` for Kubernetes probes and Prometheus.

- `/healthz`: the process is up and its polling loop (and the decisions loop)
  has not died (liveness).
- `/readyz`: the model is loaded, the loop is running, the broker answers and
  the bank of known fakes has caught up with its topic (`bank_caught_up`)
  (readiness: take traffic, count towards the group).
- `/metrics`: the service's Prometheus registry.

A plain `ThreadingHTTPServer` on a daemon thread: three tiny endpoints do not
justify a web framework.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumer.metrics import Metrics

Check = Callable[[], dict[str, bool]]


class HealthServer:
    def __init__(
        self, host: str, port: int, metrics: Metrics, *, live: Check, ready: Check
    ) -> None:
        handler = _handler(metrics, live, ready)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(metrics: Metrics, live: Check, ready: Check) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(HTTPStatus.OK, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                checks = (live if path == "/healthz" else ready)()
                status = HTTPStatus.OK if all(checks.values()) else HTTPStatus.SERVICE_UNAVAILABLE
                body = json.dumps({"ok": status == HTTPStatus.OK, "checks": checks}).encode()
                self._reply(status, body, "application/json")
            else:
                self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

        def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds are not worth a log line

    return Handler
