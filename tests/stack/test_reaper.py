"""A test runner that dies (SIGKILL: nothing of its own runs) or is terminated (SIGTERM) leaves no broker,
Postgres, registry or companion worker behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stack.reaper import members
from stack.wait import wait_for

REPO = Path(__file__).resolve().parents[2]

# A stand-in for pytest: starts a broker, a Postgres server, a schema registry, a process that moved to a process
# group of its own inside a watched session and a companion worker (as tests/helpers/kafka.py starts one), prints
# their session ids, then waits to be killed.
RUNNER = """
import json, os, subprocess, sys, tempfile, time
from pathlib import Path
from stack import reaper
from stack.broker import Broker, free_port
from stack.postgres import Postgres, scratch_dir
from stack.registry import SchemaRegistry

work = Path(tempfile.mkdtemp(prefix="kw-reaper-"))
broker = Broker(work / "kafka", port=free_port()).start()
postgres = Postgres(scratch_dir("kw-reaper-pg-") / "data").start()
registry = SchemaRegistry(work / "registry", port=free_port()).start()
# The session's leader starts a child that moves to a process group of its own (a leader itself may not).
wanderer = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, "
                             "'-c', 'import os, time; os.setpgid(0, 0); time.sleep(600)']); time.sleep(600)"],
                            start_new_session=True)
reaper.watch(wanderer.pid)
worker = reaper.popen([sys.executable, "-m", "kafka_workflows.cli", "worker", "--topic", "reaped", "--group", "reaped",
                       "--handler", "tests.helpers.handlers.record"],
                      env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                           "PYTHONPATH": os.pathsep.join(["include", "."])})
print(json.dumps({"broker": broker.proc.pid, "postgres": postgres.proc.pid, "registry": registry.proc.pid,
                  "wanderer": wanderer.pid, "worker": worker.pid}), flush=True)
time.sleep(600)
"""


@pytest.mark.integration
def test_a_sigkilled_runner_leaves_no_broker_postgres_registry_or_other_process_behind() -> None:
    runner = subprocess.Popen([sys.executable, "-c", RUNNER], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = runner.stdout.readline()  # type: ignore[union-attr]
        assert line, "the runner did not start its processes"
        started = json.loads(line)
        sessions = set(started.values())
        wait_for(lambda: len(members({started["wanderer"]})) == 2, 30, "the wanderer's child", 0.2)
        assert all(members({sid}) for sid in sessions), {name: members({sid}) for name, sid in started.items()}
        runner.send_signal(signal.SIGKILL)
        runner.wait(30)
        killed = time.monotonic()
        wait_for(lambda: not members(sessions), 60, "the broker, Postgres, registry, wanderer and worker to go", 0.5)
        print(f"everything the killed runner started was gone {time.monotonic() - killed:.1f}s after the kill")
    finally:
        if runner.poll() is None:
            runner.kill()
        for pid in members(sessions) if "sessions" in locals() else []:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.integration
def test_a_sigtermed_pytest_stops_and_leaves_no_broker_even_after_a_task_runner_took_sigterm() -> None:
    runner = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                               "tests/stack/sigterm_probe.py"], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    broker_pid = None
    try:
        for line in runner.stdout:  # type: ignore[union-attr]
            if "BROKER " in line:  # after the first test's dot
                broker_pid = int(line.split("BROKER ", 1)[1].split()[0])
                break
        assert broker_pid is not None, "the probe did not start its broker"
        runner.send_signal(signal.SIGTERM)
        runner.wait(120)  # raises TimeoutExpired if the SIGTERM was swallowed
        session = os.getsid(broker_pid) if Path(f"/proc/{broker_pid}").exists() else None
        wait_for(lambda: not Path(f"/proc/{broker_pid}").exists() or not members({session} - {None}), 60,
                 "the probe's broker to be gone", 0.5)
        assert runner.returncode != 0, "a terminated run must not pass"
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
