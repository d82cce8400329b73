"""What the stack starts dies with the process that started it, however that process ends.

The broker, the cluster's nodes, Postgres and `airflow standalone` run in sessions of their own
(so a Ctrl-C in a terminal reaches the test runner, which stops them in order, and not them first).
The price: when the runner itself dies (SIGKILL, a CI timeout, a crash) they would run on. So every
session is handed to one reaper process per runner, in a session of its own, which holds the read end
of a pipe. The runner writes `+<sid>` when it starts one and `-<sid>` when it has stopped it; when the
pipe closes (the kernel closes it whatever way the runner ended) the reaper sends SIGTERM to every
process of the sessions still listed (found in /proc by session id, so an Airflow component that
moved to a process group of its own is found too), SIGKILL to those still there GRACE seconds later,
and exits. Linux only, like the rest of the stack.

    watch(proc.pid)     after Popen(..., start_new_session=True): the session id is the leader's pid
    unwatch(proc.pid)   once that session is stopped
    popen(args, ...)    both for a plain child (a worker, a store processor, an Airflow component a test
                        starts itself): a Popen in a session of its own, watched until it is reaped
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

GRACE = 15.0  # seconds between SIGTERM and SIGKILL (Airflow's components take ~12 s to stop)

_lock = threading.Lock()
_reaper: subprocess.Popen[bytes] | None = None


def _tell(line: str) -> None:
    global _reaper
    with _lock:
        if _reaper is None or _reaper.poll() is not None:
            _reaper = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        stdin: IO[bytes] = _reaper.stdin  # type: ignore[assignment]
        stdin.write(f"{line}\n".encode())
        stdin.flush()


def watch(sid: int) -> None:
    """Stop session `sid` when this process ends, unless `unwatch` said it is stopped already."""
    _tell(f"+{sid}")


def unwatch(sid: int) -> None:
    _tell(f"-{sid}")


class WatchedProcess(subprocess.Popen):  # type: ignore[type-arg]
    """A child in a session of its own that the reaper stops should this process end first; stopped and
    waited for as any Popen (terminate, kill, wait, poll), and forgotten by the reaper once reaped."""

    def __init__(self, args: Any, **kwargs: Any) -> None:
        super().__init__(args, start_new_session=True, **kwargs)
        self._watched = True
        watch(self.pid)

    def _reaped(self, code: int | None) -> int | None:
        if code is not None and getattr(self, "_watched", False):
            self._watched = False
            unwatch(self.pid)
        return code

    def poll(self) -> int | None:
        return self._reaped(super().poll())

    def wait(self, timeout: float | None = None) -> int:
        return self._reaped(super().wait(timeout))  # type: ignore[return-value]


def popen(args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
    """`subprocess.Popen(args, **kwargs)` that dies with whoever started it, however that ends (a
    worker left running after its test runner was killed would retry the dead broker for ever)."""
    return WatchedProcess(args, **kwargs)


def stop_session(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM the session `proc` leads (started with start_new_session=True), SIGKILL it after
    `timeout` seconds, wait, and tell the reaper it is stopped. The one stop of every stack server."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # the leader's group may be gone already
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    unwatch(proc.pid)


def members(sessions: set[int]) -> list[int]:
    """Pids of the live processes in `sessions` (zombies left out: they are gone already)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if len(fields) > 3 and fields[0] != b"Z" and int(fields[3]) in sessions:
            found.append(int(entry))
    return found


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe's end stops the reaper
    sessions: set[int] = set()
    for raw in sys.stdin.buffer:
        line = raw.strip().decode("ascii", "replace")
        if line[:1] in "+-" and line[1:].isdigit():
            (sessions.add if line[0] == "+" else sessions.discard)(int(line[1:]))
    if not sessions:
        return
    _signal(members(sessions), signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while members(sessions) and time.monotonic() < deadline:
        time.sleep(0.2)
    _signal(members(sessions), signal.SIGKILL)


if __name__ == "__main__":
    main()
