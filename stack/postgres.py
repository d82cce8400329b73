"""A real PostgreSQL server on loopback, from the machine's binaries (Debian's `postgresql`).

`Postgres(data_dir).start()` runs `initdb` once (trust authentication for loopback, a user
`kw`), starts `postgres` on a free port with its socket inside the data folder, creates the
database, and `url()` names it as an Airflow connection URI (`postgres://kw@127.0.0.1:PORT/DB`),
the form `AIRFLOW_CONN_KW_EXAMPLES_DB` takes. Postgres refuses to run as root, so when we are
root the server runs as the `postgres` system user the Debian package creates, and its data
folder must be one that user can reach (`scratch_dir()`: under the system's temp folder, not
a checkout in root's home). `./dev setup` installs the package; a missing server is an error
here, never a skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stack import reaper
from stack.broker import free_port
from stack.wait import wait_for

USER = "kw"


class PostgresError(RuntimeError):
    pass


def bindir() -> Path:
    """The newest installed server's bin folder (`KW_PG_BINDIR` overrides)."""
    if os.environ.get("KW_PG_BINDIR"):
        return Path(os.environ["KW_PG_BINDIR"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).parent
    raise PostgresError("no PostgreSQL server found (/usr/lib/postgresql/*/bin/postgres): run ./dev setup, "
                        "or 'apt-get install -y postgresql', or set KW_PG_BINDIR")


def scratch_dir(prefix: str) -> Path:
    """A new folder the server's user can reach, for a throwaway data folder inside it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


@contextmanager
def scratch_server(prefix: str) -> Iterator[Postgres]:
    """A throwaway server on a free port, in a scratch folder removed when it stops."""
    data = scratch_dir(prefix)
    server = Postgres(data / "data").start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


class Postgres:
    """One server: `start()`, `url()`, `stop()` (fast shutdown) or `kill()` (SIGKILL)."""

    def __init__(self, data_dir: Path, port: int | None = None, database: str = "kw_examples",
                 log_file: Path | None = None) -> None:
        self.data_dir, self.port, self.database = data_dir, port or free_port(), database
        self.log_file = log_file or data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._bin = bindir()
        # Postgres will not run as root: run it as the package's system user.
        self._user = "postgres" if os.geteuid() == 0 else None

    def url(self, database: str | None = None) -> str:
        return f"postgres://{USER}@127.0.0.1:{self.port}/{database or self.database}"

    def _run(self, *cmd: str) -> None:
        done = subprocess.run(cmd, user=self._user, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise PostgresError(f"{Path(cmd[0]).name} exited {done.returncode}: {done.stderr[-2000:]}")

    def start(self, timeout: float = 60.0) -> Postgres:
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if self._user:
                entry = pwd.getpwnam(self._user)
                os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            self._run(str(self._bin / "initdb"), "-D", str(self.data_dir), "-U", USER, "--auth=trust",
                      "--encoding=UTF8", "--no-instructions")
        self.launch()
        wait_for(self._answers, timeout, f"postgres on port {self.port} (log: {self.log_file})", 0.2)
        self.create_database(self.database)
        return self

    def launch(self) -> None:
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self._bin / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data_dir}",
                 "-c", "max_connections=300"],
                user=self._user, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        reaper.watch(self.proc.pid)  # stopped with whoever started it, however that ends

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise PostgresError(f"postgres exited {self.proc.returncode}; see {self.log_file}")
        import psycopg

        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, dbname="postgres", connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def create_database(self, name: str) -> str:
        """Create database `name` (letters, digits, _) unless it exists; its connection URI."""
        import psycopg

        if not name.replace("_", "").isalnum():
            raise PostgresError("a database name is letters, digits and _")
        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True) as c:
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def fresh_database(self, prefix: str) -> str:
        """A new database named `prefix` plus a random suffix; its connection URI."""
        return self.create_database(f"{prefix}_{uuid.uuid4().hex[:10]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            reaper.unwatch(self.proc.pid)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # fast shutdown: roll back sessions, checkpoint, exit
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        reaper.unwatch(self.proc.pid)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
