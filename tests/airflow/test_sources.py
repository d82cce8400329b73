"""kafka_workflows_airflow.sources: only sources under allowed roots are read, checked before any byte is read.

Real files, symlinks and FIFOs under tmp_path; real HTTP servers on loopback addresses (one allowed
explicitly, one nobody allowed, which records whether it was contacted).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kafka_workflows.sources.csv_source import CsvJobSource, CsvSourceError, SourceUnreadableError
from kafka_workflows_airflow.egress import EgressRefused, has_dot_segments, parse_networks, under_prefix, why_refused
from kafka_workflows_airflow.sources import (
    SourceMissingError,
    SourcePolicy,
    SourceRefusedError,
    open_source,
    step_roots,
)
from tests.helpers.webhook import WebhookReceiver

pytestmark = pytest.mark.airflow
CSV = b"email,name\r\na@b.io,A\r\n"


@pytest.fixture
def imports(tmp_path: Path) -> Path:
    root = tmp_path / "imports"
    root.mkdir()
    (root / "ok.csv").write_bytes(CSV)
    (tmp_path / "secret.txt").write_text("jwt-signing-secret-value\n")
    return root


def _policy(*roots: str, networks: tuple[str, ...] = ()) -> SourcePolicy:
    return SourcePolicy(tuple(roots), parse_networks(networks))


def _read(stream: object) -> bytes:
    with stream as s:  # type: ignore[attr-defined]
        return bytes(s.read())


def test_a_file_under_an_allowed_root_is_read_through_object_storage(imports: Path) -> None:
    policy = _policy(f"file://{imports}/")
    assert _read(open_source(str(imports / "ok.csv"), policy)) == CSV
    assert _read(open_source(f"file://{imports}/ok.csv", policy)) == CSV


@pytest.mark.parametrize("name", ["a b.csv", "p%41.csv", "q#1.csv", "r%20?x=1.csv"])
def test_a_file_whose_name_has_spaces_percent_or_hash_opens_by_path_and_by_its_file_url(imports: Path,
                                                                                      name: str) -> None:
    import urllib.request

    (imports / name).write_bytes(CSV)
    policy = _policy(f"file://{imports}/")
    assert _read(open_source(str(imports / name), policy)) == CSV
    assert _read(open_source("file://" + urllib.request.pathname2url(str(imports / name)), policy)) == CSV


def test_a_missing_file_fails_once_with_a_clear_error_that_the_split_does_not_retry(imports: Path) -> None:
    """The split task retries `SourceUnreadableError` only (operators/split.py): a missing file is not one."""
    for missing in (imports / "gone.csv", imports / "gone b.csv"):
        with pytest.raises(CsvSourceError, match="no such file") as raised:
            open_source(str(missing), _policy(f"file://{imports}/"))
        assert isinstance(raised.value, SourceMissingError) and not isinstance(raised.value, SourceUnreadableError)


@pytest.mark.parametrize("where", ["{tmp}/secret.txt", "file://{tmp}/secret.txt", "/etc/passwd",
                                   "file://{tmp}/imports-evil/x.csv"])
def test_a_file_outside_the_allowed_roots_is_refused_naming_the_rule(imports: Path, where: str) -> None:
    source = where.format(tmp=imports.parent)
    with pytest.raises(SourceRefusedError, match=r"refused: it is not under an allowed root \(\[kafka_workflows\] "
                                                  r"allowed_sources or the split step's allowed_sources; allowed "
                                                  rf"roots: file://{imports}/\)") as info:
        open_source(source, _policy(f"file://{imports}/"))
    assert "jwt-signing" not in str(info.value)


@pytest.mark.parametrize("where", ["{root}/../secret.txt", "file://{root}/../secret.txt",
                                   "file://{root}/%2e%2e/secret.txt", "file://{root}/./ok.csv"])
def test_path_traversal_is_refused(imports: Path, where: str) -> None:
    with pytest.raises(SourceRefusedError, match=r"a '\.\.' or '\.' path segment is not allowed \(path traversal\)"):
        open_source(where.format(root=imports), _policy(f"file://{imports}/"))


def test_a_symlink_out_of_the_root_is_refused_and_one_inside_it_is_read(imports: Path) -> None:
    (imports / "link.csv").symlink_to(imports.parent / "secret.txt")
    (imports / "alias.csv").symlink_to(imports / "ok.csv")
    policy = _policy(f"file://{imports}/")
    with pytest.raises(SourceRefusedError, match="resolves \\(through a symbolic link\\) to a place outside"):
        open_source(str(imports / "link.csv"), policy)
    assert _read(open_source(str(imports / "alias.csv"), policy)) == CSV


def test_a_fifo_or_device_under_the_root_is_refused_before_it_is_opened(imports: Path) -> None:
    os.mkfifo(imports / "pipe.csv")  # opening it for reading would block forever
    with pytest.raises(SourceRefusedError, match="it is not a regular file"):
        open_source(str(imports / "pipe.csv"), _policy(f"file://{imports}/"))
    with pytest.raises(SourceRefusedError, match="it is not a regular file"):
        open_source("/dev/zero", _policy("file:///dev/"))


def test_relative_paths_and_remote_file_urls_are_refused(imports: Path) -> None:
    with pytest.raises(SourceRefusedError, match="a path must be absolute"):
        open_source("imports/ok.csv", _policy(f"file://{imports}/"))
    with pytest.raises(SourceRefusedError, match="a file:// URL must name this machine"):
        open_source(f"file://fileserver{imports}/ok.csv", _policy(f"file://{imports}/"))


def test_nothing_configured_allows_nothing(imports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_SOURCES", raising=False)
    with pytest.raises(SourceRefusedError, match=r"allowed roots: nothing is configured"):
        open_source(str(imports / "ok.csv"), SourcePolicy.load())


def test_roots_come_from_the_airflow_config_and_the_step(imports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_SOURCES", "s3://imports/, gs://exports/contacts")
    policy = SourcePolicy.load(step_roots(f"{imports}"))
    assert policy.roots == ("s3://imports/", "gs://exports/contacts/", f"file://{imports}/")
    assert _read(open_source(str(imports / "ok.csv"), policy)) == CSV
    with pytest.raises(SourceRefusedError, match="must be absolute or a URL"):
        SourcePolicy.load(["data/imports"])


@pytest.mark.parametrize(("source", "allowed"), [
    ("s3://imports/a.csv", True), ("s3://aws_default@imports/2026/a.csv", True), ("s3://imports-evil/a.csv", False),
    ("s3://other/imports/a.csv", False), ("gs://imports/a.csv", False), ("s3://imports/../other/a.csv", False),
])
def test_object_store_sources_must_lie_under_a_root_of_the_same_scheme(source: str, allowed: bool) -> None:
    policy = _policy("s3://imports/")
    if allowed:  # allowed, then opened through ObjectStoragePath: without the s3 provider that is "unreadable"
        with pytest.raises(SourceUnreadableError, match=r"s3://imports/.*a\.csv: cannot open it"):
            open_source(source, policy)
    else:
        with pytest.raises(SourceRefusedError):
            open_source(source, policy)


# -- http(s) ---------------------------------------------------------------------------------
@pytest.fixture
def server(imports: Path) -> Iterator[WebhookReceiver]:
    instance = WebhookReceiver().start_in_thread()
    instance.serve_file(imports / "ok.csv")
    yield instance
    instance.stop()


@pytest.fixture
def stranger() -> Iterator[WebhookReceiver]:
    instance = WebhookReceiver("127.0.0.2").start_in_thread()
    yield instance
    instance.stop()


def _http_policy(server: WebhookReceiver) -> SourcePolicy:
    return _policy(f"{server.url}/files/", networks=("127.0.0.1/32",))


def test_an_allowed_http_source_is_streamed(server: WebhookReceiver) -> None:
    reader = CsvJobSource(open_source(f"{server.url}/files/ok.csv?sig=x", _http_policy(server)),
                          {"email": "email", "name": "string"})
    with reader:
        assert [r.values for r in reader.rows()] == [{"email": "a@b.io", "name": "A"}]


def test_an_http_source_on_a_host_nobody_allowed_is_refused_without_contacting_it(
        server: WebhookReceiver, stranger: WebhookReceiver) -> None:
    with pytest.raises(SourceRefusedError, match=r"is not under an allowed URL"):
        open_source(f"{stranger.url}/files/ok.csv", _http_policy(server))
    assert not stranger.contacted()


def test_an_allowed_http_host_on_loopback_is_refused_unless_its_network_is_allowed(stranger: WebhookReceiver) -> None:
    with pytest.raises(SourceRefusedError, match=r"resolves to a loopback address \(127\.0\.0\.2\)"):
        open_source(f"{stranger.url}/x.csv", _policy(f"{stranger.url}/"))
    assert not stranger.contacted()


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/x.csv",
                                    "http://[::1]:9/x.csv", "http://[::ffff:127.0.0.1]:9/x.csv",
                                    "http://0.0.0.0:9/x.csv"])
def test_a_redirect_to_a_private_address_is_refused_before_following_it(
        server: WebhookReceiver, target: str) -> None:
    policy = _policy(f"{server.url}/files/", "http://169.254.169.254/", "http://10.1.2.3/", "http://[::1]:9/",
                     "http://[::ffff:127.0.0.1]:9/", "http://0.0.0.0:9/", networks=("127.0.0.1/32",))
    with pytest.raises(SourceRefusedError, match=r"redirected \(HTTP 302\) to a URL that is refused: the redirect "
                                                  r"target on .* address") as info:
        open_source(f"{server.url}/files/redirect?to={target}", policy)
    assert "meta-data" not in str(info.value) and "x.csv" not in str(info.value), "the Location is not quoted"


def test_a_redirect_outside_the_allowed_prefixes_is_refused(server: WebhookReceiver,
                                                            stranger: WebhookReceiver) -> None:
    with pytest.raises(SourceRefusedError, match=r"redirected \(HTTP 302\) to a URL that is refused"):
        open_source(f"{server.url}/files/redirect?to={stranger.url}/files/x.csv", _http_policy(server))
    assert not stranger.contacted()


def test_an_http_error_gives_the_status_code_only(server: WebhookReceiver) -> None:
    with pytest.raises(SourceUnreadableError) as info:
        open_source(f"{server.url}/files/missing.csv", _http_policy(server))
    assert str(info.value).endswith("/files/missing.csv: the server answered HTTP 404")


def test_an_unreachable_allowed_host_is_unreadable_not_refused(server: WebhookReceiver) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceUnreadableError, match=rf"127\.0\.0\.1:{port}/x\.csv: cannot fetch it"):
        open_source(f"http://127.0.0.1:{port}/x.csv", _policy(f"http://127.0.0.1:{port}/",
                                                              networks=("127.0.0.1/32",)), timeout=5)


# -- the rules themselves ----------------------------------------------------------------------
@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("169.254.169.254", "link-local (cloud metadata services live there)"),
    ("10.0.0.1", "private"), ("192.168.1.1", "private"), ("172.16.0.1", "private"), ("100.100.100.200", "not public"),
    ("::1", "loopback"), ("fd00:ec2::254", "private"), ("::ffff:10.0.0.1", "private"), ("224.0.0.1", "multicast"),
    ("0.0.0.0", "private"), ("8.8.8.8", None), ("2606:4700:4700::1111", None),
])
def test_addresses_are_classified(address: str, kind: str | None) -> None:
    import ipaddress

    assert why_refused(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(("url", "prefix", "ok"), [
    ("https://h.example/exports/a.csv", "https://h.example/exports/", True),
    ("https://h.example/exports", "https://h.example/exports/", True),
    ("https://h.example/exports-evil/a.csv", "https://h.example/exports/", False),
    ("https://H.Example.:443/exports/a.csv", "https://h.example/exports/", True),
    ("https://h.example:8443/exports/a.csv", "https://h.example/exports/", False),
    ("http://h.example/exports/a.csv", "https://h.example/exports/", False),
    ("https://h.example.evil/exports/a.csv", "https://h.example/exports/", False),
    ("https://h.example@evil.example/exports/a.csv", "https://h.example/exports/", False),
    ("https://h.example/exports/%2e%2e/admin", "https://h.example/exports/", False),
])
def test_url_prefixes_compare_scheme_host_port_and_path(url: str, prefix: str, ok: bool) -> None:
    assert under_prefix(url, prefix) is ok


def test_dot_segments_are_found_even_encoded() -> None:
    assert has_dot_segments("/a/%2E%2E/b") and has_dot_segments("/a/..\\b") and not has_dot_segments("/a/..b/c")


def test_a_bad_network_in_the_config_is_named() -> None:
    with pytest.raises(EgressRefused, match=r"allowed_networks: 'ten' is not an IP network"):
        parse_networks(["ten"])
