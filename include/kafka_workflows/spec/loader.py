"""Reading workflow specs from YAML: line numbers in every error, one bad file never hides the others.

YAML is read as plain JSON types (dates stay strings) so the JSON Schema and the model judge the
same document. Every error names the file, the line, the field path, what was expected and what
was found: `dags/workflows/bad.yaml:14: workers[0].retry.blocking.intervals[1]: ...`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from kafka_workflows.errors import ConfigError
from kafka_workflows.spec import yamlguard
from kafka_workflows.spec.model import DOTTED, NAME, TEMPLATED_TOPIC, RuleError, WorkflowSpec

# libyaml's parser when PyYAML has it (a task process parses every spec on each start: ~10x faster),
# with the same safe constructor and resolver.
_SAFE_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class JsonTypesLoader(_SAFE_LOADER):  # type: ignore[misc,valid-type]
    """SafeLoader that keeps dates and times as strings: the document is what JSON would carry."""


JsonTypesLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Problem:
    path: str  # e.g. steps[1].produce.topic
    message: str
    line: int | None = None
    found: str | None = None

    def render(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        found = f" (found {self.found})" if self.found is not None else ""
        return f"{where}: {self.path or '(document)'}: {self.message}{found}"


@dataclass
class SpecError(ConfigError):
    file: str
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(p.render(self.file) for p in self.problems)


def _node_at(node: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """The deepest YAML node along a pydantic error location (for its line number)."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            key = {"await_": "await", "class_": "class", "schema_": "schema"}.get(str(part), part)
            match = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(key)), None)
            if match is None:
                return node
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "function-wrap") or str(part).startswith("function-"):
            continue
        else:
            name = {"await_": "await", "class_": "class", "schema_": "schema"}.get(str(part), str(part))
            out += f".{name}" if out else name
    return out


_PATTERN_TEXT = {
    NAME: "expected a name of letters, digits, '_', '.' or '-' (at most 250)",
    DOTTED: "expected a dotted import path such as package.module.function",
    TEMPLATED_TOPIC: "expected a topic name (letters, digits, '.', '_', '-') or a {{ template }}",
    r"^\d{4}-\d{2}-\d{2}$": "expected a date as YYYY-MM-DD",
}


def line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """The line of the YAML node at `loc` (field names and list indices), for errors found later."""
    try:
        node = _node_at(yaml.compose(text, Loader=JsonTypesLoader), loc)
    except yaml.YAMLError:
        return None
    return node.start_mark.line + 1 if node is not None else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_duplicate_keys(node: yaml.Node | None, file: str) -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    problems.append(Problem(key.value, "duplicate key (YAML would keep only the last)",
                                            key.start_mark.line + 1))
                seen.add(key.value)
            problems += _check_duplicate_keys(value, file)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            problems += _check_duplicate_keys(item, file)
    return problems


def parse_spec(text: str, file: str = "<spec>") -> WorkflowSpec:
    """Validate one spec document; raise SpecError with every problem found."""
    try:  # size, depth and alias expansion first: nothing pathological reaches the loader
        yamlguard.check(text)
    except yamlguard.YamlLimitError as exc:
        raise SpecError(file, [Problem("", str(exc), exc.line)]) from None
    try:
        loader = JsonTypesLoader(text)
        try:  # compose once; the data is constructed from that node
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        # libyaml puts the end of a stream without a final newline on the line after the last
        line = min(mark.line + 1, text.count("\n") + 1) if mark else None
        raise SpecError(file, [Problem("", f"not valid YAML: {getattr(exc, 'problem', exc)}", line)]) from exc
    duplicates = _check_duplicate_keys(node, file)
    if duplicates:
        raise SpecError(file, duplicates)
    if not isinstance(data, dict):
        raise SpecError(file, [Problem("", "a workflow spec is a mapping (name:, steps:, ...)", 1,
                                       type(data).__name__)])
    try:
        return WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            rule = (err.get("ctx") or {}).get("error")
            if isinstance(rule, RuleError):
                loc = (*loc, *rule.path)
            target = _node_at(node, loc)
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "string_pattern_mismatch":
                message = _PATTERN_TEXT.get(err["ctx"]["pattern"], message)
            found = None if err["type"] in ("missing", "value_error") or isinstance(err.get("input"), dict) \
                else _short(err.get("input"))
            problems.append(Problem(_path(loc), message, target.start_mark.line + 1 if target else None, found))
        raise SpecError(file, problems) from exc


def load_spec(path: Path) -> WorkflowSpec:
    try:
        if path.stat().st_size > yamlguard.MAX_BYTES:  # not even read
            raise SpecError(str(path), [Problem("", f"the file is {path.stat().st_size:,} bytes; a workflow spec "
                                                    f"may be at most {yamlguard.MAX_BYTES:,}")])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), [Problem("", f"cannot read: {exc}")]) from exc
    spec = parse_spec(text, str(path))
    spec._folder = str(path.resolve().parent)
    return spec


def spec_files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder of workflow specs")
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))


def load_specs(folder: Path) -> Iterator[tuple[Path, WorkflowSpec | SpecError]]:
    """Each spec file of `folder` with its spec, or its error: one bad file never hides the others."""
    for path in spec_files(folder):
        try:
            yield path, load_spec(path)
        except SpecError as exc:
            yield path, exc
        except Exception as exc:  # noqa: BLE001 - whatever one file does, the others still load
            yield path, SpecError(str(path), [Problem("", f"cannot be loaded ({type(exc).__name__})")])


def json_schema() -> dict[str, Any]:
    schema = WorkflowSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kafka-workflows workflow spec"
    return schema
