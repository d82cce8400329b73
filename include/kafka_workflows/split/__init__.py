"""Splitting a request into jobs (pattern 6's producing side).

jobs.py  produce_jobs: job messages and the store's init(total), in one transaction or pipelined in
         chunks (each with the split's progress; init only in the last), resumed by a retry
"""

from kafka_workflows.split.jobs import (
    DEFAULT_CHUNK_JOBS,
    DEFAULT_CHUNK_SECONDS,
    JobsError,
    ProduceJobsResult,
    RequestAbortedError,
    jobs_transactional_id,
    produce_jobs,
)

__all__ = ["DEFAULT_CHUNK_JOBS", "DEFAULT_CHUNK_SECONDS", "JobsError", "ProduceJobsResult", "RequestAbortedError",
           "jobs_transactional_id", "produce_jobs"]
