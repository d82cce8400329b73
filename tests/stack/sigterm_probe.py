"""Run by test_reaper.py's SIGTERM test only (not collected: no test_ prefix).

The first test replaces SIGTERM's handler the way Airflow's in-process task runner does (dag.test()
runs it inside pytest and leaves its handler); the second starts the session broker, says so, and
waits to be terminated.
"""

from __future__ import annotations

import signal
import time

from stack.broker import Broker


def test_a_task_runner_takes_sigterm() -> None:
    signal.signal(signal.SIGTERM, lambda *_: None)  # what airflow.sdk's task_runner.run leaves behind


def test_waits_for_sigterm(broker: Broker) -> None:
    print(f"BROKER {broker.proc.pid}", flush=True)
    time.sleep(600)
