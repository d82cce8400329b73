"""The local broker's JVM runs with the small-machine options, unless KW_BROKER_JVM_OPTIONS says otherwise."""

from __future__ import annotations

from pathlib import Path

from stack.broker import JVM_OPTIONS, JVM_OPTIONS_VAR, Broker, jvm_options


def test_the_running_broker_is_started_with_the_jvm_options(broker: Broker) -> None:
    assert broker.proc is not None
    argv = Path(f"/proc/{broker.proc.pid}/cmdline").read_bytes().decode().split("\0")
    options = jvm_options()
    assert argv[argv.index(options[0]):][:len(options)] == options, argv[:8]
    assert "-XX:+UseG1GC" not in argv or "-XX:+UseG1GC" in options


def test_by_default_the_broker_uses_the_serial_collector_and_only_the_c1_compiler() -> None:
    assert jvm_options({}) == ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]


def test_kw_broker_jvm_options_replaces_the_defaults_and_blank_keeps_them() -> None:
    assert jvm_options({JVM_OPTIONS_VAR: "  "}) == list(JVM_OPTIONS)
    assert jvm_options({JVM_OPTIONS_VAR: "-XX:+UseG1GC  -XX:MaxGCPauseMillis=20"}) == [
        "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
