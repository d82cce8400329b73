"""Where a concurrent worker's handler calls run: one asyncio loop, or a bounded thread pool.

`async def` handlers run as tasks on one event loop in a thread of its own; plain functions run on
a ThreadPoolExecutor of `concurrency` threads. Either way each call's outcome (the entry, the
exception or None, the seconds it took) is put on a queue the worker's loop thread drains: all
bookkeeping, writes and offsets stay on that one thread. The scheduler (worker/lanes.py) never
starts more than `concurrency` calls, so neither runner needs a limit of its own.

`blocking_call` adapts an `async def` handler to the one-at-a-time path (no concurrency): each
call runs to completion on one event loop kept for the worker's life.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from queue import SimpleQueue
from typing import Any

from kafka_workflows.messages import Message
from kafka_workflows.observe import tracing

Outcome = tuple[Any, Exception | None, float]  # (entry, error or None, seconds)


def is_async(handler: Callable[..., Any]) -> bool:
    """An `async def` function (or an object whose __call__ is one)."""
    call = type(handler).__call__ if not inspect.isfunction(handler) else None
    return inspect.iscoroutinefunction(handler) or (call is not None and inspect.iscoroutinefunction(call))


def blocking_call(handler: Callable[[Message], Any]) -> Callable[[Message], Any]:
    """`handler(message)` awaited to the end on a loop of its own, for the one-at-a-time path."""
    loop = asyncio.new_event_loop()

    def call(message: Message) -> Any:
        return loop.run_until_complete(handler(message))

    call.__qualname__ = getattr(handler, "__qualname__", "handler")
    return call


def traced(entry: Any, group: str | None) -> Any:
    """The consumer span of one concurrent call (an `Entry` of worker/lanes.py): a child of the
    message's trace context and linked to it; a job's store report then carries the span's context."""
    inbound = entry.inbound
    msg = inbound.msg
    attributes = tracing.messaging(msg.topic(), msg.partition(), msg.offset(), group=group)
    attributes["kw.attempt"] = inbound.attempt
    if inbound.request_id is not None:
        attributes["kw.request_id"] = inbound.request_id
    if inbound.job_index >= 0:
        attributes["kw.job_index"] = inbound.job_index
    return _Traced(inbound, attributes)


class _Traced:
    def __init__(self, inbound: Any, attributes: dict[str, Any]) -> None:
        self.inbound, self.attributes, self._span = inbound, attributes, None

    def __enter__(self) -> None:
        inbound = self.inbound
        parent = inbound.trace
        self._span = tracing.span(f"process {inbound.msg.topic()}", kind="CONSUMER", parent=parent,
                                  links=(parent,) if parent is not None else (), attributes=self.attributes)
        self._span.__enter__()
        inbound.trace = tracing.current()

    def __exit__(self, *exc: Any) -> Any:
        return self._span.__exit__(*exc)  # type: ignore[union-attr]


class ThreadRunner:
    """Plain handlers on a pool of `size` threads."""

    def __init__(self, handler: Callable[[Message], Any], size: int, outcomes: SimpleQueue[Outcome],
                 group: str | None = None) -> None:
        self._handler = handler
        self.group = group
        self._outcomes = outcomes
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="kw-handler")

    def submit(self, calls: Sequence[tuple[Any, Message]]) -> None:
        for entry, message in calls:
            self._pool.submit(self._call, entry, message)

    def _call(self, entry: Any, message: Message) -> None:
        started = time.perf_counter()
        try:
            if tracing.ENABLED:
                with traced(entry, self.group):
                    self._handler(message)
            else:
                self._handler(message)
        except Exception as exc:  # noqa: BLE001 - the worker's loop carries out what it becomes
            self._outcomes.put((entry, exc, time.perf_counter() - started))
        except BaseException as exc:  # noqa: BLE001 - SystemExit in a pool thread stops nothing: a failure
            error = RuntimeError(f"handler raised {type(exc).__name__}")
            self._outcomes.put((entry, error, time.perf_counter() - started))
        else:
            self._outcomes.put((entry, None, time.perf_counter() - started))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class AsyncRunner:
    """`async def` handlers as tasks on one event loop, run by a thread of its own."""

    def __init__(self, handler: Callable[[Message], Any], outcomes: SimpleQueue[Outcome],
                 group: str | None = None) -> None:
        self._handler = handler
        self.group = group
        self._outcomes = outcomes
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones
        self._thread = threading.Thread(target=self._loop.run_forever, name="kw-async-handlers", daemon=True)

    def submit(self, calls: Sequence[tuple[Any, Message]]) -> None:
        if calls:
            if self._thread.ident is None:
                self._thread.start()  # on first use: a worker that never runs starts no thread
            self._loop.call_soon_threadsafe(self._start, list(calls))

    def _start(self, calls: list[tuple[Any, Message]]) -> None:
        for entry, message in calls:
            task = self._loop.create_task(self._call(entry, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _call(self, entry: Any, message: Message) -> None:
        started = time.perf_counter()
        try:
            if tracing.ENABLED:
                with traced(entry, self.group):  # the span is the task's own (contextvars)
                    await self._handler(message)
            else:
                await self._handler(message)
        except Exception as exc:  # noqa: BLE001 - the worker's loop carries out what it becomes
            self._outcomes.put((entry, exc, time.perf_counter() - started))
        else:
            self._outcomes.put((entry, None, time.perf_counter() - started))

    def close(self) -> None:
        def cancel() -> None:
            for task in list(self._tasks):
                task.cancel()
            self._loop.stop()

        if self._loop.is_running():
            self._loop.call_soon_threadsafe(cancel)
            self._thread.join(10)
