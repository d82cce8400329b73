"""A real schema registry: Apicurio Registry 3.x, its Confluent-compatible API at `/apis/ccompat/v7`.

`ensure_app()` asks Maven (stack/registry/pom.xml) for `io.apicurio:apicurio-registry-app` (classifier
`all`, a ready Quarkus fast-jar as a tar.gz) once and unpacks it into `.state/registry/app`;
`SchemaRegistry` runs `java -jar quarkus-run.jar` with a Java 21+ (Apicurio needs it; the machine's
default may be 17: `find_java()` looks for one), on loopback for both its HTTP and management servers
(the latter binds 0.0.0.0:9000 otherwise), in-memory storage, waits until it answers, sets the global
compatibility to BACKWARD (Confluent's default; Apicurio's is NONE), and stops it with SIGTERM. Its
session is handed to stack/reaper.py, so a killed runner leaves nothing behind. Standard library only.

    registry = SchemaRegistry(dir, port).start()   registry.url -> the Confluent-compatible base URL
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from stack import reaper
from stack.broker import free_port

REPO = Path(__file__).resolve().parent.parent
POM = REPO / "stack" / "registry" / "pom.xml"
DOWNLOAD = REPO / ".state" / "registry" / "download"
APP = REPO / ".state" / "registry" / "app"
_STAMP = APP / ".pom-stamp"
MIN_JAVA = 21
CCOMPAT = "/apis/ccompat/v7"


class RegistryError(RuntimeError):
    pass


def _java_major(java: str) -> int:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return 0
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else 0


def find_java() -> str:
    """A `java` of version 21 or later: $KW_REGISTRY_JAVA, $JAVA_HOME, PATH, then /usr/lib/jvm/*."""
    candidates = []
    if os.environ.get("KW_REGISTRY_JAVA"):
        candidates.append(os.environ["KW_REGISTRY_JAVA"])
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if shutil.which("java"):
        candidates.append(str(shutil.which("java")))
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates += [str(p / "bin" / "java") for p in sorted(jvm.iterdir(), reverse=True)]
    seen = []
    for java in candidates:
        if java in seen or not Path(java).exists():
            continue
        seen.append(java)
        if _java_major(java) >= MIN_JAVA:
            return java
    raise RegistryError(
        f"the schema registry (Apicurio Registry 3) needs Java {MIN_JAVA} or later; none found "
        f"(tried {', '.join(seen) or 'nothing'}): install one (e.g. 'apt-get install openjdk-21-jre-headless') "
        "or point KW_REGISTRY_JAVA at its java")


def ensure_app() -> Path:
    """Resolve and unpack the registry with Maven unless the cached copy matches the POM."""
    stamp = POM.read_bytes()
    if _STAMP.exists() and _STAMP.read_bytes() == stamp and (APP / "quarkus-run.jar").exists():
        return APP
    if shutil.which("mvn") is None:
        raise RegistryError("Maven is needed to resolve the schema registry (mvn not on PATH)")
    shutil.rmtree(DOWNLOAD, ignore_errors=True)
    cmd = ["mvn", "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={DOWNLOAD}", "-DincludeScope=runtime"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    archives = list(DOWNLOAD.glob("apicurio-registry-app-*-all.tar.gz"))
    if result.returncode != 0 or not archives:
        raise RegistryError("Maven could not resolve the schema registry:\n"
                            f"{result.stdout[-4000:]}{result.stderr[-4000:]}")
    shutil.rmtree(APP, ignore_errors=True)
    APP.mkdir(parents=True)
    with tarfile.open(archives[0]) as tar:
        tar.extractall(APP, filter="data")
    shutil.rmtree(DOWNLOAD, ignore_errors=True)
    _STAMP.write_bytes(stamp)
    return APP


def _request(url: str, method: str = "GET", body: object = None, timeout: float = 5.0) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


class SchemaRegistry:
    """One Apicurio Registry on loopback, in-memory: it starts empty every time."""

    def __init__(self, data_dir: Path, port: int = 8081, management_port: int | None = None,
                 heap: str = "256m", compatibility: str = "BACKWARD") -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.management_port = management_port or free_port()
        self.heap = heap
        self.compatibility = compatibility
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The Confluent-compatible API: what confluent-kafka's SchemaRegistryClient is given."""
        return self.base + CCOMPAT

    @property
    def log_file(self) -> Path:
        return self.data_dir / "registry.log"

    def start(self, timeout: float = 120.0) -> SchemaRegistry:
        app = ensure_app()
        java = find_java()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            java, f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={self.port}",
            "-Dquarkus.management.host=127.0.0.1", f"-Dquarkus.management.port={self.management_port}",
            "-Dquarkus.log.console.enable=false", "-Dquarkus.log.file.enable=true",
            f"-Dquarkus.log.file.path={self.log_file}",
            "-jar", str(app / "quarkus-run.jar"),
        ]
        out = open(self.data_dir / "stdout.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, cwd=self.data_dir, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        reaper.watch(self.proc.pid)
        out.close()
        self._wait_ready(timeout)
        _request(self.url + "/config", "PUT", {"compatibility": self.compatibility})
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RegistryError(f"the schema registry exited with code {self.proc.returncode}; "
                                    f"see {self.data_dir / 'stdout.log'} and {self.log_file}")
            try:
                _request(self.url + "/subjects", timeout=2)
                return
            except (OSError, urllib.error.URLError, ValueError):
                time.sleep(0.3)
        raise RegistryError(f"the schema registry did not answer on {self.url} within {timeout:.0f}s; "
                            f"see {self.log_file}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        reaper.stop_session(self.proc, timeout)

    def __enter__(self) -> SchemaRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a schema registry (Apicurio Registry) on loopback.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("app", help="resolve and unpack the registry with Maven (cached)")
    sub.add_parser("java", help="print the Java 21+ the registry runs on")
    run = sub.add_parser("run", help="run a registry in the foreground until Ctrl-C")
    run.add_argument("--port", type=int, default=8081)
    run.add_argument("--dir", type=Path, default=REPO / ".state" / "registry" / "run")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "app":
            print(ensure_app())
            return 0
        if args.cmd == "java":
            print(find_java())
            return 0
        registry = SchemaRegistry(args.dir, port=args.port).start()
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"schema registry is up on {registry.url}; Ctrl-C stops it", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        registry.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
