"""The sidecar's HTTP endpoint: /metrics for Prometheus, /healthz and /readyz for the kubelet.

A stdlib server in a thread: three paths do not justify a web framework in every pod.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

# A scrape or probe that has not sent its request (or read the answer) by then is cut off: the
# port is reachable from the pod network, and each open connection holds a thread.
REQUEST_TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 32  # more at once are closed at accept: the kubelet and Prometheus need few


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``MAX_CONNECTIONS`` of them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def start_http(
    host: str,
    port: int,
    registry: CollectorRegistry,
    healthy: Callable[[], bool],
    ready: Callable[[], bool],
    request_timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> ThreadingHTTPServer:
    """Serve until ``shutdown()``; returns the server (its port may have been 0)."""

    class Handler(BaseHTTPRequestHandler):
        timeout = request_timeout  # the socket timeout of each read and write of a connection

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._probe(healthy())
            elif self.path == "/readyz":
                self._probe(ready())
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _probe(self, ok: bool) -> None:
            self._send(200 if ok else 503, b"ok\n" if ok else b"not ready\n")

        def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes every few seconds would drown the sidecar's own log."""

    server = BoundedHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
