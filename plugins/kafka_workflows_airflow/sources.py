"""Open a split step's CSV source, if it lies under an allowed root, as a binary stream for the core.

Where a source may come from is configured, and nothing else is read:

    [kafka_workflows]
    allowed_sources = file:///data/imports/, s3://imports/, https://exports.example.com/contacts/
    # env: AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_SOURCES

plus the split step's own `allowed_sources: [...]` in a workflow spec (its author already decides
what the DAG runs): a source is allowed when it lies under any of these roots. Nothing configured
means nothing is allowed. Every check happens before a byte of the source is read:

- a plain path is a `file://` URL and must be absolute; `..` and `.` segments are refused (also
  percent-encoded), a `file://` URL must name this machine;
- `file://`: the path with every symlink resolved must still lie under the root with every symlink
  resolved (a link out of the root is refused), and be a regular file (not a FIFO or a device);
- other fsspec schemes (`s3://`, `gs://`, `abfs://`, ...; a connection as `s3://conn_id@bucket/key`
  or `source_conn_id`): bucket and key must lie under a root of the same scheme;
- `http(s)://`: `egress.Egress` rules (allowed prefixes, public addresses unless
  `[kafka_workflows] allowed_networks`, every redirect checked again).

Local files are opened by their checked, resolved path (any name: spaces, `%`, `#`; never a URL
that something would have to decode again), object stores through Airflow's `ObjectStoragePath`
(fsspec), http(s) through the egress guard. A refusal is `SourceRefusedError` and a local file that
does not exist `SourceMissingError`: the task fails at once, without retries (a retry cannot make
either right). `SourceUnreadableError` (retried) is left for what may pass: a network failure, an
HTTP error, an object store that did not answer. Errors name the rule, never content.
"""

from __future__ import annotations

import os
import posixpath
import stat
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO

from kafka_workflows.sources.csv_source import CsvSourceError, SourceUnreadableError, describe_source
from kafka_workflows_airflow.egress import (
    SECTION,
    Egress,
    EgressRefused,
    HttpStatusError,
    IPNetwork,
    allowed_networks,
    config_list,
    has_dot_segments,
)

RULE = f"[{SECTION}] allowed_sources or the split step's allowed_sources"


class SourceRefusedError(CsvSourceError):
    """The source lies outside every allowed root (or tries to climb out of one): nothing was read."""


class SourceMissingError(CsvSourceError):
    """The local file does not exist (or is a directory): failing again later would not help."""


def _normalize_root(root: str) -> str:
    root = root.strip()
    parts = urllib.parse.urlsplit(root)
    if not parts.scheme or len(parts.scheme) == 1:
        if not os.path.isabs(root):
            raise SourceRefusedError(f"allowed source root {root!r} must be absolute or a URL such as "
                                     "file:///data/imports/ or s3://imports/")
        root = "file://" + urllib.request.pathname2url(root)
    return root if root.endswith("/") else root + "/"


@dataclass(frozen=True)
class SourcePolicy:
    """The allowed roots (config first, then the step's) and the non-public networks http may reach."""

    roots: tuple[str, ...]
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def load(cls, step_roots: Iterable[str] | None = None) -> SourcePolicy:
        roots = [*config_list("allowed_sources"), *(step_roots or ())]
        return cls(tuple(_normalize_root(r) for r in roots), allowed_networks())

    def describe(self) -> str:
        return ", ".join(self.roots) if self.roots else "nothing is configured"

    def refuse(self, name: str, why: str) -> SourceRefusedError:
        return SourceRefusedError(f"source {name} refused: {why} ({RULE}; allowed roots: {self.describe()})")


def _to_url(source: str) -> str:
    parts = urllib.parse.urlsplit(source)
    if parts.scheme and len(parts.scheme) > 1:
        return source
    if not os.path.isabs(source):
        raise SourceRefusedError(f"source {source} refused: a path must be absolute (or a file://, s3://, "
                                 "https:// ... URL)")
    return "file://" + urllib.request.pathname2url(source)


