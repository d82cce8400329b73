"""The operations view of every workflow: specs joined with the warm indexes of this package.

`Monitor` owns one follower per topic kind (status, control, dead letters, each store) and the
lag monitor, all started once per process. Its methods answer the questions of the UI and its
API from memory: the workflows at a glance, one workflow's units and their health, one group's
partitions (committed/end offset, lag, state and the holding message), a store's requests and a
DAG run's request. Actions are in `actions.py`. Unknown names raise `NotFound` naming them; bad
filters raise `Invalid` naming the field.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kafka_workflows.errors import KafkaWorkflowsError
from kafka_workflows.messages import request_id_for
from kafka_workflows.monitor.audit import AuditLog
from kafka_workflows.monitor.deadletters import DeadLetterIndex
from kafka_workflows.monitor.lag import LagMonitor
from kafka_workflows.monitor.requests import StoreIndex, progress_of
from kafka_workflows.monitor.status import StatusIndex, breaker_of
from kafka_workflows.observe import tracing
from kafka_workflows.spec import WorkflowSpec, load_specs
from kafka_workflows.store import commands_topic, default_group

log = logging.getLogger(__name__)


class NotFound(KafkaWorkflowsError, LookupError):
    def __init__(self, kind: str, name: str, where: str = "") -> None:
        super().__init__(f"unknown {kind} {name!r}" + (f" {where}" if where else ""))
        self.kind, self.name = kind, name


class Invalid(KafkaWorkflowsError, ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Conflict(KafkaWorkflowsError):
    """The operator's view is stale (e.g. the message they saw is no longer held)."""


class NoAnswer(KafkaWorkflowsError, TimeoutError):
    """No worker answered a command in time."""


def units_of(spec: WorkflowSpec) -> list[dict[str, Any]]:
    """The workflow's consumer groups: workers, exactly-once processors and store processors."""
    units = [{"kind": "worker", "name": w.name, "group": w.group, "topics": list(w.topics), "store": w.store}
             for w in spec.workers]
    units += [{"kind": "processor", "name": p.name, "group": p.group, "topics": list(p.topics)}
              for p in spec.processors]
    units += [{"kind": "store", "name": s.name, "group": default_group(s.name), "topics": [commands_topic(s.name)]}
              for s in spec.stores]
    return units


