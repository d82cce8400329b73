"""Outbound HTTP only where someone allowed it: http(s) CSV sources and webhook callbacks.

Two rules, checked for the first URL and again for every redirect, before anything is sent:

1. **Allowed prefixes.** The URL must lie under one of the allowed prefixes (`scheme://host[:port]/path/`:
   same scheme, host, port; the path below the prefix's; no `..` segment). Sources use
   `[kafka_workflows] allowed_sources` (plus a split step's `allowed_sources`), callbacks
   `[kafka_workflows] allowed_callbacks`. Nothing configured means nothing allowed.
2. **Public addresses.** Every address the host resolves to must be public (`ipaddress` says
   `is_global`, not multicast): loopback, link-local (cloud metadata at 169.254.169.254 included),
   private, shared (100.64/10) and reserved addresses are refused unless they lie in
   `[kafka_workflows] allowed_networks` (CIDRs, e.g. `127.0.0.1/32` for a test receiver). The
   connection then goes to the very address that was checked (no second DNS lookup a rebinding
   DNS server could answer differently); TLS still verifies the host name. Proxy variables are
   not used.

Hand-written with the standard library (`ipaddress`, `http.client`): the one PyPI library for this
(advocate) is unmaintained and wraps `requests`, which this project does not use.

Errors name the rule that refused and the URL without credentials or query; a server's answer is
reduced to its status code (its reason phrase, headers and body are its content, not ours).
"""

from __future__ import annotations

import http.client
import ipaddress
import posixpath
import socket
import ssl
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SECTION = "kafka_workflows"
REDIRECTS = (301, 302, 303, 307, 308)
DEFAULT_PORTS = {"http": 80, "https": 443}


class EgressRefused(ValueError):
    """A URL or address that no rule allows; the message names the rule."""


class HttpStatusError(OSError):
    """The server answered with an error status (only the code is kept)."""

    def __init__(self, status: int, url: str, retry_after: str | None = None) -> None:
        super().__init__(f"{url}: the server answered HTTP {status}")
        self.status = status
        # Retry-After in seconds, kept only when it is a plain number (it is the server's text).
        self.retry_after = retry_after if retry_after and retry_after.strip().isdigit() else None


def config_list(option: str) -> list[str]:
    """`[kafka_workflows] <option>` (env AIRFLOW__KAFKA_WORKFLOWS__<OPTION>) as a list (commas, spaces, lines)."""
    from airflow.sdk import conf

    raw = conf.get(SECTION, option, fallback="") or ""
    return [item for item in raw.replace(",", " ").split() if item]


def parse_networks(items: Iterable[str], rule: str = f"[{SECTION}] allowed_networks") -> tuple[IPNetwork, ...]:
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise EgressRefused(f"{rule}: {item!r} is not an IP network (e.g. 10.0.0.0/8, 127.0.0.1/32)") from exc
    return tuple(networks)


def allowed_networks() -> tuple[IPNetwork, ...]:
    return parse_networks(config_list("allowed_networks"))


def printable(url: str) -> str:
    """`url` without credentials, query or fragment (tokens live there)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int | None]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower().rstrip("."), parts.port or DEFAULT_PORTS.get(scheme)


def has_dot_segments(path: str) -> bool:
    """A `..` or `.` segment, also percent-encoded: a path that could climb out of its prefix."""
    decoded = urllib.parse.unquote(path)
    return any(seg in (".", "..") for seg in decoded.replace("\\", "/").split("/"))


def under_prefix(url: str, prefix: str) -> bool:
    """Same scheme, host and port as `prefix`, and a path at or below the prefix's path."""
    target, allowed = urllib.parse.urlsplit(url), urllib.parse.urlsplit(prefix)
    if _origin(target) != _origin(allowed) or not allowed.hostname:
        return False
    if has_dot_segments(target.path):
        return False
    root = allowed.path if allowed.path.endswith("/") else allowed.path + "/"
    path = posixpath.normpath("/" + urllib.parse.unquote(target.path).lstrip("/"))
    return path == root.rstrip("/") or path.startswith(root) or root == "/"


