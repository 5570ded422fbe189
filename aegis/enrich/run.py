"""Which enrichers run, with what, and on which incidents: the enrichment pass of the timer and the CLI.

An incident is enriched when it is new or has changed since it was last enriched (more evidence,
later evidence, another severity: `base.version`), or when an enricher was added; superseded
single-alert incidents are left out. Each incident's enrichers share one time budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from aegis.directory import Directory
from aegis.enrich import defender, graph, local, log_analytics  # noqa: F401  (each registers its enricher)
from aegis.enrich.base import ENRICHERS, Context, enrich, version
from aegis.errors import ConfigurationError
from aegis.records import Incident, views
from aegis.registry import UnknownName
from aegis.respond import connect
from aegis.settings import Settings
from aegis.store import Store

DEFAULTS = {"sqlite": ["local"], "table": ["log_analytics", "defender", "graph"]}
CLOUD = {"log_analytics", "defender", "graph"}


@dataclass(frozen=True)
class Enrichers:
    names: Sequence[str]
    ctx: Context
    budget: float = 20.0

    @classmethod
    def from_settings(
        cls, cfg: Settings, events: Callable[[datetime, datetime], list[object]] | None,
        connections: Callable[[], connect.Connections] | None = None,
    ) -> Enrichers:  # fmt: skip
        """`connections`: the worker's (built on first use), or the settings' when not given."""
        try:
            names = ENRICHERS.require(cfg.enrichers if cfg.enrichers is not None else DEFAULTS[cfg.store])
        except UnknownName as exc:
            raise ConfigurationError(f"AEGIS_ENRICHERS: {exc}") from None
        made = (connections or connect.lazy(cfg))() if CLOUD & set(names) else None
        ctx = Context(connections=made, workspace=cfg.log_analytics_workspace, events=events)
        return cls(names, ctx, cfg.enrich_budget)

    def pending(self, incidents: Iterable[Incident], store: Store) -> list[Incident]:
        """The incidents (not superseded) whose enrichment is missing or older than their evidence."""
        out = []
        for view in views(incidents):
            if view.status == "superseded":
                continue
            kept = {e.name: e.version for e in store.enrichment(view.incident.id)}
            if any(kept.get(n) != version(view.incident) for n in self.names):
                out.append(view.incident)
        return out

    def run(self, incidents: Iterable[Incident], store: Store, *, limit: int = 50) -> int:
        """Enrich up to `limit` pending incidents, newest evidence first; how many were enriched."""
        todo = sorted(self.pending(incidents, store), key=lambda i: i.last_seen, reverse=True)[:limit]
        directory = Directory(store)
        for incident in todo:
            found = enrich(incident, self.names, self.ctx, budget=self.budget)
            store.save_enrichment(incident.id, found)
            # Graph's word on who each principal is: the directory's, from now on (`aegis.directory`)
            directory.learn(
                p for e in found if e.name == "graph" and e.status == "ok" for p in graph.principals_of(e.result)
            )
        return len(todo)
