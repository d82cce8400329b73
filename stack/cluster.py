"""A 3-node Apache Kafka KRaft cluster on loopback, from the same Maven-resolved jars as `Broker`.

Every node is a combined broker+controller; the three controllers form one static quorum
(`controller.quorum.voters`), so the cluster keeps working, metadata included, while any one
node is down. Each node sets replication factor min(3, size) for new topics, the offsets topic
and the transaction state log, and min.insync.replicas min(2, size): with acks=all a write
survives the loss of one node and is refused rather than under-replicated when two are gone.

`kill(node)` is a SIGKILL (no controlled shutdown), `restart(node)` brings it back on its old
data and ports, `leader(topic, partition)` names the node leading a partition, and
`wait_in_sync()` waits until every replica is back in its partition's ISR. The ports and the
cluster id live in `<data_dir>/cluster.json`, so a cluster reused across starts keeps them.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from stack.broker import Broker, BrokerError, _cluster_id, free_port


class Cluster:
    """`size` combined KRaft nodes sharing one controller quorum; data under `data_dir/node-<id>`."""

    def __init__(self, data_dir: Path, size: int = 3, ports: list[int] | None = None, heap: str = "384m",
                 log_level: str = "WARN", extra: dict[str, str] | None = None) -> None:
        if size < 1:
            raise BrokerError(f"a cluster needs at least one node, got {size}")
        self.data_dir = Path(data_dir)
        self.size = size
        layout = self._layout(ports)
        voters = ",".join(f"{i}@127.0.0.1:{c}" for i, (_, c) in enumerate(layout["ports"], start=1))
        self.nodes = [
            Broker(self.data_dir / f"node-{i}", port=p, controller_port=c, heap=heap, log_level=log_level,
                   node_id=i, voters=voters, cluster_size=size, cluster_id=layout["cluster_id"], extra=extra)
            for i, (p, c) in enumerate(layout["ports"], start=1)
        ]

    def _layout(self, ports: list[int] | None) -> dict[str, Any]:
        """Ports and cluster id: the saved ones when this folder already holds the cluster."""
        saved = self.data_dir / "cluster.json"
        if saved.exists():
            layout = json.loads(saved.read_text())
            if len(layout["ports"]) == self.size and (ports is None or [p for p, _ in layout["ports"]] == ports):
                return layout
            raise BrokerError(f"{self.data_dir} holds a cluster with other nodes or ports ({saved}); "
                              "use another folder or remove this one")
        if ports is not None and len(ports) != self.size:
            raise BrokerError(f"{self.size} nodes need {self.size} ports, got {ports}")
        broker_ports = ports or [free_port() for _ in range(self.size)]
        layout = {"cluster_id": _cluster_id(), "ports": [[p, free_port()] for p in broker_ports]}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(layout))
        return layout

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    @property
    def log_file(self) -> Path:
        return self.nodes[0].log_file

    def node(self, node_id: int) -> Broker:
        return self.nodes[node_id - 1]

    def start(self, timeout: float = 180.0) -> Cluster:
        # All JVMs first: no node reports ready before a quorum of controllers is up.
        for node in self.nodes:
            node.launch()
        try:
            for node in self.nodes:
                node.wait_ready(timeout)
            self.wait_for_brokers(self.size, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node at once: one at a time, the last ones wait for a quorum that left."""
        for node in self.nodes:
            node.terminate()
        for node in self.nodes:
            node.stop(timeout)

    def kill(self, node_id: int) -> None:
        self.node(node_id).kill()

    def restart(self, node_id: int, timeout: float = 120.0) -> None:
        """Start a stopped or killed node again on its data; return once the cluster counts it."""
        node = self.node(node_id)
        node.launch()
        node.wait_ready(timeout)
        self.wait_for_brokers(self.size, timeout)

    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap_servers})

    def wait_for_brokers(self, count: int, timeout: float = 120.0) -> None:
        admin = self._admin()
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            try:
                seen = len(admin.list_topics(timeout=5).brokers)
            except Exception:  # noqa: BLE001 - a node is still coming up
                seen = 0
            if seen >= count:
                return
            time.sleep(0.3)
        raise BrokerError(f"the cluster reported {seen} of {count} brokers within {timeout:.0f}s; "
                          f"see {self.data_dir}/node-*/server.log")

    def leader(self, topic: str, partition: int = 0, timeout: float = 60.0) -> Broker:
        """The live node that leads `topic[partition]` (waits while it has none, or a killed one)."""
        admin = self._admin()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                meta = admin.list_topics(topic, timeout=5).topics[topic]
                leader = meta.partitions[partition].leader if meta.error is None else -1
            except Exception:  # noqa: BLE001 - metadata not available yet
                leader = -1
            if leader > 0 and self.node(leader).running:  # metadata names a killed leader for a few seconds
                return self.node(leader)
            time.sleep(0.2)
        raise BrokerError(f"{topic}[{partition}] has no leader after {timeout:.0f}s")

    def wait_in_sync(self, topics: list[str] | None = None, timeout: float = 120.0) -> None:
        """Wait until every partition of `topics` (default: all) has all its replicas in sync."""
        admin = self._admin()
        deadline = time.monotonic() + timeout
        lagging: list[str] = []
        while time.monotonic() < deadline:
            try:
                metadata = admin.list_topics(timeout=5).topics
            except Exception:  # noqa: BLE001 - retry until the deadline
                time.sleep(0.5)
                continue
            lagging = [f"{name}[{p.id}]" for name, t in metadata.items() if topics is None or name in topics
                       for p in t.partitions.values() if set(p.isrs) != set(p.replicas) or p.leader < 0]
            if not lagging:
                return
            time.sleep(0.5)
        raise BrokerError(f"replicas still out of sync after {timeout:.0f}s: {lagging[:10]}")


def new_cluster_dir(parent: Path) -> Path:
    """A fresh folder for a throwaway cluster under `parent`."""
    path = Path(parent) / f"cluster-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path
