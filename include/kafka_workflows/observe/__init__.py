"""What a process shows its operators: one Prometheus registry, liveness and readiness, one port.

`Telemetry` (telemetry.py) is the process's: every unit it runs (workers, exactly-once processors,
store processors) counts into its registry and reports its loop to it (`UnitHealth`, health.py),
and `serve(port)` answers `/metrics`, `/healthz` and `/readyz` on that port.
"""

from kafka_workflows.observe.health import UnitHealth, broker_up
from kafka_workflows.observe.telemetry import DEFAULT_STALE_AFTER, Telemetry

__all__ = ["DEFAULT_STALE_AFTER", "Telemetry", "UnitHealth", "broker_up"]
