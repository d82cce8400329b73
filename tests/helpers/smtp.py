"""A minimal SMTP sink on loopback (no TLS, no auth): enough for smtplib to deliver, and it keeps every mail."""

from __future__ import annotations

import email
import socketserver
import threading
from email.message import Message


class SmtpSink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Session)
        self.messages: list[tuple[str, list[str], Message]] = []  # (mail from, recipients, message)
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start_in_thread(self) -> SmtpSink:
        threading.Thread(target=self.serve_forever, name="smtp-sink", daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Session(socketserver.StreamRequestHandler):
    server: SmtpSink

    def _send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self._send("220 localhost kw-test SMTP sink")
        sender, recipients = "", []
        while line := self.rfile.readline():
            command = line.decode("utf-8", "replace").strip()
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self._send("250-localhost")
                self._send("250 8BITMIME")
            elif verb == "MAIL":
                sender, recipients = command.split(":", 1)[1].strip(" <>"), []
                self._send("250 OK")
            elif verb == "RCPT":
                recipients.append(command.split(":", 1)[1].strip(" <>"))
                self._send("250 OK")
            elif verb == "DATA":
                self._send("354 end with <CRLF>.<CRLF>")
                lines = []
                while (data := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(data[1:] if data.startswith(b"..") else data)
                with self.server.lock:
                    self.server.messages.append((sender, recipients, email.message_from_bytes(b"".join(lines))))
                self._send("250 OK queued")
            elif verb == "QUIT":
                self._send("221 bye")
                return
            else:  # HELO, RSET, NOOP, ...
                self._send("250 OK")
