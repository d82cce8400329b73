"""Run `airflow standalone` with this repo's dags/ and plugins/ (stack and end-to-end tests share it).

Its metadata database is Airflow's default SQLite unless `metadata_db` names a Postgres database
(`postgres://…`, as stack/postgres.py gives them); the tests and `./dev up --db postgres` use one.
On SQLite, Airflow's API server can deadlock under load: its audit log
(`api_fastapi/logging/decorators.action_logging`) is an `async def` dependency that commits a sync
session on the event loop, while a sync request holding SQLite's write lock needs that loop for its
own commit. Neither moves until the busy timeout (5 s) fails the audit insert with HTTP 500, and
nothing is created. A longer busy timeout only stalls the whole server longer (60 s was tried).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from stack import reaper

REPO = Path(__file__).resolve().parent.parent
ADMIN = "admin"
COMPONENTS = ("scheduler", "dag-processor", "api-server", "triggerer")


@dataclass
class AirflowStandalone:
    home: Path
    port: int
    kafka_bootstrap: str
    extra_env: dict[str, str] | None = None
    users: dict[str, str] | None = None  # more simple-auth-manager users: name -> role (viewer, user, op, admin)
    metadata_db: str | None = None  # postgres://user@host:port/db for Airflow's metadata; None: SQLite in home
    proc: subprocess.Popen[bytes] | None = None
    # Components started in place of standalone's own (restart_triggerer): name -> process.
    replacements: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _secret(self, name: str) -> str:
        """Secrets shared by all standalone components (a per-process random one breaks task auth)."""
        path = self.home / f".{name}"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text().strip()

    @property
    def password(self) -> str:
        return self._secret("admin-password")

    def password_of(self, user: str) -> str:
        return self.password if user == ADMIN else self._secret(f"{user}-password")

    def env(self) -> dict[str, str]:
        passwords = self.home / "simple_auth_manager_passwords.json"
        self.home.mkdir(parents=True, exist_ok=True)
        roles = {ADMIN: "admin", **(self.users or {})}
        passwords.write_text(json.dumps({user: self.password_of(user) for user in roles}))
        (self.home / "imports").mkdir(exist_ok=True)
        env = {
            **os.environ,
            # standalone starts its components as `airflow ...` subprocesses, found on PATH
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            # This checkout's core and plugins, also when another checkout (a git worktree) is installed
            # in the venv in editable mode.
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "include"), str(REPO / "plugins"),
                                                      os.environ.get("PYTHONPATH", "")) if p),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in roles.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": self._secret("secret-key"),
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt-secret"),
            # React within ~0.1 s instead of ~1 s when a deferred task's trigger fires (bench/completion_latency.py).
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(
                {"conn_type": "kafka", "extra": {"bootstrap.servers": self.kafka_bootstrap}}),
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            # The HMAC secret of contacts_import's webhook notifications is this connection's password.
            "AIRFLOW_CONN_KW_WEBHOOK": json.dumps({"conn_type": "http", "password": self._secret("webhook-secret")}),
            # Sources are allow-listed: the local stack imports CSVs from <home>/imports/ (.state/airflow/imports/
            # for ./dev up); its secrets next to it are not readable through a split.
            "AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_SOURCES": f"file://{self.home / 'imports'}/",
            **self._metadata_env(),
            **(self.extra_env or {}),
        }
        return env

    def _metadata_env(self) -> dict[str, str]:
        """Airflow's metadata on Postgres through psycopg 3, sync and async (Airflow would pick asyncpg)."""
        if self.metadata_db is None:
            return {}
        scheme, sep, rest = self.metadata_db.partition("://")
        if scheme not in ("postgres", "postgresql") or not sep:
            raise ValueError("metadata_db must be a postgres:// URI")
        return {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg://{rest}",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": f"postgresql+psycopg_async://{rest}"}

    def start(self, timeout: float = 240.0) -> AirflowStandalone:
        env = self.env()
        airflow = str(Path(sys.executable).parent / "airflow")
        log = open(self.home / "standalone.log", "ab")  # noqa: SIM115 - closed after Popen dup'ed it
        self.proc = subprocess.Popen([airflow, "standalone"], env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        reaper.watch(self.proc.pid)  # stopped with whoever started it, however that ends
        log.close()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"airflow standalone exited ({self.proc.returncode}); see {self.home}/standalone.log")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=3) as r:
                    health = json.load(r)
                if all(health.get(c, {}).get("status") == "healthy" for c in ("metadatabase", "scheduler")) \
                        and health.get("triggerer", {}).get("status") == "healthy":
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(2)
        raise RuntimeError(f"airflow standalone not healthy at {self.url} within {timeout:.0f}s; "
                           f"see {self.home}/standalone.log")

    def components_down(self) -> list[str]:
        """The components whose process is gone: `airflow standalone` does not restart one that exits
        (its scheduler exits when its metadata database goes away, for one)."""
        import psutil  # Airflow's dependency

        if self.proc is None or self.proc.poll() is not None:
            return ["standalone", *COMPONENTS]
        running: set[str] = set()
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.proc.pid).children():
                with contextlib.suppress(psutil.Error):
                    if child.status() != psutil.STATUS_ZOMBIE:
                        # `airflow scheduler`, …; the API server retitles itself `airflow api_server -- host:…`
                        words = " ".join(child.cmdline()).replace("_", "-").split()
                        running.update(c for c in COMPONENTS if c in words)
        running.update(name for name, proc in self.replacements.items() if proc.poll() is None)
        return [c for c in COMPONENTS if c not in running]

    def restart_triggerer(self, health_check_threshold: float = 15.0) -> None:
        """SIGKILL the triggerer (its process tree: the supervisor and its trigger runner, as a crash or an
        OOM kill of the pod would) and start `airflow triggerer` in its place, with this standalone's
        environment. `airflow standalone` does not restart a component, so the new one is a process of
        ours (stopped by stop()). It takes over the dead one's triggers once the dead one's last heartbeat
        is `health_check_threshold` seconds old (Airflow's default: 30)."""
        import psutil  # Airflow's dependency

        assert self.proc is not None, "start() first"
        victims: list[psutil.Process] = []
        old = self.replacements.pop("triggerer", None)
        if old is not None and old.poll() is None:
            victims.append(psutil.Process(old.pid))
        else:
            for child in psutil.Process(self.proc.pid).children():
                with contextlib.suppress(psutil.Error):
                    if "triggerer" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                        victims.append(child)
        assert victims, f"no triggerer running under airflow standalone at {self.url}"
        tree = [p for v in victims for p in (v, *v.children(recursive=True))]
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(tree, timeout=30)
        if old is not None:
            reaper.unwatch(old.pid)
        env = {**self.env(), "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(health_check_threshold)}
        log = open(self.home / "triggerer.log", "ab")  # noqa: SIM115 - closed after Popen dup'ed it
        proc = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "triggerer"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        reaper.watch(proc.pid)
        self.replacements["triggerer"] = proc

    def ensure_running(self) -> None:
        """Raise naming the components that exited, so a test waiting on the stack fails now, not at its timeout."""
        down = self.components_down()
        if down:
            raise RuntimeError(f"airflow standalone at {self.url}: {', '.join(down)} exited; "
                               f"see {self.home}/standalone.log")

    def token(self, user: str = ADMIN) -> str:
        body = json.dumps({"username": user, "password": self.password_of(user)}).encode()
        req = urllib.request.Request(f"{self.url}/auth/token", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        # Generous: a just-started API server on a loaded machine was seen to answer nothing for 11 s.
        with urllib.request.urlopen(req, timeout=60) as r:
            return str(json.load(r)["access_token"])

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM standalone's process group, then SIGKILL whatever of its tree outlived `timeout`.

        The tree is taken first: a component that left the group, or was orphaned when standalone
        exited before it, would otherwise run on (a scheduler was seen to).
        """
        for replacement in self.replacements.values():
            reaper.stop_session(replacement, timeout)
        self.replacements.clear()
        if self.proc is None or self.proc.poll() is not None:
            return
        import psutil  # Airflow's dependency; the stack never runs without Airflow installed

        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        reaper.stop_session(self.proc, timeout)
        _, leftovers = psutil.wait_procs(tree, timeout=10)  # a component that left the session
        for leftover in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
