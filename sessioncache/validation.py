"""Checks on context writes: per-variable schemas and global limits, run before anything is sent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError

log = logging.getLogger(__name__)

_NAME_CHARS = 128


@dataclass(frozen=True, slots=True)
class VariableSchema:
    """What one context variable may hold.

    ``type``: a type or tuple of types the value must be an instance of (bool is not accepted as
    an int); ``max_bytes``: the largest encoded size; ``required``: the variable may never be
    missing once a context is written; ``validator``: returns False or raises ValueError to
    refuse a value.
    """

    type: type | tuple[type, ...] | None = None
    max_bytes: int | None = None
    required: bool = False
    validator: Callable[[Any], bool | None] | None = None


@dataclass(frozen=True, slots=True)
class ContextLimits:
    """Limits every context write respects, strict mode or not."""

    max_variables: int = 256
    max_variable_bytes: int = 64 * 1024
    max_name_length: int = _NAME_CHARS
    max_message_bytes: int = 256 * 1024
    max_role_length: int = 32
    max_slots: int = 64

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"context limit {name} must be a positive int, got {value!r}")


@dataclass(frozen=True, slots=True)
class ContextValidator:
    """Per-variable schemas and global limits.

    ``strict=True`` raises ValidationError for a schema violation before anything is written;
    otherwise the violation is logged and the write goes ahead. The global limits (sizes,
    counts, names) are enforced in both modes: they protect Redis, not the application.
    ``allow_unknown=False`` refuses variables without a schema.
    """

    schemas: Mapping[str, VariableSchema] = field(default_factory=dict)
    limits: ContextLimits = field(default_factory=ContextLimits)
    strict: bool = True
    allow_unknown: bool = True

    @property
    def required(self) -> list[str]:
        """Names of the variables that must always be present."""
        return sorted(name for name, schema in self.schemas.items() if schema.required)

    def name(self, name: object, what: str = "variable name") -> str:
        """A checked variable or slot name."""
        if not isinstance(name, str) or not name:
            raise ValidationError(f"{what} must be a non-empty str, got {name!r}"[:200])
        if len(name) > self.limits.max_name_length:
            raise ValidationError(
                f"{what} is {len(name)} characters; the limit is {self.limits.max_name_length}"
            )
        try:
            name.encode("utf-8", errors="strict")
        except UnicodeEncodeError as exc:
            raise ValidationError(f"{what} is not valid Unicode text") from exc
        return name

    def variable(self, name: str, value: Any, encoded: bytes) -> None:
        """Check one variable about to be written (its value and its encoded form)."""
        if len(encoded) > self.limits.max_variable_bytes:
            raise ValidationError(
                f"variable {name!r} encodes to {len(encoded)} bytes; "
                f"the limit is {self.limits.max_variable_bytes}"
            )
        schema = self.schemas.get(name)
        if schema is None:
            if not self.allow_unknown:
                self._refuse(f"variable {name!r} has no schema and unknown variables are refused")
            return
        problem = _schema_problem(schema, value, encoded)
        if problem:
            self._refuse(f"variable {name!r} {problem}")

    def deletions(self, names: Iterable[str]) -> None:
        """Refuse deleting a required variable."""
        for name in names:
            schema = self.schemas.get(name)
            if schema is not None and schema.required:
                self._refuse(f"variable {name!r} is required and cannot be deleted")

    def _refuse(self, message: str) -> None:
        if self.strict:
            raise ValidationError(message)
        log.warning("context validation (not strict): %s", message)


def _schema_problem(schema: VariableSchema, value: Any, encoded: bytes) -> str | None:
    if schema.type is not None:
        types = schema.type if isinstance(schema.type, tuple) else (schema.type,)
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            return f"must be {names}, not {type(value).__name__}"
    if schema.max_bytes is not None and len(encoded) > schema.max_bytes:
        return f"encodes to {len(encoded)} bytes; its schema allows {schema.max_bytes}"
    if schema.validator is not None:
        try:
            ok = schema.validator(value)
        except (ValueError, TypeError) as exc:
            return f"was refused by its validator: {exc}"
        if ok is False:
            return "was refused by its validator"
    return None
