"""Values shown decoded with their topic's schema in the API's pages (the spec's `topics:`, the
registry's Airflow connection); None, and the page shows bytes, when there is no schema or the value
does not decode. One codec per declared schema, built on first use and kept."""

from __future__ import annotations

import json
import threading
from typing import Any

from kafka_workflows.spec import WorkflowSpec

_lock = threading.Lock()
_codecs: dict[str, Any] = {}  # the declared schema (as JSON) -> its codec


def _codec(spec: WorkflowSpec, topic: str) -> Any:
    from kafka_workflows.schemas.resolve import declared
    from kafka_workflows_airflow.hooks import SchemaRegistryHook

    data = declared(spec, topic)  # read again each time: a changed schema file gets a codec of its own
    if data is None:
        return None
    key = json.dumps(data, sort_keys=True)
    with _lock:
        if key in _codecs:
            return _codecs[key]
    codec = SchemaRegistryHook().codec(data)
    with _lock:
        _codecs[key] = codec
    return codec


def decoded_value(spec: WorkflowSpec, topic: str, raw: bytes | None) -> dict[str, Any] | None:
    if spec.schema_for(topic) is None:
        return None
    from kafka_workflows.schemas.preview import decoded

    try:
        codec = _codec(spec, topic)
    except Exception:  # noqa: BLE001 - no registry connection, an unreadable schema: bytes are shown
        return None
    return decoded(codec, raw)
