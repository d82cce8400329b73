"""An `oauth_cb` for SASL/OAUTHBEARER against a broker with Kafka's unsecured-JWT validator.

confluent-kafka calls it with `sasl.oauthbearer.config` (here: `principal=<name>`, which the tests
read from a secret file through the connection's `{"file": ...}` form) and takes (token, expiry).
"""

from __future__ import annotations

import base64
import json
import time

CALLS: list[str] = []


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def unsecured_jwt(config_str: str) -> tuple[str, float]:
    settings = dict(part.split("=", 1) for part in config_str.split() if "=" in part)
    principal = settings["principal"]
    CALLS.append(principal)
    now = time.time()
    token = f"{_b64({'alg': 'none'})}.{_b64({'sub': principal, 'iat': int(now), 'exp': int(now) + 3600})}."
    return token, now + 3600
