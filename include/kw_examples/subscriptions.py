"""The article's payments example: monthly subscriptions renewed through a payment provider.

The DAG selects due subscriptions (`due_subscriptions`) and produces one renewal request per
user, keyed by user id; the worker's handler (`renew`) charges the provider and records the
renewal. The charge carries an idempotency key, so a redelivered request never charges twice.
Database: kw_examples.db (Postgres via AIRFLOW_CONN_KW_EXAMPLES_DB, else SQLite at KW_EXAMPLES_DB).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from kafka_workflows.messages import Message
from kw_examples.db import begin

DEFAULT_PROVIDER = "http://127.0.0.1:8089"
SEED_USERS = 12


class PaymentFailed(RuntimeError):
    """The provider refused or was unreachable; the worker retries the request."""


SCHEMA = [
    """CREATE TABLE IF NOT EXISTS subscriptions (
        user_id TEXT PRIMARY KEY, plan TEXT NOT NULL, amount_cents INTEGER NOT NULL, renews_on TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS renewals (
        user_id TEXT NOT NULL, period TEXT NOT NULL, charge_id TEXT NOT NULL, request_id TEXT,
        renewed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (user_id, period))""",
]


def seed(today: date, db: str | Path | None = None) -> int:
    """Seed subscriptions once: half due on or before `today`, half later. Returns rows added."""
    with begin(SCHEMA, db) as conn:
        if conn.execute(text("SELECT count(*) FROM subscriptions")).scalar_one():
            return 0
        rows = [{"user_id": f"user-{i:03d}", "plan": "yoga-monthly" if i % 2 else "yoga-yearly",
                 "amount_cents": 1500 + 100 * i,
                 "renews_on": (today + timedelta(days=(i % 2) * 10 - (i % 5))).isoformat()} for i in range(SEED_USERS)]
        # DO NOTHING: two runs that select at the same moment (the scheduled and a manual one) both seed.
        conn.execute(text("INSERT INTO subscriptions (user_id, plan, amount_cents, renews_on) "
                          "VALUES (:user_id, :plan, :amount_cents, :renews_on) ON CONFLICT DO NOTHING"), rows)
        return len(rows)


def due_subscriptions(day: str, db: str | Path | None = None) -> list[dict[str, Any]]:
    """Subscriptions whose renewal date is `day` (ISO) or earlier and not yet renewed for it."""
    seed(date.fromisoformat(day), db)
    with begin(SCHEMA, db) as conn:
        rows = conn.execute(text(
            "SELECT s.user_id, s.plan, s.amount_cents, s.renews_on FROM subscriptions s "
            "LEFT JOIN renewals r ON r.user_id = s.user_id AND r.period = s.renews_on "
            "WHERE s.renews_on <= :day AND r.user_id IS NULL ORDER BY s.user_id"), {"day": day}).all()
    return [{"user_id": u, "plan": p, "amount_cents": a, "period": d} for u, p, a, d in rows]


def all_subscriptions(db: str | Path | None = None) -> list[dict[str, Any]]:
    """Every subscription with its current period (renews_on), renewed or not."""
    with begin(SCHEMA, db) as conn:
        rows = conn.execute(text("SELECT user_id, renews_on FROM subscriptions ORDER BY user_id")).all()
    return [{"user_id": u, "period": d} for u, d in rows]


def renewals(db: str | Path | None = None) -> list[dict[str, Any]]:
    with begin(SCHEMA, db) as conn:
        rows = conn.execute(text(
            "SELECT user_id, period, charge_id, request_id FROM renewals ORDER BY user_id")).all()
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
    with begin(SCHEMA) as conn:
        conn.execute(text("INSERT INTO renewals (user_id, period, charge_id, request_id) "
                          "VALUES (:user_id, :period, :charge_id, :request_id) ON CONFLICT DO NOTHING"),
                     {"user_id": user_id, "period": period, "charge_id": charge["charge_id"],
                      "request_id": message.request_id})


def select_due_subscriptions(day: str) -> list[dict[str, Any]]:
    """The DAG's first step (by dotted path from the YAML spec)."""
    return due_subscriptions(day)
