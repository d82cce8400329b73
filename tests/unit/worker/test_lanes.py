"""The key-ordered scheduler alone (worker/lanes.py): order per key, the cap, holds, stored offsets."""

from __future__ import annotations

from confluent_kafka import Message as KafkaMessage

from kafka_workflows.worker.lanes import Entry, KeyScheduler, Track

TP = ("t", 0)


def entry(offset: int, key: str | None) -> Entry:
    msg = KafkaMessage(topic="t", partition=0, offset=offset, key=None if key is None else key.encode(), value=b"{}")
    return Entry(msg, TP)


def admit(s: KeyScheduler, *items: tuple[int, str | None]) -> list[Entry]:
    entries = [entry(o, k) for o, k in items]
    for e in entries:
        s.admit(e, s.track(TP))
    return entries


def test_the_stored_offset_is_the_lowest_not_done() -> None:
    track = Track()
    track.pending.extend([5, 6, 7, 9])
    assert track.complete(6) is None
    assert track.complete(9) is None
    assert track.complete(5) == 7  # 5 and 6 done: 7 is the lowest not done
    assert track.complete(7) == 10  # all done: past the last (a gap at 8 is a transaction marker)


def test_one_call_per_key_at_a_time_lowest_offsets_first_and_at_most_concurrency() -> None:
    s = KeyScheduler(concurrency=2, max_messages=100, max_bytes=1 << 20)
    e = admit(s, (0, "a"), (1, "a"), (2, "b"), (3, "c"), (4, None), (5, None))
    assert [x.offset for x in s.start()] == [0, 2]  # a's second waits behind its first; the cap is 2
    s.returned(e[0])
    assert s.finished(e[0]) == 1
    assert [x.offset for x in s.start()] == [1]  # lowest head first: a@1 before c@3
    for x in (e[2], e[1]):
        s.returned(x)
        s.finished(x)
    assert [x.offset for x in s.start()] == [3, 4]  # keyless messages are lanes of their own
    assert s.messages == 3 and s.running == 2


def test_a_held_key_waits_in_order_while_others_run_and_is_released_when_due() -> None:
    s = KeyScheduler(concurrency=4, max_messages=100, max_bytes=1 << 20)
    e = admit(s, (0, "bad"), (1, "bad"), (2, "ok"))
    assert [x.offset for x in s.start()] == [0, 2]
    s.returned(e[0])
    s.hold(e[0], delay=60, error="TimeoutError: slow")
    s.returned(e[2])
    assert s.finished(e[2]) is None  # 0 is not done: nothing past it may be stored
    assert s.start() == []  # bad@1 waits behind bad@0
    assert [h.describe()["key"] for h in s.holds.values()] == ["bad"]
    s.release_due(now=float("inf"))
    assert [x.offset for x in s.start()] == [0]  # the held message again, not the next one
    s.returned(e[0])
    assert s.finished(e[0]) == 1 and not s.holds
    assert [x.offset for x in s.start()] == [1]


def test_full_at_the_cap_and_drained_at_half() -> None:
    s = KeyScheduler(concurrency=10, max_messages=4, max_bytes=1 << 20)
    e = admit(s, *((o, f"k{o}") for o in range(4)))
    assert s.full()
    for x in s.start()[:2]:
        s.returned(x)
        s.finished(x)
    assert not s.full() and s.drained()
    assert s.peak_messages == 4 and s.bytes == sum(x.size for x in e[2:])


def test_dropping_revoked_work_keeps_running_calls_and_forgets_the_rest() -> None:
    s = KeyScheduler(concurrency=1, max_messages=100, max_bytes=1 << 20)
    admit(s, (0, "a"), (1, "a"), (2, "b"))
    [running] = s.start()
    s.drop_waiting({TP})
    assert s.messages == 1 and s.running_in({TP}) == 1 and not s.ready
    assert s.forget({TP}) == [running] and running.abandoned
    assert s.messages == 0 and TP not in s.tracks
