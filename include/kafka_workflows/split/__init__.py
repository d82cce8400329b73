"""Splitting a request into jobs, all-or-nothing (pattern 6's producing side).

jobs.py  produce_jobs: every job message and the store's init(total) in one transaction
"""

from kafka_workflows.split.jobs import JobsError, ProduceJobsResult, jobs_transactional_id, produce_jobs

__all__ = ["JobsError", "ProduceJobsResult", "jobs_transactional_id", "produce_jobs"]
