"""The article's eCommerce flow (pattern 5, events in transactions).

The payments service publishes order-purchase-completed with an idempotent producer; the
checkout processor turns each into one order-checkout-completed inside a Kafka transaction that
also carries its input offsets; delivery, inventory and invoices read it read_committed, so each
sees every checkout exactly once and needs no de-duplication state of its own.
"""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import text

from kafka_workflows.messages import Message
from kw_examples.db import begin

PRODUCTS = ["yoga-mat", "water-bottle", "towel", "block", "strap"]


def simulate_purchases(count: int, seed: int | None = None, prefix: str = "order") -> list[dict[str, Any]]:
    """What the payments service would publish: `count` completed purchases."""
    rng = random.Random(seed)
    orders = []
    for n in range(int(count)):
        cart = [{"sku": rng.choice(PRODUCTS), "qty": rng.randint(1, 3), "price_cents": rng.randint(500, 5000)}
                for _ in range(rng.randint(1, 3))]
        orders.append({"order_id": f"{prefix}-{n:05d}", "user_id": f"user-{rng.randint(1, 50):03d}",
                       "cart": cart, "paid_cents": sum(i["qty"] * i["price_cents"] for i in cart)})
    return orders


def checkout_completed(message: Message) -> list[dict[str, Any]]:
    """The checkout processor's transform: one order-checkout-completed per purchase (its one output)."""
    order = message.value
    return [{"key": order["order_id"],
             "value": {"order_id": order["order_id"], "user_id": order["user_id"], "items": order["cart"],
                       "total_cents": order["paid_cents"], "purchase_offset": message.offset}}]


def _record(table: str, message: Message) -> None:
    """What one downstream service did with a checkout: once per order (a redelivery adds nothing)."""
    with begin([f"CREATE TABLE IF NOT EXISTS {table} (order_id TEXT PRIMARY KEY, detail TEXT)"]) as conn:
        conn.execute(text(f"INSERT INTO {table} (order_id, detail) VALUES (:order_id, :detail) ON CONFLICT DO NOTHING"),
                     {"order_id": message.key, "detail": str(message.value)[:200]})


def recorded(table: str, prefix: str = "") -> list[str]:
    """The order ids one downstream service recorded (those starting with `prefix`), in order."""
    with begin([f"CREATE TABLE IF NOT EXISTS {table} (order_id TEXT PRIMARY KEY, detail TEXT)"]) as conn:
        rows = conn.execute(text(f"SELECT order_id FROM {table} WHERE order_id LIKE :p ORDER BY order_id"),
                            {"p": f"{prefix}%"})
        return [r[0] for r in rows]


def prepare_delivery(message: Message) -> None:
    _record("deliveries", message)


def update_inventory(message: Message) -> None:
    _record("inventory_updates", message)


def create_invoice(message: Message) -> None:
    _record("invoices", message)
