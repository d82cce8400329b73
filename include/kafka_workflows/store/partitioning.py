"""Partitioning of store commands: the Java client's default partitioner (murmur2 of the key).

A request's commands and its store value live in the same partition number, so a processor
restores exactly the state of the command partitions it owns. The clients here use librdkafka's
`murmur2_random`, which is the same function.
"""

from __future__ import annotations


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's default partitioner hash), as an unsigned 32-bit int."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h32 = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h32 = (h32 * m) & mask
        h32 ^= k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h32 ^= data[base + 2] << 16
    if tail >= 2:
        h32 ^= data[base + 1] << 8
    if tail >= 1:
        h32 ^= data[base]
        h32 = (h32 * m) & mask
    h32 ^= h32 >> 13
    h32 = (h32 * m) & mask
    h32 ^= h32 >> 15
    return h32


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition the Java client (and librdkafka's murmur2_random) puts `key` in."""
    data = key.encode() if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % partitions
