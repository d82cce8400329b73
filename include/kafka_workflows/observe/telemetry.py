"""The process's telemetry: one Prometheus registry, the units' health, one HTTP endpoint.

A process runs one unit (`kafka-workflows worker --topic ...`, `store-processor`) or several
(`kafka-workflows worker dags/workflows/`); either way it has one `Telemetry` and one port:

- `/metrics`: the registry in Prometheus' text format (prometheus_client's WSGI app);
- `/healthz`: 200 while every unit's loop turned within `stale_after` seconds, else 503;
- `/readyz`: 200 while every unit is ready (see health.py), else 503.

Both probes answer JSON naming each unit and what is wrong with it.

Metric families are registered once per registry (`families(cls)`): a unit rebuilt by its
supervisor, or a second unit of the same kind, gets the same families and counts under its own
labels, instead of a DuplicateTimeseries error. Likewise `unit(name)` returns the same health for a
rebuilt unit, and `collector(cls)` one custom collector.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler, make_wsgi_app

from kafka_workflows.observe.health import UnitHealth

DEFAULT_STALE_AFTER = 300.0  # librdkafka's max.poll.interval.ms: a loop stuck longer has left its group anyway

T = TypeVar("T")
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Telemetry:
    def __init__(self, stale_after: float = DEFAULT_STALE_AFTER) -> None:
        self.registry = CollectorRegistry()
        self.stale_after = stale_after
        self.units: dict[str, UnitHealth] = {}
        self._families: dict[type, Any] = {}
        self._lock = threading.Lock()
        self._served: dict[tuple[str, int], ThreadingWSGIServer] = {}

    def families(self, cls: Callable[[CollectorRegistry], T]) -> T:
        """The one instance of a metric family set `cls(registry)` in this registry."""
        with self._lock:
            found = self._families.get(cls)  # type: ignore[call-overload]
            if found is None:
                found = self._families[cls] = cls(self.registry)  # type: ignore[index]
            return found  # type: ignore[no-any-return]

    def unit(self, name: str) -> UnitHealth:
        """The health of unit `name`, the same one for every instance the supervisor builds."""
        with self._lock:
            found = self.units.get(name)
            if found is None:
                found = self.units[name] = UnitHealth(name)
            return found

    # -- probes ----------------------------------------------------------------------------
    def probe(self, what: str) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            units = dict(self.units)
        states = {name: health.state(self.stale_after) for name, health in sorted(units.items())}
        ok = bool(states) and all(s[what] for s in states.values())
        return ok, {"ok": ok, "units": states}

    def app(self) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
        metrics = make_wsgi_app(self.registry)
        probes = {"/healthz": "alive", "/readyz": "ready"}

        def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path in probes:
                ok, body = self.probe(probes[path])
                data = json.dumps(body).encode()
                start_response("200 OK" if ok else "503 Service Unavailable",
                               [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
                return [data]
            return metrics(environ, start_response)  # type: ignore[no-any-return]

        return app

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Serve /metrics, /healthz and /readyz on `addr:port` (once: a second call is a no-op)."""
        with self._lock:
            if (addr, port) in self._served:
                return
            server = make_server(addr, port, self.app(), ThreadingWSGIServer, handler_class=_SilentHandler)
            self._served[addr, port] = server
        threading.Thread(target=server.serve_forever, name=f"telemetry:{port}", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            servers, self._served = list(self._served.values()), {}
        for server in servers:
            server.shutdown()
            server.server_close()
