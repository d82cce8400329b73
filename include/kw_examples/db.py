"""The examples' SQLite database: KW_EXAMPLES_DB (default /tmp/kafka-workflows/examples.sqlite)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

DEFAULT_DB = "/tmp/kafka-workflows/examples.sqlite"


def db_path() -> Path:
    return Path(os.environ.get("KW_EXAMPLES_DB", DEFAULT_DB))


def connect(schema: str, path: Path | None = None) -> sqlite3.Connection:
    """Open the database (WAL: workers and Airflow tasks write concurrently) and create `schema`."""
    path = path or db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(schema)
    return conn
