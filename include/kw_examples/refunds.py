"""Kafka in example (dags/workflows/refund_requested.yaml): each refund request on topic `refund-requests`
starts one run, its record as the run's conf. Replace `acknowledge` with the refund's real work."""

from __future__ import annotations

from typing import Any


def acknowledge(order_id: str, amount: float, reason: str | None = None) -> dict[str, Any]:
    """What the run was started for (its return value is the run's XCom)."""
    print(f"refund of {amount} requested for order {order_id}")
    return {"order_id": order_id, "amount": amount, "reason": reason}
