"""A real trace backend on loopback: Jaeger (v2, the OpenTelemetry-Collector-based `jaeger` binary).

`ensure_binary()` builds `github.com/jaegertracing/jaeger/cmd/jaeger` at VERSION from the Go
module proxy with the machine's Go toolchain, in a module of its own under `.state/jaeger/build`
(`go install pkg@version` refuses Jaeger's module: its go.mod has a replace directive, which this
module repeats), and caches the binary in `.state/jaeger/<VERSION>/jaeger`: a few minutes the first
time, nothing after. `Jaeger(folder).start()` runs it with in-memory storage on free loopback ports:

    otlp_grpc  OTLP/gRPC receiver  (OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<otlp_grpc>)
    otlp_http  OTLP/HTTP receiver
    ui         the UI and its query API: /api/traces/<trace id>, /api/traces?service=...

    .venv/bin/python -m stack.jaeger build      the binary's path (built when missing)
    .venv/bin/python -m stack.jaeger run        serve in the foreground (ports printed)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from stack import reaper
from stack.broker import free_port
from stack.wait import wait_for

REPO = Path(__file__).resolve().parents[1]
VERSION = "v1.75.0"  # the Jaeger module release (its cmd/jaeger is Jaeger v2)
MODULE = "github.com/jaegertracing/jaeger"
STATE = REPO / ".state" / "jaeger"
# Jaeger's own go.mod replaces sarama; a main module must repeat it for the build to match theirs.
GO_MOD = """module kafkaworkflows.local/jaeger

go 1.24

replace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0
"""

CONFIG = """service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: "127.0.0.1:{ui}"
    grpc:
      endpoint: "127.0.0.1:{query_grpc}"
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  healthcheckv2:
    use_v2: true
    http:
      endpoint: "127.0.0.1:{health}"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "127.0.0.1:{otlp_grpc}"
      http:
        endpoint: "127.0.0.1:{otlp_http}"
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


class JaegerError(RuntimeError):
    pass


def binary_path() -> Path:
    return STATE / VERSION / "jaeger"


def ensure_binary() -> Path:
    """The cached binary, built from the Go module proxy when missing."""
    binary = binary_path()
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise JaegerError("Go is needed to build Jaeger (the trace backend of `./dev up --tracing` and the "
                          "tracing test): install Go 1.24+ or put it on PATH")
    build = STATE / "build"
    build.mkdir(parents=True, exist_ok=True)
    (build / "go.mod").write_text(GO_MOD)
    (build / "go.sum").touch()
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-trimpath", "GOTOOLCHAIN": "local"}
    print(f"[setup] building Jaeger {VERSION} from its Go module (a few minutes the first time)", file=sys.stderr,
          flush=True)
    for step in (["get", f"{MODULE}/cmd/jaeger@{VERSION}"],
                 ["build", "-o", str(binary.with_suffix(".tmp")), f"{MODULE}/cmd/jaeger"]):
        done = subprocess.run([go, *step], cwd=build, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise JaegerError(f"go {' '.join(step[:1])} of Jaeger {VERSION} failed:\n{done.stderr[-3000:]}")
    binary.with_suffix(".tmp").rename(binary)
    return binary


class Jaeger:
    def __init__(self, folder: Path, *, otlp_grpc: int | None = None, otlp_http: int | None = None,
                 ui: int | None = None) -> None:
        self.folder = folder
        self.ports = {"otlp_grpc": otlp_grpc or free_port(), "otlp_http": otlp_http or free_port(),
                      "ui": ui or free_port(), "query_grpc": free_port(), "health": free_port()}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def otlp_endpoint(self) -> str:
        """OTEL_EXPORTER_OTLP_ENDPOINT for OTLP/gRPC (the OpenTelemetry SDK's default protocol)."""
        return f"http://127.0.0.1:{self.ports['otlp_grpc']}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['ui']}"

    def otel_env(self, service: str) -> dict[str, str]:
        """The standard OTEL_* variables that send a process's spans here."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": service, "OTEL_BSP_SCHEDULE_DELAY": "500"}

    def start(self, timeout: float = 60.0) -> Jaeger:
        binary = ensure_binary()
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "jaeger.yaml"
        config.write_text(CONFIG.format(**self.ports))
        log = (self.folder / "jaeger.log").open("ab")
        self.proc = subprocess.Popen([str(binary), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        reaper.watch(self.proc.pid)
        wait_for(self._ready, timeout, f"Jaeger on {self.ui_url}", interval=0.3, alive=self._alive)
        return self

    def _alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = (self.folder / "jaeger.log").read_text(errors="replace")[-2000:]
            raise JaegerError(f"Jaeger exited ({self.proc.returncode}):\n{tail}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['health']}/status", timeout=2) as response:
                if response.status != 200:
                    return False
            with urllib.request.urlopen(f"{self.ui_url}/api/services", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    # -- the query API -------------------------------------------------------------------
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.ui_url}{path}", timeout=10) as response:
            return json.loads(response.read())

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """The trace (Jaeger's JSON: spans, processes) or None while it is not there."""
        try:
            data = self.get(f"/api/traces/{trace_id}").get("data") or []
        except OSError:
            return None
        return data[0] if data else None

    def services(self) -> list[str]:
        return list(self.get("/api/services").get("data") or [])

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        reaper.stop_session(self.proc, timeout)
        self.proc = None

    def __enter__(self) -> Jaeger:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build the binary when missing; print its path")
    run = sub.add_parser("run", help="serve in the foreground until Ctrl-C")
    run.add_argument("--dir", type=Path, default=STATE / "data")
    run.add_argument("--otlp-grpc-port", type=int, default=4317)
    run.add_argument("--otlp-http-port", type=int, default=4318)
    run.add_argument("--ui-port", type=int, default=16686)
    args = parser.parse_args()
    if args.cmd == "build":
        print(ensure_binary())
        return 0
    jaeger = Jaeger(args.dir, otlp_grpc=args.otlp_grpc_port, otlp_http=args.otlp_http_port, ui=args.ui_port).start()
    print(f"Jaeger UI {jaeger.ui_url}  OTLP/gRPC {jaeger.otlp_endpoint}", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        jaeger.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
