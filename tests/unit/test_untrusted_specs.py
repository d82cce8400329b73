"""Pathological workflow specs and configuration: clear errors naming the file or variable, never a hang, a
crash of the loader, or a secret printed back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.config import kafka_config_from_env
from kafka_workflows.spec import SpecError, WorkflowSpec, load_specs, parse_spec
from kafka_workflows.spec.yamlguard import YamlLimitError, check

GOOD = Path(__file__).resolve().parents[2] / "dags" / "workflows" / "checkout.yaml"

BILLION_LAUGHS = "\n".join([
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    *(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)),
    "name: laughs",
])


def test_billion_laughs_is_refused_quickly_naming_the_file() -> None:
    started = time.process_time()
    with pytest.raises(SpecError) as info:
        parse_spec(BILLION_LAUGHS, "dags/workflows/laughs.yaml")
    assert str(info.value).startswith("dags/workflows/laughs.yaml:")
    assert "more than 100,000 values once aliases are expanded" in str(info.value)
    assert time.process_time() - started < 5, "refused from the event stream, never expanded"


@pytest.mark.parametrize("text", [
    "[" * 10_000 + "]" * 10_000,
    "a:\n" + "".join(" " * i + "-\n" for i in range(1, 1000)),  # block style: 1,000 levels in 0.5 MB
    "x: " + "{a: " * 5000 + "1" + "}" * 5000,
], ids=["flow-sequences", "block-sequences", "flow-mappings"])
def test_10k_deep_nesting_is_refused_not_a_recursion_error(text: str) -> None:
    with pytest.raises(SpecError, match=r"deep\.yaml:1?\d*: \(document\): nesting deeper than 64 levels"):
        parse_spec(text, "deep.yaml")


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:
        f.write(b"name: huge\ndescription: '")
        f.truncate(50 * 1024 * 1024)
    [(where, error)] = list(load_specs(path))
    assert isinstance(error, SpecError) and where == path
    assert str(error) == f"{path}: (document): the file is 52,428,800 bytes; a workflow spec may be at most 1,048,576"


def test_one_pathological_file_never_hides_the_others(tmp_path: Path) -> None:
    (tmp_path / "a-laughs.yaml").write_text(BILLION_LAUGHS)
    (tmp_path / "b-deep.yaml").write_text("[" * 10_000 + "]" * 10_000)
    (tmp_path / "c-binary.yaml").write_bytes(b"\xff\xfe\x00name: x")
    (tmp_path / "d-checkout.yaml").write_text(GOOD.read_text())
    results = dict(load_specs(tmp_path))
    assert [p.name for p, r in results.items() if isinstance(r, WorkflowSpec)] == ["d-checkout.yaml"]
    assert all(isinstance(r, SpecError) for p, r in results.items() if p.name != "d-checkout.yaml")


def test_the_guard_counts_anchor_sizes_and_lets_ordinary_aliases_through() -> None:
    check("retry: &r {blocking: {initial: 1, max: 60}}\nworkers:\n  - {retry: *r}\n  - {retry: *r}\n")
    with pytest.raises(YamlLimitError, match="more than 10 values"):
        check("a: &a [1, 2, 3]\nb: [*a, *a, *a]\n", max_nodes=10)
    check("not: [valid")  # syntax errors are the loader's to report, with their line


SECRET = "sasl-password-do-not-print"


@pytest.mark.parametrize("raw", [f'{{"sasl.password": "{SECRET}"', f"sasl.password={SECRET}",
                                 f'{{"sasl.password": "{SECRET}",}}'])
def test_an_invalid_kafka_config_error_never_prints_its_value(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        kafka_config_from_env({"KAFKA_CONFIG": raw})
    assert SECRET not in str(info.value) and "KAFKA_CONFIG is not valid JSON" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_split_step_declares_allowed_sources_and_bad_roots_are_named() -> None:
    spec = ("name: imp\nsteps:\n  - id: split\n    split:\n      source: x\n      allowed_sources: [s3://imports/, "
            "/data/in/]\n")
    step = parse_spec(spec, "imp.yaml").steps[0]
    assert step.split is not None and step.split.allowed_sources == ["s3://imports/", "/data/in/"]
    with pytest.raises(SpecError, match=r"imp\.yaml:6: steps\[0\]\.split\.allowed_sources: 'data/in' is neither a URL"):
        parse_spec(spec.replace("/data/in/", "data/in"), "imp.yaml")
