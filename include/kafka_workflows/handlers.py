"""Resolve callables named by dotted path (`package.module.function`), as YAML names them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from kafka_workflows.errors import HandlerImportError


def resolve_callable(path: str, what: str = "handler") -> Callable[..., Any]:
    """Import `package.module.attr` (or `package.module:attr`) and check it is callable."""
    if not isinstance(path, str) or not path.strip():
        raise HandlerImportError(f"{what} path must be a non-empty dotted path, got {path!r}")
    module_name, sep, attr = path.replace(":", ".").rpartition(".")
    if not sep or not module_name or not attr:
        raise HandlerImportError(f"{what} path {path!r} must look like 'package.module.function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerImportError(f"{what} {path!r}: cannot import module {module_name!r} ({exc})") from exc
    try:
        target = getattr(module, attr)
    except AttributeError as exc:
        raise HandlerImportError(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}") from exc
    if not callable(target):
        raise HandlerImportError(f"{what} {path!r} is a {type(target).__name__}, not a callable")
    return target


def batch_handler(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark `fn(messages: MessageBatch)` as a batch handler.

    The worker then calls it with consecutive messages of one partition (at most its batch size)
    instead of one message at a time. Returning means every message of the batch is done. To
    fail one message, raise `BatchItemFailed(index)` from its error: the ones before it are done,
    it goes through the retry policy, the rest come again. Any other error makes the worker hand
    the batch's messages over again one at a time, so the policy acts on the one that fails.
    """
    fn.kw_batch_handler = True  # type: ignore[attr-defined]
    return fn


def is_batch_handler(fn: Callable[..., Any]) -> bool:
    return getattr(fn, "kw_batch_handler", False) is True
