"""Heavy session resources stop after their last test, not at the end of the session (a pytest plugin).

The 3-broker cluster and the session's airflow standalone idle at a fifth of a core between them
(three JVMs; a scheduler looping every 0.1 s), and the machine has two. So the tests that use one
run next to each other (collection keeps every other test in its order), and once the last of
them has torn down, the resource stops. Its fixture's own teardown then finds it stopped.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

HEAVY = ("cluster", "standalone")  # session fixtures whose value has an idempotent stop()
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