def check_prefix(url: str, prefixes: Sequence[str], rule: str, shown: str | None = None) -> None:
    parts = urllib.parse.urlsplit(url)
    shown = shown or printable(url)
    if parts.scheme.lower() not in DEFAULT_PORTS:
        raise EgressRefused(f"{shown}: only http:// and https:// URLs may be fetched")
    if has_dot_segments(parts.path):
        raise EgressRefused(f"{shown}: a '..' or '.' path segment is not allowed (path traversal)")
    if not any(under_prefix(url, p) for p in prefixes):
        allowed = ", ".join(prefixes) if prefixes else "nothing is configured"
        raise EgressRefused(f"{shown} is not under an allowed URL ({rule}; allowed: {allowed})")


def why_refused(address: IPAddress) -> str | None:
    """None for a public address; else what kind of address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_global and not address.is_multicast:
        return None
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(address, f"is_{kind}"):
            label = kind.replace("_", "-")
            return f"{label} (cloud metadata services live there)" if kind == "link_local" else label
    return "not public"


def resolve(host: str, port: int, networks: Sequence[IPNetwork], url: str, shown: str | None = None) -> list[str]:
    """Every address of `host`, each checked; one that is not allowed refuses the whole host."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"{shown or printable(url)}: cannot resolve host {host!r} ({exc.strerror})") from exc
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        reason = why_refused(address)
        if reason is not None and not any(address in net for net in networks):
            raise EgressRefused(f"{shown or printable(url)}: {host} resolves to a {reason} address ({address}), "
                                f"refused unless [{SECTION}] allowed_networks includes it")
        if text not in addresses:
            addresses.append(text)
    return addresses


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address; the Host header stays the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Egress:
    """Where requests may go: URL prefixes (and the rule they come from), networks allowed though not public."""

    prefixes: tuple[str, ...]
    rule: str
    networks: tuple[IPNetwork, ...] = ()
    max_redirects: int = 5

    def check(self, url: str, shown: str | None = None) -> list[str]:
        """Both rules for `url` (called `shown` in errors); returns the addresses to connect to."""
        check_prefix(url, self.prefixes, self.rule, shown)
        parts = urllib.parse.urlsplit(url)
        _, host, port = _origin(parts)
        assert port is not None
        return resolve(host, port, self.networks, url, shown)

    def request(self, method: str, url: str, *, body: bytes | None = None,
                headers: Mapping[str, str] | None = None, timeout: float = 30.0,
                follow_redirects: bool = True) -> http.client.HTTPResponse:
        """Send one request (following GET redirects, each one checked). Returns a 2xx response
        (a stream: the caller closes it); raises HttpStatusError on another status, EgressRefused on a
        refusal, OSError when the server cannot be reached."""
        shown = printable(url)  # after a redirect: the target's host only (the Location is the server's text)
        for _ in range(self.max_redirects + 1):
            response = self._send(method, url, body, headers or {}, timeout, shown)
            status = response.status
            if status in REDIRECTS:
                location = response.getheader("Location")
                response.close()
                if not follow_redirects or location is None:
                    raise HttpStatusError(status, shown)
                target = urllib.parse.urljoin(url, location)
                target_shown = f"the redirect target on {urllib.parse.urlsplit(target).hostname or 'no host'}"
                try:
                    self.check(target, target_shown)
                except EgressRefused as exc:
                    raise EgressRefused(f"{shown} redirected (HTTP {status}) to a URL that is refused: {exc}") \
                        from None
                url, shown = target, target_shown
                method, body = ("GET", None) if status == 303 else (method, body)
                continue
            if not 200 <= status < 300:
                retry_after = response.getheader("Retry-After")
                response.close()
                raise HttpStatusError(status, shown, retry_after)
            return response
        raise EgressRefused(f"{shown}: more than {self.max_redirects} redirects")

    def _send(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str],
              timeout: float, shown: str | None = None) -> http.client.HTTPResponse:
        addresses = self.check(url, shown)
        parts = urllib.parse.urlsplit(url)
        scheme, host, port = _origin(parts)
        assert port is not None
        path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        last: Exception | None = None
        for address in addresses:
            cls = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
            conn = cls(host, port, address, timeout)
            try:
                conn.request(method, path, body=body, headers=dict(headers))
                return conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:  # BadStatusLine & co. quote the answer: not shown
                conn.close()
                last = exc
        detail = getattr(last, "strerror", None) if isinstance(last, OSError) else None
        reason = type(last).__name__ + (f": {detail}" if detail else "")
        raise OSError(f"{shown or printable(url)}: no usable answer ({reason})")