def _local_path(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise SourceRefusedError(f"source {describe_source(url)} refused: a file:// URL must name this machine "
                                 f"(host {parts.hostname!r})")
    return urllib.request.url2pathname(parts.path)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def open_source(source: str, policy: SourcePolicy, *, conn_id: str | None = None,
                timeout: float = 60.0) -> IO[bytes]:
    """Check `source` against `policy`, then open it for streaming reads."""
    url = _to_url(source.strip())
    name = describe_source(url)
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if has_dot_segments(parts.path):
        raise policy.refuse(name, "a '..' or '.' path segment is not allowed (path traversal)")
    if scheme in ("http", "https"):
        return _open_http(url, name, policy, timeout)
    if scheme == "file":
        return _open_file(url, name, policy)
    return _open_object(url, name, scheme, policy, conn_id)


def _open_file(url: str, name: str, policy: SourcePolicy) -> IO[bytes]:
    path = _local_path(url)
    roots = [_local_path(r) for r in policy.roots if urllib.parse.urlsplit(r).scheme.lower() == "file"]
    if not any(_within(os.path.normpath(path), os.path.normpath(root)) for root in roots):
        raise policy.refuse(name, "it is not under an allowed root")
    real = os.path.realpath(path)
    if not any(_within(real, os.path.realpath(root)) for root in roots):
        raise policy.refuse(name, "it resolves (through a symbolic link) to a place outside the allowed roots")
    try:
        info = os.stat(real)
    except FileNotFoundError as exc:
        raise SourceMissingError(f"{name}: no such file") from exc
    except OSError as exc:
        raise SourceUnreadableError(f"{name}: cannot open it ({exc.strerror or type(exc).__name__})") from exc
    if stat.S_ISDIR(info.st_mode):
        raise SourceMissingError(f"{name}: is a directory, not a CSV file")
    if not stat.S_ISREG(info.st_mode):
        raise policy.refuse(name, "it is not a regular file (a device, FIFO or socket)")
    try:
        # O_NONBLOCK: should the path have become a FIFO since the check, opening it does not hang
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise SourceMissingError(f"{name}: no such file") from exc
    except OSError as exc:
        raise SourceUnreadableError(f"{name}: cannot open it ({exc.strerror or type(exc).__name__})") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise policy.refuse(name, "it is not a regular file (a device, FIFO or socket)")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _open_object(url: str, name: str, scheme: str, policy: SourcePolicy, conn_id: str | None) -> IO[bytes]:
    parts = urllib.parse.urlsplit(url)
    target = posixpath.join(parts.hostname or "", parts.path.lstrip("/"))  # bucket/key, without conn_id@
    for root in policy.roots:
        allowed = urllib.parse.urlsplit(root)
        prefix = posixpath.join(allowed.netloc.rpartition("@")[2], allowed.path.lstrip("/"))
        if allowed.scheme.lower() == scheme and _within(target, prefix):
            return _open_path(url, name, conn_id)
    raise policy.refuse(name, "it is not under an allowed root")


def _open_path(url: str, name: str, conn_id: str | None) -> IO[bytes]:
    from airflow.sdk import ObjectStoragePath

    try:
        path = ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)
        return path.open("rb")  # type: ignore[no-any-return]
    except FileNotFoundError as exc:
        raise SourceUnreadableError(f"{name}: no such file or object") from exc
    except IsADirectoryError as exc:
        raise SourceUnreadableError(f"{name}: is a directory, not a CSV file") from exc
    except (OSError, ValueError, ImportError) as exc:
        raise SourceUnreadableError(f"{name}: cannot open it ({type(exc).__name__}"
                                    f"{': ' + exc.strerror if getattr(exc, 'strerror', None) else ''})") from exc


def _open_http(url: str, name: str, policy: SourcePolicy, timeout: float) -> IO[bytes]:
    prefixes = tuple(r for r in policy.roots if urllib.parse.urlsplit(r).scheme.lower() in ("http", "https"))
    egress = Egress(prefixes, RULE, policy.networks)
    try:
        return egress.request("GET", url, headers={"User-Agent": "kafka-workflows", "Accept": "text/csv, */*"},
                              timeout=timeout)
    except EgressRefused as exc:
        raise SourceRefusedError(f"source {name} refused: {exc}") from None
    except HttpStatusError as exc:
        raise SourceUnreadableError(f"{name}: the server answered HTTP {exc.status}") from None
    except OSError as exc:
        raise SourceUnreadableError(f"{name}: cannot fetch it ({exc})") from None


def step_roots(value: Sequence[str] | str | None) -> list[str]:
    """A split step's `allowed_sources`: a list, or one comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    return [str(v) for v in value]
