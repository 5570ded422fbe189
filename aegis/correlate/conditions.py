"""Conditions over normalized events, as detections write them in YAML. Data, never code:

    match:
      all:
        - {field: source, equals: defender}
        - {field: kind, prefix: "AI.Azure_Jailbreak"}
        - any:
            - {field: attributes.http_status, in: [401, 403]}
            - not: {field: entities.user, exists: true}

A test names one field path (`paths.py`) and exactly one operator: equals, in, prefix, suffix,
contains, regex (Python syntax, searched), exists, gt, gte, lt, lte. String operators compare
case-insensitively; numeric ones only numbers. A test holds when any value of the path does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from aegis.correlate.paths import compile_path
from aegis.events import Event, Scalar, Source

Predicate = Callable[[Event], bool]
OPERATORS = ("equals", "in", "prefix", "suffix", "contains", "regex", "exists", "gt", "gte", "lt", "lte")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FieldTest(_Strict):
    field: str
    equals: Scalar = None
    in_: list[Scalar] | None = Field(None, alias="in")
    prefix: str | None = None
    suffix: str | None = None
    contains: str | None = None
    regex: str | None = None
    exists: bool | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @field_validator("field")
    @classmethod
    def _path(cls, value: str) -> str:
        compile_path(value)  # raises PathError, a ValueError: pydantic reports it on the field
        return value

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_operator(self) -> FieldTest:
        given = [op for op in OPERATORS if op in self.model_fields_set or f"{op}_" in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"a test needs exactly one operator of {', '.join(OPERATORS)} (got {given or 'none'})")
        return self

    def compile(self, source: str | None = None) -> Predicate:
        """The test as a function of an event; given the `source` every event it sees comes from,
        a test on `source` is decided now (`ALWAYS` or `NEVER`)."""
        get = compile_path(self.field)
        op = next(op for op in OPERATORS if op in self.model_fields_set or f"{op}_" in self.model_fields_set)
        if source is not None and self.field == "source":
            known = Source(source)
            decided = bool(self.exists) if op == "exists" else _operator(op, self)(known)
            return ALWAYS if decided else NEVER
        if op == "exists":
            want = bool(self.exists)
            return lambda e: bool(get(e)) is want
        test = _operator(op, self)

        def holds(e: Event) -> bool:
            for v in get(e):  # noqa: SIM110 - a loop is faster than any() over a generator here
                if test(v):
                    return True
            return False

        return holds

    def sources(self) -> frozenset[str] | None:
        """The event sources this test admits, when it is a test on `source`; else None."""
        if self.field != "source":
            return None
        if "equals" in self.model_fields_set and isinstance(self.equals, str):
            return frozenset({self.equals.lower()})
        if "in_" in self.model_fields_set and self.in_ and all(isinstance(v, str) for v in self.in_):
            return frozenset(str(v).lower() for v in self.in_)
        return None


class All(_Strict):
    all: list[Condition] = Field(min_length=1)

    def compile(self, source: str | None = None) -> Predicate:
        parts = [c.compile(source) for c in self.all]
        if NEVER in parts:
            return NEVER
        return _until([p for p in parts if p is not ALWAYS], stop=False)

    def sources(self) -> frozenset[str] | None:
        """Sources admitted by the conjunction: those of any conjunct that names them."""
        found = [s for c in self.all if (s := c.sources()) is not None]
        return frozenset.intersection(*found) if found else None


class AnyOf(_Strict):
    any: list[Condition] = Field(min_length=1)

    def compile(self, source: str | None = None) -> Predicate:
        parts = [c.compile(source) for c in self.any]
        if ALWAYS in parts:
            return ALWAYS
        return _until([p for p in parts if p is not NEVER], stop=True)

    def sources(self) -> frozenset[str] | None:
        """Sources admitted by the disjunction: known only when every branch names them."""
        found = [c.sources() for c in self.any]
        return None if any(s is None for s in found) else frozenset().union(*found)  # type: ignore[arg-type]


class Not(_Strict):
    not_: Condition = Field(alias="not")

    def compile(self, source: str | None = None) -> Predicate:
        inner = self.not_.compile(source)
        if inner is ALWAYS or inner is NEVER:
            return NEVER if inner is ALWAYS else ALWAYS
        return lambda e: not inner(e)

    def sources(self) -> frozenset[str] | None:
        return None


def ALWAYS(e: Event) -> bool:  # noqa: N802 - a constant predicate, compared by identity
    return True


def NEVER(e: Event) -> bool:  # noqa: N802 - a constant predicate, compared by identity
    return False


def _until(parts: list[Predicate], *, stop: bool) -> Predicate:
    """`all` (stop at the first False) or `any` (stop at the first True), as a plain loop: faster
    than all() / any() over a generator on the hot path. No parts: what an empty `all` or `any` is."""
    if not parts:
        return NEVER if stop else ALWAYS
    if len(parts) == 1:
        return parts[0]

    def holds(e: Event) -> bool:
        for p in parts:
            if p(e) is stop:
                return stop
        return not stop

    return holds


def _which(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return key
        return "test"
    return type(value).__name__ if not isinstance(value, BaseModel) else type(value).__name__.lower().rstrip("_")


# The key present picks the model, so an error names one model's fields, not four.
Condition = Annotated[
    Union[  # noqa: UP007 - a forward-referenced recursive union
        Annotated[All, Tag("all")],
        Annotated[AnyOf, Tag("any")],
        Annotated[Not, Tag("not")],
        Annotated[FieldTest, Tag("test")],
    ],
    Discriminator(_which),
]
for _model in (All, AnyOf, Not, FieldTest):
    _model.model_rebuild()


def _lower(v: Any) -> str | None:
    return v.lower() if isinstance(v, str) else None


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _operator(op: str, t: FieldTest) -> Callable[[Scalar], bool]:
    if op == "equals":
        want = _lower(t.equals) if isinstance(t.equals, str) else t.equals
        return lambda v: (_lower(v) if isinstance(v, str) else v) == want
    if op == "in":
        wants = {_lower(w) if isinstance(w, str) else w for w in t.in_ or []}
        return lambda v: (_lower(v) if isinstance(v, str) else v) in wants
    if op in ("prefix", "suffix", "contains"):
        needle = (getattr(t, op) or "").lower()
        method = {"prefix": str.startswith, "suffix": str.endswith, "contains": str.__contains__}[op]
        return lambda v: isinstance(v, str) and method(v.lower(), needle)
    if op == "regex":
        pattern = re.compile(t.regex or "", re.IGNORECASE)
        return lambda v: isinstance(v, str) and pattern.search(v) is not None
    bound = float(getattr(t, op))
    compare: Callable[[float, float], bool] = {
        "gt": float.__gt__, "gte": float.__ge__, "lt": float.__lt__, "lte": float.__le__,
    }[op]  # fmt: skip
    return lambda v: (n := _number(v)) is not None and compare(n, bound)
