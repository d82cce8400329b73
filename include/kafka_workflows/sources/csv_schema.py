"""The schema a CSV is validated against: its columns, whether each is required, and its type.

    Schema.parse({"email": {"type": "email", "required": True}, "name": "string"})

Types: string, email (lower-cased), int, float (finite), bool (true/false, yes/no, 1/0), date
(ISO, YYYY-MM-DD). A parse error says what is wrong with a value, never the value (it is content).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

TYPES = ("string", "email", "int", "float", "bool", "date")

# Pragmatic, not RFC 5322: one @, no spaces, a dot in the domain, nothing around the dots empty.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[^@\s\"(),:;<>\[\\\]]+@{_LABEL}(?:\.{_LABEL})+$")
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


# -- schema --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One column the CSV must (required) or may have, and the type its values must parse as."""

    name: str
    type: str = "string"
    required: bool = False
    max_length: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("a schema column needs a non-empty name")
        if self.type not in TYPES:
            raise ValueError(f"column {self.name!r}: type {self.type!r} is not one of {', '.join(TYPES)}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"column {self.name!r}: max_length must be >= 1, got {self.max_length}")

    def parse(self, raw: str) -> Any:
        """The typed value of `raw` (already stripped, non-empty); ValueError says why not."""
        if self.max_length is not None and len(raw) > self.max_length:
            raise ValueError(f"is {len(raw)} characters long, more than {self.max_length}")
        if self.type == "string":
            return raw
        if self.type == "email":
            if len(raw) > 254 or not _EMAIL.match(raw):
                raise ValueError("is not a valid email address")
            return raw.lower()
        if self.type == "int":
            try:
                return int(raw)
            except ValueError:
                raise ValueError("is not an integer") from None
        if self.type == "float":
            try:
                number = float(raw)
            except ValueError:
                raise ValueError("is not a number") from None
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError("is not a finite number")
            return number
        if self.type == "bool":
            lowered = raw.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError("is not a boolean (true/false, yes/no, 1/0)")
        try:  # date
            return date.fromisoformat(raw).isoformat()
        except ValueError:
            raise ValueError("is not a date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class Schema:
    """The columns of a CSV. Header names match case-insensitively, surrounding spaces ignored.

    Columns of the file that the schema does not declare are ignored.
    """

    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError("a schema needs at least one column")
        seen: set[str] = set()
        for column in self.columns:
            key = norm(column.name)
            if key in seen:
                raise ValueError(f"schema declares column {column.name!r} twice")
            seen.add(key)

    @classmethod
    def of(cls, *columns: Column) -> Schema:
        return cls(tuple(columns))

    @classmethod
    def parse(cls, data: Schema | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Schema:
        """From `{"email": {"type": "email", "required": true}, "name": "string"}` or a list of column dicts."""
        if isinstance(data, Schema):
            return data
        columns: list[Column] = []
        if isinstance(data, Mapping):
            for name, spec in data.items():
                if isinstance(spec, str):
                    columns.append(Column(name, spec))
                elif isinstance(spec, Mapping):
                    columns.append(Column(name, **{k: v for k, v in spec.items() if k != "name"}))
                else:
                    raise ValueError(f"schema column {name!r}: expected a type name or an object, got {spec!r}")
        else:
            for spec in data:
                if not isinstance(spec, Mapping):
                    raise ValueError(f"schema: expected column objects, got {spec!r}")
                columns.append(Column(**spec))
        return cls(tuple(columns))

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]


def norm(name: str) -> str:
    return name.strip().lower()
