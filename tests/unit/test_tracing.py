"""observe/tracing.py: the W3C trace headers of a record are believed only when valid and bounded."""

from __future__ import annotations

import pytest

from kafka_workflows.observe import tracing

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_kept_and_its_trace_id_read() -> None:
    assert tracing.parse_traceparent(VALID) == VALID
    assert tracing.parse_traceparent(VALID.encode()) == VALID
    assert tracing.trace_id_of(VALID.encode()) == "4bf92f3577b34da6a3ce929d0e0e4736"
    carrier = tracing.carrier_of(VALID.encode(), b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    assert carrier == tracing.Carrier(VALID, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    assert carrier.headers() == {"traceparent": VALID, "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"}
    # a later version may append fields: only what version 00 defines is carried on
    assert tracing.parse_traceparent("cc" + VALID[2:] + "-what-the-future-holds") == "cc" + VALID[2:]


@pytest.mark.parametrize("raw", [
    None, b"", b"00", VALID.upper(), VALID[:-1], VALID + "-x",  # version 00 has exactly four fields
    "ff" + VALID[2:],  # version ff is invalid
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
    "cc" + VALID[2:] + "-" + "a" * 1000,  # huge
    b"\xff" * 55, "00-4bf92f3577b34da6a3ce929d0e0e473\u00e9-00f067aa0ba902b7-01",
])
def test_a_malformed_or_huge_traceparent_is_ignored(raw: str | bytes | None) -> None:
    assert tracing.parse_traceparent(raw) is None
    assert tracing.carrier_of(raw, b"a=b") is None
    assert tracing.trace_id_of(raw) is None


@pytest.mark.parametrize("raw", [b"", b"no-equals", b"a=b," + b"c=d," * 200, b"a=b\n", b"\xff=1"])
def test_a_malformed_or_huge_tracestate_is_dropped_the_traceparent_kept(raw: bytes) -> None:
    assert tracing.carrier_of(VALID, raw) == tracing.Carrier(VALID, None)


def test_carrier_from_headers_reads_pairs_and_mappings() -> None:
    assert tracing.carrier_from_headers([("x", b"1"), ("traceparent", VALID.encode())]) == tracing.Carrier(VALID)
    assert tracing.carrier_from_headers({"traceparent": VALID, "tracestate": "k=v"}) == tracing.Carrier(VALID, "k=v")
    assert tracing.carrier_from_headers(None) is None


def test_the_trace_link_fills_a_template_or_appends_the_id() -> None:
    assert tracing.trace_link("http://jaeger:16686/trace/", "abc") == "http://jaeger:16686/trace/abc"
    assert tracing.trace_link("https://ui/t?id={trace_id}&x=1", "abc") == "https://ui/t?id=abc&x=1"
    assert tracing.trace_link(None, "abc") is None and tracing.trace_link("http://x/", None) is None


def test_configure_stays_off_without_the_otel_variables() -> None:
    assert tracing.configure(environ={}) is False
    assert tracing.configure(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317",
                                      "OTEL_SDK_DISABLED": "true"}) is False
    assert tracing.configure(environ={"OTEL_TRACES_EXPORTER": "none"}) is False
    assert tracing.ENABLED is False


class _Letter:
    """A dead-letter record as the monitor's follower hands it over."""

    def __init__(self, headers: list[tuple[str, bytes]]) -> None:
        self._headers = headers

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_700_000_000_000

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"{}"

    def topic(self) -> str:
        return "t.g.dlq"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7


@pytest.mark.parametrize(("traceparent", "shown"), [
    (VALID.encode(), "4bf92f3577b34da6a3ce929d0e0e4736"), (b"00-" + b"z" * 52, None), (VALID.encode() * 100, None)])
def test_a_dead_letter_and_a_run_show_a_trace_id_only_when_their_traceparent_is_valid(
        traceparent: bytes, shown: str | None) -> None:
    from kafka_workflows.monitor.deadletters import _summary
    from kafka_workflows.monitor.service import Monitor

    assert _summary(_Letter([("traceparent", traceparent)]))["trace_id"] == shown  # type: ignore[arg-type]
    view = Monitor._request_view("s", {"request_id": "r", "status": "running", "total": 2, "completed": 1,
                                       "failed": 0, "meta": {"traceparent": traceparent.decode("ascii", "replace")}})
    assert view["trace_id"] == shown
