"""Durations, written one way everywhere (detections, playbooks, settings): a number and a unit
(`500ms`, `30s`, `15m`, `1h`, `2d`, or several: `1h30m`), or ISO 8601 (`PT15M`, `PT1H30M`, `P2D`);
a bare number is seconds. Anything else is an error that shows how to write one.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

_SHORT = re.compile(r"(\d+)(ms|s|m|h|d)")
_ISO = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")
_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
HOW = "write it as 15m, 1h, 2d or 1h30m (or in ISO 8601: PT15M, PT1H, P2D)"


def parse(value: Any) -> Any:
    """A timedelta from a duration's text; other values (a timedelta, a number of seconds) as they are."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return timedelta(seconds=float(text))
    if text and _SHORT.sub("", text) == "":
        return sum((timedelta(**{_UNITS[u]: int(n)}) for n, u in _SHORT.findall(text)), timedelta())
    iso = _ISO.fullmatch(text.upper())
    if iso and text.upper() not in ("P", "PT") and not text.upper().endswith("T"):
        weeks, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in iso.groups())
        return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    raise ValueError(f"{value[:40]!r} is not a duration: {HOW}")


Duration = Annotated[timedelta, BeforeValidator(parse)]
