"""A tiny web service: ``/health`` says it is up, ``/`` greets. Standard library only."""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    """Answers GET / and GET /health with JSON."""

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/":
            self._send(200, {"message": "hello from webservice"})
        else:
            self._send(404, {"error": "not found"})

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: tests and health probes would fill the log."""

    def _send(self, status: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(host: str = "0.0.0.0", port: int = 8000) -> ThreadingHTTPServer:  # noqa: S104
    """A server bound to ``host:port`` (port 0 picks a free one), not yet serving."""
    return ThreadingHTTPServer((host, port), Handler)


if __name__ == "__main__":
    server = serve(port=int(os.environ.get("PORT", "8000")))
    print(f"listening on port {server.server_address[1]}", flush=True)
    server.serve_forever()
