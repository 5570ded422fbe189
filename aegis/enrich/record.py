"""What an enricher found for an incident (or a deliverer did with it), as the stores keep it: no
service SDK is needed to read it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import orjson

KINDS = ("enrich", "deliver")  # what a kept record is: an enricher's finding, a deliverer's outcome


@dataclass(frozen=True)
class Enrichment:
    name: str
    status: str  # ok | skipped | error | timeout
    result: dict[str, Any]
    error: str | None
    at: datetime
    took_ms: int
    version: str  # the incident's version it was computed for

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat().replace("+00:00", "Z")}

    @classmethod
    def from_json(cls, doc: bytes | str) -> Enrichment:
        d = orjson.loads(doc)
        return cls(**{**d, "at": datetime.fromisoformat(d["at"])})


@runtime_checkable
class EnrichmentStore(Protocol):
    def save_enrichment(self, incident: str, items: Sequence[Enrichment], *, kind: str = "enrich") -> None:
        """Replace what is kept for these enrichers (`kind="enrich"`) or deliverers (`"deliver"`) of `incident`."""
        ...

    def enrichment(self, incident: str, *, kind: str = "enrich") -> list[Enrichment]:
        """What was kept for `incident`, by name."""
        ...
