"""A 3-node KRaft cluster per test session, for the tests that take brokers away (tests/cluster/)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.cluster import Cluster
from tests.conftest import STATE


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    data = Path(tempfile.mkdtemp(prefix="kafka-cluster-", dir=STATE))
    instance = Cluster(data, size=3).start()
    yield instance
    instance.stop()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def cluster_config(cluster: Cluster) -> dict[str, str]:
    return {"bootstrap.servers": cluster.bootstrap_servers}
