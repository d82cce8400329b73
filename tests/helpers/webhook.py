"""A real HTTP server on loopback for the aggregation tests: a webhook receiver and a CSV file server.

POST /<anything> records the delivery (headers, exact body bytes, arrival time) and answers 200,
or `fail_with` for the next `fail_next` deliveries. GET /files/<name> streams a registered file;
GET /redirect?to=<url> answers 302 to that URL. Every request is recorded in `requests` (method,
path), so a test can tell whether anything reached the server at all.

Sources and callbacks are allow-listed (`[kafka_workflows] allowed_sources`, `allowed_callbacks`,
`allowed_networks`): `allow(monkeypatch)` (or `allow_env()`) allows this server's URL, and its
loopback address, explicitly.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kafka_workflows_airflow.notifiers import SIGNATURE_HEADER, verify


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """Header names are case-insensitive (urllib sends X-Kw-Signature as "X-kw-signature")."""
        return self.headers.get(name.lower())

    def signed_with(self, secret: str, tolerance: float = 300) -> bool:
        """What a receiver checks: the HMAC of "<t>.<body>" and a timestamp within `tolerance` of now."""
        return verify(secret, self.body, self.header(SIGNATURE_HEADER), tolerance)


class WebhookReceiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.lock = threading.Lock()
        self.deliveries: list[Delivery] = []  # every POST, accepted or not
        self.requests: list[tuple[str, str]] = []  # every request: (method, path)
        self.files: dict[str, Path] = {}
        self.fail_next = 0
        self.fail_with = 503

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start_in_thread(self) -> WebhookReceiver:
        threading.Thread(target=self.serve_forever, name="webhook-receiver", daemon=True).start()
        return self

    def serve_file(self, path: Path) -> str:
        self.files[path.name] = path
        return f"{self.url}/files/{path.name}"

    def allow_env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment that allows this server as a source and a callback (loopback included)."""
        env = dict(os.environ if env is None else env)
        host = str(self.server_address[0])
        for option, value in (("ALLOWED_SOURCES", f"{self.url}/files/"), ("ALLOWED_CALLBACKS", f"{self.url}/"),
                              ("ALLOWED_NETWORKS", f"{host}/32")):
            key = f"AIRFLOW__KAFKA_WORKFLOWS__{option}"
            env[key] = f"{env[key]}, {value}" if env.get(key) else value
        return env

    def allow(self, monkeypatch: pytest.MonkeyPatch) -> WebhookReceiver:
        for key, value in self.allow_env({k: v for k, v in os.environ.items()
                                          if k.startswith("AIRFLOW__KAFKA_WORKFLOWS__")}).items():
            monkeypatch.setenv(key, value)
        return self

    def contacted(self) -> bool:
        with self.lock:
            return bool(self.requests)

    def accepted(self, path: str | None = None) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.status == 200 and (path is None or d.path == path)]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: WebhookReceiver
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"{}") -> None:
        self.send_response(status)
        if 300 <= status < 400:  # a failing POST may redirect too: to the `to` query parameter
            target = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("to", [""])[0]
            self.send_header("Location", target)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        with self.server.lock:
            self.server.requests.append(("POST", self.path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            status = 200
            if self.server.fail_next > 0:
                self.server.fail_next -= 1
                status = self.server.fail_with
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.server.deliveries.append(Delivery(self.path, headers, body, time.time(), status))
        self._reply(status)

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests.append(("GET", self.path))
        if self.path.startswith(("/redirect?", "/files/redirect?")):
            target = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("to", [""])[0]
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        name = urllib.parse.urlsplit(self.path).path.removeprefix("/files/")
        path = self.server.files.get(name) if self.path.startswith("/files/") else None
        if path is None or not path.exists():
            self._reply(404, b'{"error": "not found"}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/csv; charset=utf-8")
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        with open(path, "rb") as f:
            shutil.copyfileobj(f, self.wfile, 64 * 1024)
