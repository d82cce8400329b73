"""Run what a folder of workflow specs declares for the Kafka side: handlers (Worker),
exactly-once processors (TransactionalProcessor) and store processors, one thread each.

`kafka-workflows worker dags/workflows/` reads the same specs Airflow reads, so the DAG and
the worker cannot drift. Every spec, handler path and policy is checked before anything starts.

Each unit runs under `Supervised` (supervise.py): one that dies (a broker away for longer than its
clients wait, a write that failed, a bug) is logged and built again, fresh, after a backoff, while
the other units go on: one unit never stops the process. Its messages come back from the last
committed offsets, so nothing is lost. SIGTERM/SIGINT stop every unit.

The process has one telemetry (observe/): every unit counts into its one registry and reports its
loop there, and `--metrics-port` serves /metrics, /healthz and /readyz for all of them on one port.
A unit rebuilt by its supervisor keeps its metrics and its health entry (named `<workflow>/<unit>`).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from kafka_workflows import headers as h
from kafka_workflows.eos import Output, TransactionalProcessor
from kafka_workflows.errors import ConfigError
from kafka_workflows.handlers import resolve_callable
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.config import check_reachable
from kafka_workflows.messages import Message, encode_value, where
from kafka_workflows.observe import Telemetry
from kafka_workflows.spec import ProcessorSpec, SpecError, WorkflowSpec, load_specs
from kafka_workflows.supervise import Runnable, Supervised
from kafka_workflows.worker import Worker

log = logging.getLogger(__name__)


@dataclass
class Unit:
    """One thing the process runs, under its supervisor."""

    workflow: str
    name: str
    runnable: Runnable


def select_specs(folder: Path, workflows: Iterable[str] = ()) -> list[WorkflowSpec]:
    """Valid specs of `folder` (only the named workflows if given); any invalid selected spec fails."""
    wanted = set(workflows)
    specs, errors = [], []
    for _path, result in load_specs(folder):
        if isinstance(result, SpecError):
            errors.append(result)
        elif not wanted or result.name in wanted:
            specs.append(result)
    if errors and not wanted:
        raise ConfigError("invalid workflow spec(s):\n" + "\n".join(str(e) for e in errors))
    missing = wanted - {s.name for s in specs}
    if missing:
        known = ", ".join(sorted(s.name for s in specs)) or "none"
        raise ConfigError(f"no valid workflow named {sorted(missing)} in {folder} (valid: {known})"
                          + ("\n" + "\n".join(str(e) for e in errors) if errors else ""))
    return specs


def _transform(spec: ProcessorSpec, codecs: Mapping[str, Any] | None = None) -> Callable[[Any], Iterable[Output]]:
    """Adapt `message -> iterable of {[topic,] key, value[, headers]}` to the processor's Output.

    With schemas (`codecs`: topic -> schemas.codec.Codec): an input is decoded with its topic's schema
    (one that does not decode takes the poison path, dead-lettered with its subject, id and reason),
    and an output is checked and encoded with its topic's."""
    fn = resolve_callable(spec.transform, f"processor {spec.name!r} transform")
    allowed = set(spec.outputs)
    codecs = dict(codecs or {})

    def process(raw: Any) -> Iterable[Output]:
        codec = codecs.get(raw.topic())
        message = Message.of(raw) if codec is None else Message(raw, codec.decode(raw.value(), where(raw)))
        outputs = []
        for out in fn(message) or ():
            if "topic" not in out and len(spec.outputs) == 1:
                out = {**out, "topic": spec.outputs[0]}  # one declared output: the transform need not name it
            if out.get("topic") not in allowed:
                raise ConfigError(f"processor {spec.name!r}: transform wrote to {out.get('topic')!r}, "
                                  f"not one of its outputs {sorted(allowed)} ({message.where})")
            headers = {h.REQUEST_ID: message.headers.get(h.REQUEST_ID), **(out.get("headers") or {})}
            out_codec = codecs.get(out["topic"])
            if out_codec is None:
                value = encode_value(out["value"])
            else:
                out_codec.check(out["value"], f"processor {spec.name!r}: output to {out['topic']} ({message.where})")
                value = out_codec.encode(out["value"])
            outputs.append(Output(out["topic"], out.get("key"), value, headers))
        return outputs

    return process


