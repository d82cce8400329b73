"""A stored value shown decoded with its schema, for the operations UI; bytes when it cannot be.

    decoded(codec, raw) -> {"value_decoded": <JSON-safe>, "schema": {"subject", "id", "version", "format"}} or None

None when the value does not decode (not the wire format, an unknown id, a shape the schema cannot
read, the registry away): the caller then shows the bytes as it always did. Nothing here raises.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from kafka_workflows.schemas.codec import Codec

log = logging.getLogger(__name__)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "DESCRIPTOR"):  # a Protobuf message
        from google.protobuf.json_format import MessageToDict

        return MessageToDict(value, preserving_proto_field_name=True)
    return str(value)


def _version(codec: Codec, schema_id: int) -> int | None:
    """The subject's version with this id (`/schemas/ids/{id}/versions`), when the registry says."""
    try:
        answer = codec.client._rest_client.get(f"schemas/ids/{schema_id}/versions")
        for entry in answer or ():
            if entry.get("subject") == codec.subject:
                return int(entry["version"])
    except Exception:  # noqa: BLE001 - an older registry: no version shown
        return None
    return None


def decoded(codec: Codec | None, raw: bytes | None) -> dict[str, Any] | None:
    if codec is None or not raw:
        return None
    try:
        value = codec.decode(raw, "preview")
    except Exception as exc:  # noqa: BLE001 - shown as bytes instead
        log.debug("preview: not decoded with subject %s (%s)", codec.subject, type(exc).__name__)
        return None
    schema_id = int.from_bytes(raw[1:5], "big")
    return {"value_decoded": _json_safe(value),
            "schema": {"subject": codec.subject, "id": schema_id, "version": _version(codec, schema_id),
                       "format": codec.schema.format}}
