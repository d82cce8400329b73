"""W3C trace context in the `kw-` contract: one trace per DAG run, continued by every message.

Switching it on. Airflow's side is on when Airflow installed an OpenTelemetry SDK tracer provider
(`[traces] otel_on = True` plus the standard `OTEL_*` variables): `active()`. A worker or store
process calls `configure()` at start: it is on when an SDK provider is installed already (e.g. by
`opentelemetry-instrument`) or when the standard variables name an exporter
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_TRACES_EXPORTER`),
and off when `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.

No cost when off. `ENABLED` is the module-level flag every per-message path tests first; while it
is False nothing here is called per message and nothing is allocated (bench/tracing_overhead.py).
The OpenTelemetry packages are imported only once tracing is on.

Untrusted input. A `traceparent` or `tracestate` header is written by whoever produced the record.
`parse_traceparent` and `parse_tracestate` accept only what the W3C grammar allows, bounded
(MAX_TRACEPARENT, MAX_TRACESTATE bytes), and return None for anything else: a malformed or huge
value is ignored (the message starts a trace of its own), never echoed in a log, an error, a span
attribute or a page. Headers are parsed once, where the record enters (worker/inbound.py, the store
processor), into a `Carrier` (the two header values, checked).

Spans (OpenTelemetry's messaging semantic conventions, `messaging.system = kafka`):
- `send <topic>` (PRODUCER): produce and split, a child of the Airflow task's span; its context is
  what every message of the task carries;
- `process <topic>` (CONSUMER): one handler call in a worker, a child of the message's context (a
  `@batch_handler`'s call links every message's context instead);
- `<op> <store>` (CONSUMER): a store command applied by the store processor;
- `await <store>` and `notify <notifier>` (INTERNAL): the Airflow tasks that wait and notify.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MAX_TRACEPARENT = 256  # version 00 is 55 bytes; a later version may append fields
MAX_TRACESTATE = 512  # the W3C spec's recommended bound on what a vendor must propagate
INSTRUMENTATION = "kafka_workflows"

ENABLED = False  # the per-message guard: set by configure(), read by the worker's and the store's hot paths
_PROVIDER: Any = None  # the tracer provider spans go to (configure's; enable's in tests and benches)
_TRACER: Any = None  # its tracer

_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x21-\x7e]*)?")
_TRACESTATE = re.compile(rb"[\x20-\x2b\x2d-\x3c\x3e-\x7e]*=[\x20-\x2b\x2d-\x3c\x3e-\x7e]*"
                         rb"(?:[ \t]*,[ \t]*[\x20-\x2b\x2d-\x3c\x3e-\x7e]*=[\x20-\x2b\x2d-\x3c\x3e-\x7e]*)*")
_ZERO_TRACE, _ZERO_SPAN = b"0" * 32, b"0" * 16


class Carrier(NamedTuple):
    """A checked trace context as it travels in headers: traceparent, and tracestate or None."""

    traceparent: str
    tracestate: str | None = None

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]

    def headers(self) -> dict[str, str]:
        out = {TRACEPARENT: self.traceparent}
        if self.tracestate:
            out[TRACESTATE] = self.tracestate
        return out


def _bytes(raw: str | bytes | None) -> bytes | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            return raw.encode("ascii")
        except UnicodeEncodeError:
            return None
    return raw


def parse_traceparent(raw: str | bytes | None) -> str | None:
    """`raw` when it is a valid W3C traceparent (bounded), else None; never raises."""
    value = _bytes(raw)
    if value is None or not 55 <= len(value) <= MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, span_id, _flags, rest = match.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return value[:55].decode("ascii")  # what this version of the spec defines; the rest is not carried on


def parse_tracestate(raw: str | bytes | None) -> str | None:
    """`raw` when it is a bounded, well-formed tracestate list, else None; never raises."""
    value = _bytes(raw)
    if not value or len(value) > MAX_TRACESTATE or _TRACESTATE.fullmatch(value) is None:
        return None
    return value.decode("ascii")


def carrier_of(traceparent: str | bytes | None, tracestate: str | bytes | None = None) -> Carrier | None:
    """The checked trace context of two header values (tracestate only with a valid traceparent)."""
    parent = parse_traceparent(traceparent)
    if parent is None:
        return None
    return Carrier(parent, parse_tracestate(tracestate))


def carrier_from_headers(headers: Iterable[tuple[str, bytes | None]] | Mapping[str, Any] | None) -> Carrier | None:
    """The checked trace context of a record's headers (a list of pairs or a mapping)."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    parent = state = None
    for name, value in pairs:
        if name == TRACEPARENT:
            parent = value
        elif name == TRACESTATE:
            state = value
    return carrier_of(parent, state)


def trace_id_of(traceparent: str | bytes | None) -> str | None:
    """The 32-hex trace id of a traceparent, or None when it is not a valid one."""
    parent = parse_traceparent(traceparent)
    return None if parent is None else parent[3:35]


def trace_link(trace_ui_url: str | None, trace_id: str | None) -> str | None:
    """The trace UI's page of `trace_id`: `{trace_id}` in the URL is replaced, else the id is appended
    to it as a path segment (Jaeger: http://host:16686/trace/)."""
    if not trace_ui_url or not trace_id:
        return None
    if "{trace_id}" in trace_ui_url:
        return trace_ui_url.replace("{trace_id}", trace_id)
    return trace_ui_url.rstrip("/") + "/" + trace_id


# -- switching on ------------------------------------------------------------------------------
def _sdk_provider_installed() -> bool:
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return False
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def active() -> bool:
    """Whether this process exports spans: an OpenTelemetry SDK tracer provider is installed (Airflow's
    `[traces] otel_on`, or `configure()`)."""
    return ENABLED or _sdk_provider_installed()