def _codecs(spec: WorkflowSpec, topics: Iterable[str]) -> dict[str, Any] | None:
    """The codecs of the topics `spec` declares a schema for (schemas/); None when it declares none."""
    if not any(spec.schema_for(t) is not None for t in topics):
        return None
    from kafka_workflows.schemas.resolve import codecs_for

    return codecs_for(spec, topics)


def build_units(config: Mapping[str, Any], specs: list[WorkflowSpec], only: Iterable[str] = (),
                telemetry: Telemetry | None = None) -> list[Unit]:
    from kafka_workflows.store import StoreProcessor

    telemetry = telemetry or Telemetry()
    only = set(only)
    units: list[Unit] = []
    def add(workflow: str, name: str, factory: Callable[..., Runnable]) -> None:
        unit = f"{workflow}/{name}"  # built now: bad paths fail
        units.append(Unit(workflow, name, Supervised(unit, partial(factory, telemetry=telemetry, unit=unit))))

    for spec in specs:
        for w in spec.workers:
            if not only or w.name in only:
                add(spec.name, w.name, partial(Worker, config, w.topics, w.group, w.handler, policy=w.retry,
                                               topic_partitions=w.partitions, store=w.store,
                                               batch_size=w.batch_size, concurrency=w.concurrency,
                                               breaker=w.breaker, codecs=_codecs(spec, w.topics),
                                               incidents=w.incidents))
        for p in spec.processors:
            if not only or p.name in only:
                add(spec.name, p.name, partial(TransactionalProcessor, config, p.topics, p.group,
                                               _transform(p, _codecs(spec, [*p.topics, *p.outputs])),
                                               commit_interval=p.commit_interval,
                                               transactional_id_prefix=f"kw-{spec.name}"))
        for s in spec.stores:
            if not only or f"store:{s.name}" in only:
                add(spec.name, f"store:{s.name}", partial(StoreProcessor, config, s.name, partitions=s.partitions,
                                                          commit_interval=s.commit_interval))
    if only - {u.name for u in units}:
        raise ConfigError(f"--only names nothing declared: {sorted(only - {u.name for u in units})}")
    if not units:
        raise ConfigError("the selected specs declare no workers, processors or stores")
    return units


def prepare_processor_topics(config: Mapping[str, Any], specs: list[WorkflowSpec]) -> None:
    for spec in specs:
        for p in spec.processors:
            ensure_topics(config, [TopicSpec(t, p.partitions) for t in (*p.topics, *p.outputs)])


def run_units(config: Mapping[str, Any], units: list[Unit], specs: list[WorkflowSpec],
              stop: threading.Event | None = None, telemetry: Telemetry | None = None,
              metrics_port: int | None = None, metrics_addr: str = "127.0.0.1") -> None:
    """Run every unit in its own thread until SIGTERM/SIGINT (or `stop`); each restarts on its own.

    With `metrics_port`, `telemetry` (the one `build_units` was given) is served there."""
    check_reachable(config)
    if metrics_port is not None:
        if telemetry is None:
            raise ConfigError("a metrics port needs the telemetry the units were built with")
        telemetry.serve(metrics_port, metrics_addr)
    prepare_processor_topics(config, specs)
    stop = stop or threading.Event()
    failures: list[str] = []

    def run(unit: Unit) -> None:
        try:
            unit.runnable.run()
        except Exception as exc:  # only while stopping: otherwise its supervisor rebuilds it
            log.exception("%s/%s stopped with an error", unit.workflow, unit.name)
            failures.append(f"{unit.workflow}/{unit.name}: {type(exc).__name__}: {exc}")

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():  # restored on return: a caller (a test
        for signum in (signal.SIGTERM, signal.SIGINT):           # run, an embedding app) keeps its own
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        threads = [threading.Thread(target=run, args=(u,), name=f"{u.workflow}/{u.name}") for u in units]
        for thread in threads:
            thread.start()
        log.info("running %s", ", ".join(f"{u.workflow}/{u.name}" for u in units))
        stop.wait()
        for unit in units:
            unit.runnable.stop()
        for thread in threads:
            thread.join(60)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if failures:
        raise ConfigError("; ".join(failures))
