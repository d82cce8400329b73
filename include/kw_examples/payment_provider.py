"""A fake payment provider: a real HTTP server on loopback, with a switch to make it fail.

POST /charges {"user_id", "amount_cents", "idempotency_key"} -> 201 {"charge_id"} (a repeated
idempotency key returns the first charge, as real providers do); 503 while failing.
POST /admin/failing {"failing": true|false} flips the switch; GET /charges lists the charges.
"""

from __future__ import annotations

import argparse
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class PaymentProvider(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.failing = False
        self.charges: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start_in_thread(self) -> PaymentProvider:
        threading.Thread(target=self.serve_forever, name="payment-provider", daemon=True).start()
        return self


class _Handler(BaseHTTPRequestHandler):
    server: PaymentProvider

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        if self.path == "/charges":
            with self.server.lock:
                self._reply(200, list(self.server.charges.values()))
        else:
            self._reply(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        try:
            body = self._body()
        except json.JSONDecodeError:
            self._reply(400, {"error": "body is not JSON"})
            return
        if self.path == "/admin/failing":
            self.server.failing = bool(body.get("failing"))
            self._reply(200, {"failing": self.server.failing})
        elif self.path == "/charges":
            if self.server.failing:
                self._reply(503, {"error": "payment provider unavailable"})
                return
            key = str(body.get("idempotency_key") or uuid.uuid4())
            with self.server.lock:
                charge = self.server.charges.setdefault(
                    key, {"charge_id": f"ch_{uuid.uuid4().hex[:12]}", **body, "idempotency_key": key})
            self._reply(201, charge)
        else:
            self._reply(404, {"error": f"no route {self.path}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8089)
    args = parser.parse_args()
    server = PaymentProvider(port=args.port)
    print(f"payment provider on {server.url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
