"""The companion worker (pattern 4, schedule and forget).

loop.py        Worker: lifecycle, consumer, rebalance, control and status
dispatch.py    the handler calls (the hot path, the general way) and carrying out retry decisions
batches.py     batch handlers: runs of one partition, and what a batch failure means
pacing.py      how many messages to consume at a time, so a batch never outlasts max.poll.interval.ms
holds.py       paused partitions: blocked behind a failure, or waiting for a retry to be due
checkpoint.py  at-least-once offsets: stored only after the writes they depend on
writes.py      retry and dead-letter writes, store reports
metrics.py     Prometheus metrics of one worker
concurrent.py  with concurrency: many keys of a partition at once, each in order (lanes.py, runners.py)
"""

from kafka_workflows.worker.dispatch import WorkerStats
from kafka_workflows.worker.loop import Worker

__all__ = ["Worker", "WorkerStats"]
