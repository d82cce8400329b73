"""Carrying out what happens to a record, written once for every strategy and operator action.

done         the handler returned: its job is reported to the store (the strategy times it);
failed       the handler raised: the group's circuit breaker (retry/breaker.py) is asked first; open,
             the record is held with its attempt given back (never a retry or a dead letter), for
             every strategy. Else `retry.decision.decide` says what it becomes, carried out here:
             a hold (the strategy's own: a paused partition, or one key's lane, given as `hold`),
             a retry-topic write or a dead letter;
dead letter  the record goes to its base's dead-letter topic, made to fit (worker/writes.py);
reject       the inbound boundary refused the record (worker/inbound.py): dead-lettered, named;
skip         an operator skipped a held record: dead-lettered, marked with who, why and when.

The strategies (worker/dispatch.py, batches.py, concurrent.py) and the operator actions
(worker/operations.py) decide nothing of this themselves: they call these.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafka_workflows import headers as h
from kafka_workflows.errors import MessageDecodeError
from kafka_workflows.messages import where
from kafka_workflows.retry.decision import HOLD, RETRY, decide
from kafka_workflows.retry.provenance import SKIP_REASON, SKIPPED_AT, SKIPPED_BY
from kafka_workflows.worker.context import WorkerContext
from kafka_workflows.worker.inbound import Inbound

log = logging.getLogger(__name__)

# hold(delay seconds, "ErrorType: message", given_back): the strategy pauses what must wait;
# given_back: the failure does not count as an attempt (the circuit breaker is open)
Hold = Callable[[float, str, bool], None]
BREAKER_HOLD = "circuit breaker open: "  # the error of a hold the breaker made


class Skipped(Exception):
    """Stands for the last error of a message an operator skipped; named after that error."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class Outcomes:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._report = ctx.writes.store_client is not None

    def done(self, inbound: Inbound) -> None:
        """The handler returned: a store's job is complete."""
        if self._report:
            self.ctx.writes.report(inbound, None)

    def failed(self, inbound: Inbound, headers: Mapping[str, str], exc: Exception, failures: int,
               hold: Hold) -> bool:
        """The handler raised `exc` on this record, its `failures`-th failure in place. True when
        the record moved on (retry topic, dead letter), False when `hold` was called."""
        ctx, msg = self.ctx, inbound.msg
        if isinstance(exc, MessageDecodeError) and exc.record is msg:  # decoding again cannot help
            log.error("%s; dead-lettering it", exc)
            self.dead_letter(inbound, headers, exc)
            return True
        ctx.stats.failed += 1
        ctx.metrics.failed.labels(ctx.group, inbound.base, type(exc).__name__).inc()
        if ctx.incidents is not None:  # a fingerprint's spike asks a human (published by the loop)
            ctx.incidents.failed(type(exc).__name__)
        breaker = ctx.breaker
        if breaker is not None and breaker.failed(exc, ctx.tallies.pending()):
            # Open (or opened now): the record waits where it is, its attempt given back; the rest
            # of the consumed batch is given back too (the loop pauses the partitions).
            wait = breaker.wait()
            hold(min(wait, 24 * 3600.0), f"{BREAKER_HOLD}{type(exc).__name__}: {exc}", True)
            ctx.cut.interrupted = True
            ctx.on_change()
            log.warning("handler failed on %s: %s; the circuit breaker is open (%s): held, attempt given back",
                        where(msg), type(exc).__name__, breaker.reason)
            return False
        decision = decide(ctx.policy, exc, failures=failures, retry_round=inbound.round)
        if decision.kind == HOLD:
            hold(decision.delay, f"{type(exc).__name__}: {exc}", False)
            ctx.on_change()
            log.warning("handler failed on %s (attempt %d): %s: %s; held for %.2fs", where(msg),
                        inbound.attempt_after(failures - 1), type(exc).__name__, exc, decision.delay)
            return False
        if decision.kind == RETRY:
            try:
                fits = ctx.writes.retry(inbound, headers, exc, decision.round, decision.delay)
            except h.HeaderError as untrusted:  # its attempt count cannot be carried on
                self.reject(inbound, headers, untrusted)
                return True
            if not fits:
                log.warning("%s failed (%s) and is too large for a retry topic (%d bytes); dead-lettering",
                            where(msg), type(exc).__name__, len(msg.value() or b""))
                self.dead_letter(inbound, headers, exc)
                return True
            ctx.stats.retried += 1
            ctx.metrics.child(ctx.metrics.retried, inbound.base).inc()
            log.info("%s failed (%s); retry %d in %.1fs", where(msg), type(exc).__name__, decision.round,
                     decision.delay)
            return True
        log.warning("%s: %s; dead-lettering", where(msg), decision.reason)
        self.dead_letter(inbound, headers, exc)
        return True

    def reject(self, inbound: Inbound, headers: Mapping[str, str] | None = None,
               error: h.HeaderError | None = None) -> None:
        """A record the boundary refused (or whose kw- headers cannot be carried on): dead-lettered,
        the header named, never quoted. A value that does not decode with its schema is dead-lettered
        at once with kw-schema-subject, kw-schema-id and kw-schema-error (its job counts as failed)."""
        refused = error or inbound.error
        assert refused is not None
        inbound.error = refused  # a HeaderError: never reported to a store as a job
        headers = headers if headers is not None else h.decode(inbound.msg.headers())
        schema_headers = getattr(refused, "schema_headers", None)
        if isinstance(refused, MessageDecodeError) and callable(schema_headers):
            log.error("%s; dead-lettering it", refused)
            self.dead_letter(inbound, headers, refused, extra=schema_headers())
            return
        log.error("%s: %s; dead-lettering it", where(inbound.msg), refused)
        self.ctx.metrics.headers_untrusted.labels(self.ctx.group, inbound.base).inc()
        self.dead_letter(inbound, headers, refused)

    def dead_letter(self, inbound: Inbound, headers: Mapping[str, str], exc: BaseException,
                    extra: Mapping[str, object] | None = None) -> None:
        ctx = self.ctx
        ctx.writes.dead_letter(inbound, headers, exc, extra)
        ctx.stats.dead_lettered += 1
        ctx.metrics.child(ctx.metrics.dead_lettered, inbound.base).inc()

    def skip(self, inbound: Inbound, error: str, record: Mapping[str, Any]) -> None:
        """An operator's skip of a held record (`error`: its last "ErrorType: message")."""
        name, _, text = error.partition(":")
        exc = Skipped(text.strip() or "skipped by an operator", name or "Skipped")
        at = record.get("at")
        self.dead_letter(inbound, h.decode(inbound.msg.headers()), exc, extra={
            SKIPPED_BY: record.get("by"), SKIP_REASON: record.get("reason") or "",
            SKIPPED_AT: int((at if isinstance(at, int | float) else time.time()) * 1000)})
