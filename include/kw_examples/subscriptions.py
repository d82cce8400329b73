"""The article's payments example: monthly subscriptions renewed through a payment provider.

The DAG selects due subscriptions (`due_subscriptions`) and produces one renewal request per
user, keyed by user id; the worker's handler (`renew`) charges the provider and records the
renewal. The charge carries an idempotency key, so a redelivered request never charges twice.
Database: SQLite at KW_EXAMPLES_DB (default /tmp/kafka-workflows/examples.sqlite).
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from kafka_workflows.messages import Message
from kw_examples.db import connect

DEFAULT_PROVIDER = "http://127.0.0.1:8089"
SEED_USERS = 12


class PaymentFailed(RuntimeError):
    """The provider refused or was unreachable; the worker retries the request."""


SCHEMA = """
        CREATE TABLE IF NOT EXISTS subscriptions (
            user_id TEXT PRIMARY KEY, plan TEXT NOT NULL, amount_cents INTEGER NOT NULL,
            renews_on TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS renewals (
            user_id TEXT NOT NULL, period TEXT NOT NULL, charge_id TEXT NOT NULL,
            request_id TEXT, renewed_at TEXT DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (user_id, period));
"""


def _connect(path: Path | None = None) -> sqlite3.Connection:
    return connect(SCHEMA, path)


def seed(today: date, path: Path | None = None) -> int:
    """Seed subscriptions once: half due on or before `today`, half later. Returns rows added."""
    with _connect(path) as conn:
        if conn.execute("SELECT count(*) FROM subscriptions").fetchone()[0]:
            return 0
        rows = [(f"user-{i:03d}", "yoga-monthly" if i % 2 else "yoga-yearly", 1500 + 100 * i,
                 (today + timedelta(days=(i % 2) * 10 - (i % 5))).isoformat()) for i in range(SEED_USERS)]
        # OR IGNORE: two runs that select at the same moment (the scheduled and a manual one) both seed.
        conn.executemany("INSERT OR IGNORE INTO subscriptions VALUES (?, ?, ?, ?)", rows)
        return len(rows)


def due_subscriptions(day: str, path: Path | None = None) -> list[dict[str, Any]]:
    """Subscriptions whose renewal date is `day` (ISO) or earlier and not yet renewed for it."""
    seed(date.fromisoformat(day), path)
    with _connect(path) as conn:
        rows = conn.execute(
            "SELECT s.user_id, s.plan, s.amount_cents, s.renews_on FROM subscriptions s "
            "LEFT JOIN renewals r ON r.user_id = s.user_id AND r.period = s.renews_on "
            "WHERE s.renews_on <= ? AND r.user_id IS NULL ORDER BY s.user_id", (day,)).fetchall()
    return [{"user_id": u, "plan": p, "amount_cents": a, "period": d} for u, p, a, d in rows]


def all_subscriptions(path: Path | None = None) -> list[dict[str, Any]]:
    """Every subscription with its current period (renews_on), renewed or not."""
    with _connect(path) as conn:
        rows = conn.execute("SELECT user_id, renews_on FROM subscriptions ORDER BY user_id").fetchall()
    return [{"user_id": u, "period": d} for u, d in rows]


def renewals(path: Path | None = None) -> list[dict[str, Any]]:
    with _connect(path) as conn:
        rows = conn.execute("SELECT user_id, period, charge_id, request_id FROM renewals ORDER BY user_id").fetchall()
    return [{"user_id": u, "period": p, "charge_id": c, "request_id": r} for u, p, c, r in rows]


def renew(message: Message) -> None:
    """Worker handler: charge the provider (idempotently) and record the renewal."""
    request = message.value
    user_id, period = request["user_id"], request["period"]
    provider = os.environ.get("PAYMENT_PROVIDER_URL", DEFAULT_PROVIDER)
    body = json.dumps({"user_id": user_id, "amount_cents": request["amount_cents"],
                       "idempotency_key": f"renewal:{user_id}:{period}"}).encode()
    http = urllib.request.Request(f"{provider}/charges", data=body, method="POST",
                                  headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(http, timeout=10) as response:
            charge = json.load(response)
    except (urllib.error.URLError, TimeoutError) as exc:
        raise PaymentFailed(f"charging {user_id} for {period} failed: {exc}") from exc
    with _connect() as conn:
        conn.execute("INSERT OR IGNORE INTO renewals (user_id, period, charge_id, request_id) VALUES (?, ?, ?, ?)",
                     (user_id, period, charge["charge_id"], message.request_id))


def select_due_subscriptions(day: str) -> list[dict[str, Any]]:
    """The DAG's first step (by dotted path from the YAML spec)."""
    return due_subscriptions(day)
