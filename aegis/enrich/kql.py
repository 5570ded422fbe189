"""KQL query templates (`aegis/enrich/kql/*.kql`) and the one way a value enters a query.

Alert fields and entity values are attacker-controlled. They reach a query only as KQL string
literals made by `literal`: double-quoted, with the backslash, the double quote, newline, carriage
return and tab escaped as the KQL reference documents (`\\\\`, `\\"`, `\\n`, `\\r`, `\\t`). Other
control and format characters (which KQL documents no escape for, and which can hide text from a
reader) are refused, as is an over-long value. Nothing else in a template is filled: a template's
placeholders are `{name}` and each is replaced by a literal, never by raw text.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

from aegis.errors import AegisError

TEMPLATES = Path(__file__).resolve().parent / "kql"
MAX_VALUE = 1024
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class UnsafeValue(AegisError):
    """A value that cannot be put in a query safely: the enricher records it and skips the query."""


def literal(value: str) -> str:
    """`value` as a KQL string literal that stands for exactly `value` and nothing else."""
    if len(value) > MAX_VALUE:
        raise UnsafeValue(f"a value of {len(value)} characters is too long for a query (at most {MAX_VALUE})")
    out = ['"']
    for ch in value:
        escaped = _ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}:
            raise UnsafeValue(f"a value holds the control or format character U+{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


@cache
def template(name: str) -> str:
    return (TEMPLATES / f"{name}.kql").read_text(encoding="utf-8")


def render(name: str, **values: str) -> str:
    """The query `name` with each `{placeholder}` replaced by the literal of its value."""
    text = template(name)
    missing = {m.group(1) for m in _PLACEHOLDER.finditer(text)} - set(values)
    if missing:
        raise KeyError(f"query {name} needs {', '.join(sorted(missing))}")
    return _PLACEHOLDER.sub(lambda m: literal(values[m.group(1)]), text)
