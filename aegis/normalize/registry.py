"""The normalizer registry.

A normalizer turns one decoded item (a Defender alert, an export message, a log record) into
events. Each registers under a unique name with a cheap `accepts(item)` test; the first registered
normalizer that accepts an item gets it. Its function has one signature:

    normalize(item: dict, evidence: Evidence) -> list[Event]

and signals, by raising:
- `Ignored(reason)`: a well-formed message that carries nothing to watch (an assessment, a secure
  score); counted, not dead-lettered;
- `MalformedInput(reason)`: the item cannot be used; it is dead-lettered with that reason.
Any other exception is a bug in the normalizer; the pipeline dead-letters the item with the
exception's type and the normalizer's name, and carries on with the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from aegis.events import Event, Evidence, Source
from aegis.registry import Registry

NormalizeFn = Callable[[dict[str, Any], Evidence], list[Event]]
HubKind = Literal["alerts", "diagnostics"]  # the hub an item of this shape arrives on in a deployment
AcceptsFn = Callable[[dict[str, Any]], bool]


class Ignored(Exception):
    """Raised by a normalizer for a valid message that produces no event."""


@dataclass(frozen=True, slots=True)
class Normalizer:
    name: str
    source: Source
    accepts: AcceptsFn
    normalize: NormalizeFn
    description: str
    hub: HubKind  # Defender's continuous export goes to the alerts hub; diagnostic settings to the other


REGISTRY: Registry[Normalizer] = Registry("normalizer")


def normalizer(
    name: str, *, source: Source, accepts: AcceptsFn, hub: HubKind | None = None
) -> Callable[[NormalizeFn], NormalizeFn]:
    """Register a normalizer function. A duplicate name fails at import. `hub` says which hub its
    shape arrives on (default: the alerts hub for Defender shapes, the diagnostics hub for logs)."""

    def register(fn: NormalizeFn) -> NormalizeFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        kind = hub or ("alerts" if source is Source.DEFENDER else "diagnostics")
        REGISTRY.add(name, Normalizer(name, source, accepts, fn, doc[0] if doc else "", kind))
        return fn

    return register


def select(item: dict[str, Any]) -> Normalizer | None:
    for n in REGISTRY.values():
        if n.accepts(item):
            return n
    return None