def enable(provider: Any) -> None:
    """Trace to `provider` (an SDK TracerProvider) without installing it globally: tests and benches."""
    global ENABLED, _PROVIDER, _TRACER
    _PROVIDER, _TRACER, ENABLED = provider, provider.get_tracer(INSTRUMENTATION), True


def disable() -> None:
    global ENABLED, _PROVIDER, _TRACER
    _PROVIDER, _TRACER, ENABLED = None, None, False


def _wanted(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure(service_name: str = "kafka-workflows", environ: Mapping[str, str] | None = None) -> bool:
    """Switch tracing on for this process when OpenTelemetry is configured; returns ENABLED.

    Uses an SDK tracer provider already installed; else, when the `OTEL_*` variables name an
    exporter, installs one (a BatchSpanProcessor to the exporter `OTEL_TRACES_EXPORTER` names,
    `otlp` by default; `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` for OTLP over HTTP) whose
    service name is `OTEL_SERVICE_NAME` or `service_name`.
    """
    environ = os.environ if environ is None else environ
    if ENABLED:
        return True
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if _sdk_provider_installed():
        from opentelemetry import trace

        enable(trace.get_tracer_provider())
        return True
    if not _wanted(environ):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("the OTEL_* variables ask for traces but the OpenTelemetry SDK is not installed "
                    "(pip install 'kafka-workflows[tracing]'): tracing stays off")
        return False

    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(_exporter(environ)))
    trace.set_tracer_provider(provider)
    enable(trace.get_tracer_provider())
    if ENABLED:
        log.info("tracing on: spans of service %s are exported (%s)",
                 environ.get("OTEL_SERVICE_NAME") or service_name, environ.get("OTEL_TRACES_EXPORTER") or "otlp")
    return ENABLED


def _exporter(environ: Mapping[str, str]) -> Any:
    from importlib.metadata import entry_points

    name = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if name == "otlp" and environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                                      environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")).startswith("http"):
        name = "otlp_proto_http"
    found = next(iter(entry_points(group="opentelemetry_traces_exporter", name=name)), None)
    if found is None:
        raise RuntimeError(f"OTEL_TRACES_EXPORTER={name!r}: no such span exporter is installed")
    return found.load()()


def shutdown() -> None:
    """Export what is buffered (a worker's exit)."""
    if not ENABLED:
        return
    flush = getattr(_PROVIDER, "force_flush", None)
    if flush is not None:
        flush(10_000)


# -- spans ---------------------------------------------------------------------------------------
def _tracer() -> Any:
    from opentelemetry import trace

    return _TRACER if _TRACER is not None else trace.get_tracer(INSTRUMENTATION)


def _context(carrier: Carrier | None) -> Any:
    """The OpenTelemetry context whose (remote) parent is `carrier`; None: a root."""
    if carrier is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    parent = carrier.traceparent
    state = TraceState()
    if carrier.tracestate:
        state = TraceState.from_header([carrier.tracestate])
    context = SpanContext(trace_id=int(parent[3:35], 16), span_id=int(parent[36:52], 16), is_remote=True,
                          trace_flags=TraceFlags(int(parent[53:55], 16) & 0x01), trace_state=state)
    return trace.set_span_in_context(NonRecordingSpan(context))


def _link(carrier: Carrier) -> Any:
    from opentelemetry import trace
    from opentelemetry.trace import Link

    return Link(trace.get_current_span(_context(carrier)).get_span_context())


def current() -> Carrier | None:
    """The trace context of the current span (to put on what it writes), or None without one."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    state = context.trace_state.to_header() if context.trace_state else None
    return Carrier(parent, parse_tracestate(state))


@contextmanager
def span(name: str, *, kind: str = "INTERNAL", parent: Carrier | None = None,
         links: Iterable[Carrier] = (), attributes: Mapping[str, Any] | None = None,
         start_time: int | None = None) -> Iterator[Any]:
    """A span made current for the block: a child of `parent` when given, else of the current span
    (a root without one); linked to `links`; an exception is recorded and the status set to ERROR.
    `start_time`: epoch nanoseconds when the span began earlier than the block."""
    from opentelemetry.trace import SpanKind

    with _tracer().start_as_current_span(
            name, context=_context(parent), kind=getattr(SpanKind, kind), start_time=start_time,
            links=[_link(carrier) for carrier in links], attributes=dict(attributes or {})) as current_span:
        yield current_span


def optional_span(name: str, **kwargs: Any) -> Any:
    """`span(name, ...)` when this process traces (`active()`), else a context that does nothing and
    yields None (the Airflow side's tasks: once a task, never per message)."""
    return span(name, **kwargs) if active() else nullcontext()


@contextmanager
def producing(topic: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Carrier | None]:
    """A task's `send <topic>` span (PRODUCER), a child of the current span (the Airflow task's);
    yields the context its messages carry, or None when this process does not trace."""
    if not active():
        yield None
        return
    with span(f"send {topic}", kind="PRODUCER",
              attributes={**messaging(topic, operation="send"), **(attributes or {})}):
        yield current()


def messaging(topic: str, partition: int | None = None, offset: int | None = None, *,
              operation: str = "process", group: str | None = None, count: int | None = None) -> dict[str, Any]:
    """Attributes of OpenTelemetry's messaging semantic conventions for Kafka."""
    attributes: dict[str, Any] = {"messaging.system": "kafka", "messaging.operation.type": operation,
                                  "messaging.operation.name": operation, "messaging.destination.name": topic}
    if partition is not None:
        attributes["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attributes["messaging.kafka.offset"] = offset
    if group is not None:
        attributes["messaging.consumer.group.name"] = group
    if count is not None:
        attributes["messaging.batch.message_count"] = count
    return attributes
