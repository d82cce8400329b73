"""Limits a workflow spec's YAML must respect before it is composed, loaded or validated.

A spec file is code review material, but a broken or hostile one must never take the DAG
processor (or the worker) with it, nor hide the other workflows:

- size: at most `MAX_BYTES` (a spec is a page of YAML, not a data file);
- depth: at most `MAX_DEPTH` nested mappings/sequences (PyYAML composes recursively: ~1,000 levels
  overflow Python's stack);
- expansion: at most `MAX_NODES` nodes once aliases are expanded ("billion laughs": nine levels of
  ten aliases are a billion nodes for pydantic to walk, in a file of a few hundred bytes).

`check()` walks PyYAML's event stream (an iterative parser, no recursion, nothing built) and counts
the size each anchor expands to, so the check itself is linear in the file.
"""

from __future__ import annotations

import yaml

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000


class YamlLimitError(ValueError):
    """The document breaks a limit; `line` is where (1-based), when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def check(text: str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> None:
    """Raise YamlLimitError when `text` is too large, too deep, or expands to too many nodes.

    Syntax errors are left to the real loader (which reports them with their line)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise YamlLimitError(f"the file is {size:,} bytes; a workflow spec may be at most {max_bytes:,}")
    counts: list[int] = []  # expanded node count of each open collection
    anchors: list[str | None] = []  # and its anchor
    sizes: dict[str, int] = {}  # anchor -> expanded node count
    total = 0
    try:
        for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            line = event.start_mark.line + 1 if event.start_mark else None
            added = 0
            if isinstance(event, yaml.CollectionStartEvent):
                if len(counts) >= max_depth:
                    raise YamlLimitError(f"nesting deeper than {max_depth} levels", line)
                counts.append(1)
                anchors.append(event.anchor)
                total += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                added, anchor = counts.pop(), anchors.pop()
                if anchor is not None:
                    sizes[anchor] = added
            elif isinstance(event, yaml.AliasEvent):
                added = sizes.get(str(event.anchor), 1)
                total += added
            elif isinstance(event, yaml.ScalarEvent):
                if event.anchor is not None:
                    sizes[event.anchor] = 1
                added = 1
                total += 1
            if added and counts:
                counts[-1] += added
            if total > max_nodes:
                raise YamlLimitError(f"more than {max_nodes:,} values once aliases are expanded "
                                     "(anchors and aliases nested to blow up the document?)", line)
    except yaml.YAMLError as exc:
        if "nesting depth" in str(getattr(exc, "problem", "")):  # libyaml's scanner stops at 1,000 levels first
            mark = getattr(exc, "problem_mark", None)
            raise YamlLimitError(f"nesting deeper than {max_depth} levels", mark.line + 1 if mark else None) from None
        return  # the loader reports it, with its line
