"""Schedule and forget: produce keyed requests, wait for their delivery, and return."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from kafka_workflows import headers as h
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.config import check_reachable
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.messages import request_id_for
from kafka_workflows.observe import tracing
from kafka_workflows_airflow.hooks import KafkaWorkflowsHook, SchemaRegistryHook
from kafka_workflows_airflow.links import LINKS


class ProduceRequestsOperator(BaseOperator):
    """Produce one request (`value`, `key`) or many (`requests`, keyed by `key_field`) to `topic`.

    The task finishes once the broker acknowledged every message; it never waits for the work.
    Each message carries kw-request-id (stable across this task instance's retries), kw-workflow
    and kw-attempt=1. The XCom return value holds request_id, topic, count, partitions and the
    first/last offset per partition.

    :param topic: the request topic (created with `partitions` partitions when missing).
    :param value: one request (JSON-serialisable); give this or `requests`.
    :param key: the key of that one request (requests of one key are handled in order).
    :param requests: many requests: a list of JSON objects, or a template rendering to one.
    :param key_field: the field of each request whose value is its key.
    :param workflow: the workflow name carried in kw-workflow (the DAG id when built from a spec).
    :param partitions: partitions of the topic when this task creates it.
    :param kafka_config_id: the Airflow connection of the Kafka provider (`kafka_default`).
    :param delivery_timeout: seconds to wait for the broker's acknowledgements.
    :param value_schema: the topic's schema as the spec declares it (schemas/resolve.py `declared`):
        every request is checked against it first (a request that does not fit fails the task, naming
        the request and the field, before anything is written), then sent in the registry's wire format.
    :param schema_registry_conn_id: the Airflow connection of the schema registry.
    """

    template_fields: Sequence[str] = ("topic", "key", "value", "requests", "key_field")
    template_fields_renderers = {"value": "json", "requests": "json"}
    ui_color = "#e8f4fa"
    operator_extra_links = LINKS  # Kafka progress, Kafka group, Dead letters (links.py)

    def __init__(self, *, topic: str, value: Any = None, key: str | None = None,
                 requests: Any = None, key_field: str | None = None, workflow: str | None = None,
                 partitions: int = 3, kafka_config_id: str = KafkaWorkflowsHook.default_conn_name,
                 delivery_timeout: float = 60.0, value_schema: dict[str, Any] | None = None,
                 schema_registry_conn_id: str = SchemaRegistryHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if (value is None) == (requests is None):
            raise ValueError(f"{self.task_id}: give exactly one of `value` (one request) or `requests` (many)")
        self.topic = topic
        self.value = value
        self.key = key
        self.requests = requests
        self.key_field = key_field
        self.workflow = workflow
        self.partitions = partitions
        self.kafka_config_id = kafka_config_id
        self.delivery_timeout = delivery_timeout
        self.value_schema = value_schema
        self.schema_registry_conn_id = schema_registry_conn_id

    def _keyed_requests(self) -> list[tuple[str | None, Any]]:
        if self.requests is None:
            return [(self.key, self.value)]
        if not isinstance(self.requests, list | tuple):
            raise TypeError(f"{self.task_id}: `requests` must render to a list, got {type(self.requests).__name__}")
        items = []
        for index, item in enumerate(self.requests):
            if self.key_field is None:
                items.append((self.key, item))
                continue
            if not isinstance(item, dict) or self.key_field not in item:
                raise ValueError(f"{self.task_id}: requests[{index}] has no field {self.key_field!r} "
                                 f"to key it by (got {str(item)[:100]!r})")
            items.append((str(item[self.key_field]), item))
        return items

    def _payloads(self, items: list[tuple[str | None, Any]]) -> list[bytes | None]:
        if not self.value_schema:
            return [None] * len(items)
        codec = SchemaRegistryHook(self.schema_registry_conn_id).codec({**self.value_schema, "topic": self.topic})
        for index, (_key, value) in enumerate(items):
            codec.check(value, f"{self.task_id}: requests[{index}]" if self.requests is not None else self.task_id)
        return [codec.encode(value) for _key, value in items]

    def execute(self, context: Context) -> dict[str, Any]:
        items = self._keyed_requests()  # validate before any I/O
        payloads = self._payloads(items)  # with a schema: every request checked, then encoded; nothing written yet
        ti = context["ti"]
        request_id = request_id_for(ti.dag_id, ti.task_id, ti.run_id, ti.map_index)
        config = KafkaWorkflowsHook(self.kafka_config_id).get_kafka_config()
        check_reachable(config)
        ensure_topics(config, [TopicSpec(self.topic, self.partitions)])
        headers = {h.REQUEST_ID: request_id, h.WORKFLOW: self.workflow or ti.dag_id, h.ATTEMPT: 1}
        producer = RequestProducer(config)
        # Traced (Airflow's [traces] otel_on), one `send` span, a child of this task's: every request carries it.
        with tracing.producing(self.topic, {"kw.request_id": request_id}) as trace:
            if trace is not None:
                headers.update(trace.headers())
            for (key, value), payload in zip(items, payloads, strict=True):
                if payload is None:
                    producer.send(self.topic, value, key=key, headers=headers)
                else:
                    producer.send(self.topic, payload, key=key, headers=headers, raw=True)
            delivered = producer.flush(self.delivery_timeout)
        offsets: dict[str, list[int]] = {}
        for d in delivered:
            first, last = offsets.get(str(d.partition), [d.offset, d.offset])
            offsets[str(d.partition)] = [min(first, d.offset), max(last, d.offset)]
        self.log.info("produced %d request(s) to %s as %s; partitions/offsets %s",
                      len(delivered), self.topic, request_id, offsets)
        return {"request_id": request_id, "topic": self.topic, "count": len(delivered),
                "partitions": sorted(int(p) for p in offsets), "offsets": offsets}
