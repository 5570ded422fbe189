"""Who calls each AI account with its keys: the diagnostic logs' requests that carry no Entra
identity (`auth` "key"), kept per account as callers (network, user agent, deployment) with when
they were last seen, so that an approver sees which applications a key rotation breaks.

The ingest path writes a caller at most once per `every` of event time per worker, and at most
`per_batch` new ones a batch: a Send-key holder who forges request logs with random networks fills
the list only that fast, and retention purges what is not seen again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from aegis.assets import ACCOUNT_TYPES, KeyCaller
from aegis.events import Event, Ip, ModelDeployment, UserAgent
from aegis.store import Store

ACCOUNT = ACCOUNT_TYPES[0]
MAX_REMEMBERED = 50_000  # callers whose last write this worker remembers (then it forgets them all)


class KeyUse:
    def __init__(self, store: Store, *, every: timedelta = timedelta(minutes=15), per_batch: int = 200) -> None:
        self.store, self.every, self.per_batch = store, every, per_batch
        self._written: dict[tuple[str, str | None, str | None, str | None], datetime] = {}

    def observe(self, events: Iterable[Event]) -> int:
        """Write the key callers these events show that are new, or not written for `every`; how many."""
        fresh: dict[tuple[str, str | None, str | None, str | None], datetime] = {}
        for e in events:
            if e.attributes.get("auth") != "key" or e.resource is None:
                continue
            # a project's or a deployment's logs: its account (`parent` of an account is None)
            account = e.resource if e.resource.type == ACCOUNT else e.resource.parent() or e.resource
            ip = agent = deployment = None
            for x in e.entities:
                if isinstance(x, Ip):
                    ip = ip or x.key
                elif isinstance(x, UserAgent):
                    agent = agent or x.value
                elif isinstance(x, ModelDeployment):
                    deployment = deployment or x.name
            who = (account.id, ip, agent, deployment)
            last = self._written.get(who)
            if last is not None and e.time - last < self.every:
                continue
            held = fresh.get(who)
            if held is None and len(fresh) >= self.per_batch:
                continue
            if held is None or held < e.time:
                fresh[who] = e.time
        if not fresh:
            return 0
        self.store.save_key_callers([KeyCaller(*who, last_seen=at) for who, at in fresh.items()])
        if len(self._written) > MAX_REMEMBERED:
            self._written.clear()
        self._written.update(fresh)
        return len(fresh)
