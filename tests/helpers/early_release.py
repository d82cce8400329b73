"""The session's airflow standalone stops after its last test, not at the end of the session (a pytest plugin).

Idle, it takes a fifth of one of the machine's two cores (its scheduler loops every 0.1 s). So the
tests that use it run next to each other (collection keeps every other test in its order), and
once the last of them has torn down, it stops. Its fixture's own teardown then finds it stopped.

The 3-broker cluster is not released early, though its JVMs idle too: a transactional producer
abandoned mid-call (librdkafka#5456, kafka/transactional.py) cannot be closed, and once its
brokers are gone it logs a refused connection every few seconds for the rest of the session.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

HEAVY = ("standalone",)  # session fixtures whose value has an idempotent stop()
_LAST = pytest.StashKey[dict[str, str]]()  # fixture name -> node id of its last user


def _uses(item: pytest.Item, name: str) -> bool:
    return name in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    last: dict[str, str] = {}
    for name in HEAVY:
        users = [item for item in items if _uses(item, name)]
        if users:
            first = items.index(users[0])
            items[first:] = [*users, *(item for item in items[first:] if not _uses(item, name))]
            last[name] = users[-1].nodeid
    config.stash[_LAST] = last


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
    last = item.config.stash.get(_LAST, {})
    funcargs = getattr(item, "funcargs", {}) or {}
    done = [funcargs[name] for name in HEAVY if last.get(name) == item.nodeid and name in funcargs]
    result = yield
    for resource in done:
        resource.stop()
    return result