class Monitor:
    def __init__(self, config: Mapping[str, Any], specs_folder: Path, *, lag_interval: float = 5.0,
                 status_max_age: float = 30.0, dead_letter_limit: int = 200_000) -> None:
        self.config = dict(config)
        self.specs_folder = specs_folder
        self.status = StatusIndex(config, max_age=status_max_age)
        self.audit = AuditLog(config)
        self.letters = DeadLetterIndex(config, limit=dead_letter_limit)
        self.lag = LagMonitor(config, self._lag_groups, interval=lag_interval)
        self.stores: dict[str, StoreIndex] = {}
        self._specs: dict[str, WorkflowSpec] = {}
        self._specs_stamp: tuple[tuple[str, float], ...] | None = None
        self._specs_checked = 0.0
        self._lock = threading.Lock()
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Monitor:
        with self._lock:
            if self._started:
                return self
            self._started = True
        self.specs()
        for follower in (self.status, self.audit, self.letters):
            follower.start()
        self.lag.start()
        return self

    def stop(self) -> None:
        for follower in (self.status, self.audit, self.letters, *self.stores.values()):
            follower.stop()
        self.lag.stop()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        followers = [self.status, self.audit, self.letters, *self.stores.values()]
        ok = all(f.wait_caught_up(max(deadline - time.monotonic(), 0.0)) for f in followers)
        return ok and self.lag.wait_refreshed(max(deadline - time.monotonic(), 0.0))

    def describe(self, allowed: set[str] | None = None) -> dict[str, Any]:
        """The followers' health: the shared ones, and the store followers of the workflows in `allowed`
        (every one when None), so a caller learns nothing of stores it may not read."""
        if allowed is None:
            stores = list(self.stores.values())
        else:
            names = {store for name, spec in self.specs().items() if name in allowed for store in self._stores_of(spec)}
            stores = [index for store, index in sorted(self.stores.items()) if store in names]
        return {"followers": [f.describe() for f in (self.status, self.audit, self.letters, *stores)],
                "lag_error": self.lag.error, "dead_letters_dropped": self.letters.dropped}

    # -- specs -----------------------------------------------------------------------------
    def specs(self) -> dict[str, WorkflowSpec]:
        """The valid workflow specs of the folder, re-read when a file changed (checked every 5 s)."""
        now = time.monotonic()
        if self._specs_stamp is not None and now - self._specs_checked < 5.0:
            return self._specs
        self._specs_checked = now
        try:
            files = sorted(p for p in self.specs_folder.iterdir() if p.suffix in (".yaml", ".yml"))
            stamp = tuple((str(p), p.stat().st_mtime) for p in files)
        except OSError as exc:
            log.warning("reading workflow specs in %s: %s", self.specs_folder, exc)
            return self._specs
        if stamp != self._specs_stamp:
            specs = {}
            for path, spec in load_specs(self.specs_folder):
                if isinstance(spec, WorkflowSpec):
                    specs[spec.name] = spec
                else:
                    log.warning("workflow spec %s is not valid: %s", path, spec)
            self._specs, self._specs_stamp = specs, stamp
            for spec in specs.values():
                for store in spec.stores:
                    self.store_index(store.name)
        return self._specs

    def spec(self, name: str) -> WorkflowSpec:
        spec = self.specs().get(name)
        if spec is None:
            raise NotFound("workflow", name)
        return spec

    def store_index(self, store: str) -> StoreIndex:
        with self._lock:
            index = self.stores.get(store)
            if index is None:
                index = self.stores[store] = StoreIndex(self.config, store)
                if self._started:
                    index.start()
        if not self._started:
            return index
        index.start()
        return index

    def unit(self, name: str, group: str) -> dict[str, Any]:
        for unit in units_of(self.spec(name)):
            if unit["group"] == group:
                return unit
        raise NotFound("group", group, f"in workflow {name!r}")

    def _lag_groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for spec in self.specs().values():
            for unit in units_of(spec):
                groups.setdefault(unit["group"], []).extend(unit["topics"])
        return groups

    # -- reading ---------------------------------------------------------------------------
    def overview(self, allowed: set[str] | None = None) -> list[dict[str, Any]]:
        """Every workflow at a glance (those in `allowed`, when given)."""
        counts = self.letters.counts()
        rows = []
        for name, spec in sorted(self.specs().items()):
            if allowed is not None and name not in allowed:
                continue
            units = [self._unit_health(u, counts) for u in units_of(spec)]
            requests: dict[str, int] = {}
            for store in self._stores_of(spec):
                for status, n in self.store_index(store).status_counts(name).items():
                    requests[status] = requests.get(status, 0) + n
            rows.append({
                "workflow": name, "description": spec.description, "units": units,
                "workers_up": sum(u["members"] for u in units if u["kind"] == "worker"),
                "units_down": [u["name"] for u in units if not u["up"]],
                "lag": sum(u["lag"] or 0 for u in units),
                "blocked": sum(u["blocked"] for u in units),
                "dead_letters": sum(u["dead_letters"] for u in units),
                "requests": requests,
            })
        return rows

    def _stores_of(self, spec: WorkflowSpec) -> list[str]:
        names = [s.name for s in spec.stores] + [w.store for w in spec.workers if w.store]
        for step in spec.steps:
            store = getattr(step.body, "model_extra", None) or {}
            if step.kind == "split" and isinstance(store.get("store"), str) and "{" not in store["store"]:
                names.append(store["store"])
        return list(dict.fromkeys(names))

    def _unit_health(self, unit: Mapping[str, Any], counts: Mapping[str, int]) -> dict[str, Any]:
        group = unit["group"]
        live = self.status.live(group)
        lag = self.lag.latest(group)
        admin_members = len(lag["members"]) if lag else 0
        members = len(live) if unit["kind"] == "worker" else admin_members
        blocked = sum(1 for s in live for held in s.get("held", []) if held.get("kind") == "blocked")
        return {**unit, "members": members, "up": members > 0, "state": lag["state"] if lag else "unknown",
                "lag": lag["lag"] if lag else None, "blocked": blocked, "paused": any(s.get("paused") for s in live),
                "breaker": breaker_of(live),
                "dead_letters": counts.get(group, 0)}

    def workflow(self, name: str) -> dict[str, Any]:
        spec = self.spec(name)
        overview = self.overview({name})[0]
        stores = {}
        for store in self._stores_of(spec):
            stores[store] = self.store_index(store).recent(dag_id=name, limit=10)
        return {**overview, "stores": stores, "steps": [{"id": s.id, "kind": s.kind} for s in spec.steps],
                "audit": self.audit.page(groups={u["group"] for u in units_of(spec)}, limit=10)}

    def group(self, name: str, group: str) -> dict[str, Any]:
        """One group's members and partitions with committed/end offset, lag and state."""
        unit = self.unit(name, group)
        info = self.lag.fresh(group, unit["topics"])
        live = self.status.live(group)
        holds = {(held["topic"], held["partition"]): {**held, "worker": s["worker"]}
                 for s in live for held in s.get("held", [])}
        owners = {a: s for s in live for a in s.get("assigned", [])}
        partitions = []
        for row in info["partitions"]:
            hold = holds.get((row["topic"], row["partition"]))
            owner = owners.get(f"{row['topic']}[{row['partition']}]")
            if hold is not None:
                state = "blocked" if hold["kind"] == "blocked" else "waiting for a retry"
            elif owner is not None and owner.get("paused"):
                state = "paused"
            elif owner is not None and (owner.get("breaker") or {}).get("state") == "open":
                state = "breaker open"
            elif owner is None and row["member"] is None:
                state = "unassigned"
            else:
                state = "flowing"
            partitions.append({**row, "state": state, "worker": owner["worker"] if owner else row["member"],
                               "hold": hold})
        workers = [{k: s.get(k) for k in ("worker", "paused", "breaker", "assigned", "at", "handled", "failed",
                                         "retried", "dead_lettered")} for s in live]
        return {"workflow": name, **unit, "state": info["state"], "members": info["members"], "workers": workers,
                "partitions": partitions, "lag": info["lag"], "error": info["error"], "breaker": breaker_of(live),
                "lag_history": self.lag.history(group),
                "dead_letters": self.letters.counts().get(group, 0),
                "audit": self.audit.page(group=group, limit=10)}

    # -- requests --------------------------------------------------------------------------
    def _store_of(self, name: str, store: str) -> StoreIndex:
        if store not in self._stores_of(self.spec(name)):
            raise NotFound("store", store, f"in workflow {name!r}")
        return self.store_index(store)

    def requests(self, name: str, store: str, *, status: str | None = None, offset: int = 0,
                 limit: int = 50) -> dict[str, Any]:
        """The store's requests made by this workflow's runs (a store may be shared by workflows)."""
        return self._store_of(name, store).recent(dag_id=name, status=status, offset=offset, limit=limit)

    def request(self, name: str, store: str, request_id: str) -> dict[str, Any]:
        index = self._store_of(name, store)
        summary = index.summary(request_id)
        value = index.value(request_id) if summary is not None and summary.get("dag_id") == name else None
        if value is None:
            raise NotFound("request", request_id, f"in store {store!r}")
        return self._request_view(store, value)

    @staticmethod
    def _request_view(store: str, value: Mapping[str, Any]) -> dict[str, Any]:
        reasons = value.get("failure_reasons") or {}
        return {"store": store, "request_id": value.get("request_id"), "status": value.get("status"),
                "progress": progress_of(value), "meta": value.get("meta") or {},
                # the run's trace (W3C trace context the split kept in meta), checked: the value came through Kafka
                "trace_id": tracing.trace_id_of((value.get("meta") or {}).get(tracing.TRACEPARENT)),
                "failed_jobs": [{"job": int(k), "reason": v} for k, v in list(reasons.items())[:200]],
                "failed_jobs_truncated": bool(value.get("failure_reasons_truncated")) or len(reasons) > 200,
                "created_at": value.get("created_at"), "updated_at": value.get("updated_at"),
                "completed_at": value.get("completed_at"),
                # a pipelined split's progress ({jobs, rows}) while it reads; why a request is aborted/corrupt
                "split": value.get("split") if isinstance(value.get("split"), dict) else None,
                "error": value.get("error") if isinstance(value.get("error"), str) else None}

    def run(self, name: str, run_id: str) -> dict[str, Any]:
        """The store requests of one DAG run (its split steps' requests), with their progress."""
        spec = self.spec(name)
        stores = self._stores_of(spec)
        if not stores or not any(step.kind == "split" for step in spec.steps):
            raise NotFound("request", run_id, f"of workflow {name!r}: its runs produce no store request")
        found = []
        for step in spec.steps:
            if step.kind != "split":
                continue
            request_id = request_id_for(name, step.id, run_id)
            for store in stores:
                value = self.store_index(store).value(request_id)
                if value is not None:
                    found.append({"step": step.id, **self._request_view(store, value)})
                    break
            else:
                found.append({"step": step.id, "store": None, "request_id": request_id, "status": "not registered",
                              "progress": None, "trace_id": None})
        return {"workflow": name, "run_id": run_id, "requests": found}
