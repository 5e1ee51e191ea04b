"""A local HTTP server on 127.0.0.1 that records the alerts POSTed to it (fixture
`alert_server`), and the fake secrets the alert tests use."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

TOKEN = "123456:SECRET-bot-token-xyz"
CHAT = "-100987654321"


@dataclass
class Received:
    path: str
    body: dict[str, object]


@dataclass
class AlertServer:
    """A local HTTP server that records POSTs and answers with `status` (and `echo`es the path)."""

    port: int
    received: list[Received] = field(default_factory=list)
    status: int = 200
    echo_path: bool = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def alert_server() -> Iterator[AlertServer]:
    server_state = AlertServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            server_state.received.append(Received(self.path, body))
            text = self.path if server_state.echo_path else "ok"
            payload = json.dumps({"ok": server_state.status == 200, "echo": text}).encode()
            self.send_response(server_state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server_state
    httpd.shutdown()
    httpd.server_close()
