"""The base of every model a workflow spec is parsed into: strict, frozen, no unknown keys.

Strict: `"3"` is not 3 and `false` is not 0 (JSON Schema, the editor's schema, refuses them too).
One exception, also JSON Schema's: a float with no fraction (`3.0`) is an integer where an integer
is wanted. tests/unit/test_spec_properties.py fuzzes specs and checks the two agree.
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _integral_floats(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fixed = dict(data)
        for name, field in cls.model_fields.items():
            key = name if name in fixed else field.alias
            value = fixed.get(key) if key is not None else None
            if isinstance(value, float) and value.is_integer() and wants_int(field.annotation):
                fixed[key] = int(value)
        return fixed


def wants_int(annotation: Any) -> bool:
    """An int field (`int`, `PositiveInt`, `NonNegativeInt | None`), not one that also takes floats."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if annotation is int:
        return True
    args = [a for a in get_args(annotation) if a is not type(None)]
    return get_origin(annotation) in (Union, UnionType) and len(args) == 1 and wants_int(args[0])
