"""The directory: one entity per real principal, whichever of its names a source used.

Sources name one person or application differently: an AI log by object id alone (without saying
whether it is a user or a service principal), an alert by UPN, a sign-in by both. The directory
learns, from every event that pairs them, what each object id is (user, service principal, managed
identity) and which UPN and display name go with it; before correlation, each event's principals
are completed from it, so that rules group one person once (`entities.user` is keyed by object id)
and the response never disables a service principal as if it were a user.

What it learns from:
- sign-ins (user, service principal and managed-identity sign-ins), the activity log's token claims
  and Defender alerts' account entities: the pairings they state, each with its source;
- Microsoft Graph, through enrichment (`learn`): the directory itself, which overrides the stream.

Every field of the stream is the sender's word, so the directory is careful with it:
- it fills in what an event leaves out, and never replaces what an event says;
- an application's word (`Origin.APP`) teaches nothing;
- only a bare object id (what AI logs give) is re-typed as a service principal; an alert's account
  entity stays a user;
- the first pairing stands: a later one that contradicts it (another UPN for the object id, another
  object id for the UPN, another kind) from the stream marks both entries in conflict, and neither
  is used again until Graph settles it. A forged pairing can so at worst stop an alias from being
  used; it cannot move one person's name onto another object id.

Entries are read once per worker and cached (`CACHED`); a key the store does not know is asked again
after `RECHECK`, so that what another instance learned reaches this one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import structlog

from aegis.events import Entity, Event, Origin, ServicePrincipal, Source, User
from aegis.records import Principal, principal_key
from aegis.store import Store

log = structlog.get_logger("aegis.directory")

CACHED = 100_000  # entries kept per worker
RECHECK = timedelta(minutes=10)  # how long a key the store does not know is taken as unknown
GRAPH = "graph"
_MACHINES = ("service_principal", "managed_identity")


class Directory:
    def __init__(self, store: Store, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.clock = clock
        self._known: OrderedDict[str, Principal | None] = OrderedDict()  # key → entry (None: not in the store)
        self._asked: dict[str, datetime] = {}  # key → when the store said it did not know it

    def apply(self, events: Sequence[Event]) -> list[Event]:
        """Learn from the batch's pairings, then complete each event's principals."""
        self.learn(p for e in events for p in _pairings(e))
        wanted = {k for e in events for x in e.entities for k in _lookups(x)}
        self._load(wanted)
        return [self._complete(e) for e in events]

    def learn(self, found: Iterable[Principal]) -> None:
        """Take what a source says of principals; write what is new or changed."""
        found = list(found)
        if not found:
            return
        self._load({k for p in found for k in p.keys})
        self._load({k for p in found for k0 in p.keys if (e := self._get(k0)) is not None for k in e.keys})
        now = self.clock().isoformat()
        changed: dict[str, Principal] = {}
        for p in found:
            known = [e for k in p.keys if (e := changed.get(k) or self._get(k)) is not None]
            merged = _merged(p, known)
            if merged is None:
                log.warning("principal_contradicts_graph", keys=p.keys, source=p.source)
                continue
            # every key of every entry involved: a conflict marks all of them
            keys = list(dict.fromkeys([*p.keys, *(k for e in known for k in e.keys), *merged.keys]))
            if merged.conflict and not any(e.conflict for e in known):
                log.warning("principal_conflict", keys=keys, source=p.source)
            for k in keys:
                e = changed.get(k) or self._get(k)
                if e is None or not _same(merged, e):
                    changed[k] = replace(merged, learned=now)
        if changed:
            self.store.save_principals(changed)
            for k, p in changed.items():
                self._remember(k, p)

    def _complete(self, e: Event) -> Event:
        if not any(isinstance(x, User | ServicePrincipal) for x in e.entities):
            return e
        out = [self._completed(x) for x in e.entities]
        if all(a is b for a, b in zip(out, e.entities, strict=True)):
            return e
        return replace(e, entities=tuple(out))

    def _completed(self, x: Entity) -> Entity:
        if isinstance(x, User):
            entry = self._entry(x.object_id, x.upn)
            if entry is None:
                return x
            if entry.kind in _MACHINES:
                if x.upn or x.name or not x.object_id:
                    return x  # a source that names a person is not overruled
                return ServicePrincipal(object_id=x.object_id, app_id=entry.app_id, name=entry.name,
                                        kind=_sp_kind(entry.kind), origin=x.origin)  # fmt: skip
            if (x.object_id and entry.object_id != x.object_id) or (x.upn and entry.upn and entry.upn != x.upn):
                return x
            return replace(x, object_id=x.object_id or entry.object_id, upn=x.upn or entry.upn,
                           name=x.name or entry.name, tenant_id=x.tenant_id or entry.tenant)  # fmt: skip
        if isinstance(x, ServicePrincipal) and x.object_id:
            entry = self._entry(x.object_id, None)
            if entry is None or entry.kind not in _MACHINES:
                return x
            return replace(x, app_id=x.app_id or entry.app_id, name=x.name or entry.name,
                           kind=x.kind or _sp_kind(entry.kind))  # fmt: skip
        return x

    def _entry(self, object_id: str | None, upn: str | None) -> Principal | None:
        for k in (principal_key("oid", object_id), principal_key("upn", upn)):
            entry = self._get(k) if k else None
            if entry is not None:
                return None if entry.conflict else entry
        return None

    # --- the cache in front of the store ---

    def _load(self, keys: set[str]) -> None:
        now = self.clock()
        missing = [k for k in keys if k not in self._known or (self._known[k] is None and self._stale(k, now))]
        if not missing:
            return
        found = self.store.principals(sorted(missing))
        for k in missing:
            self._remember(k, found.get(k))
            if k not in found:
                self._asked[k] = now

    def _stale(self, key: str, now: datetime) -> bool:
        asked = self._asked.get(key)
        return asked is None or now - asked >= RECHECK

    def _get(self, key: str) -> Principal | None:
        return self._known.get(key)

    def _remember(self, key: str, entry: Principal | None) -> None:
        self._known[key] = entry
        self._known.move_to_end(key)
        if entry is not None:
            self._asked.pop(key, None)
        while len(self._known) > CACHED:
            gone, _ = self._known.popitem(last=False)
            self._asked.pop(gone, None)


def _pairings(e: Event) -> list[Principal]:
    """What an event states about principals: a user with both its object id and UPN, a service
    principal or managed identity with its object id; never an application's word."""
    out = []
    for x in e.entities:
        if x.origin is Origin.APP:
            continue
        if isinstance(x, User) and x.object_id and x.upn:
            out.append(Principal("user", x.object_id, x.upn, x.name, None, x.tenant_id or e.tenant, e.source.value))
        elif isinstance(x, ServicePrincipal) and x.object_id and e.source in _STATES_KIND:
            kind = "managed_identity" if x.kind == "managed_identity" else "service_principal"
            out.append(Principal(kind, x.object_id, None, x.name, x.app_id, e.tenant, e.source.value))
    return out


_STATES_KIND = frozenset({Source.SIGNIN_LOG, Source.ACTIVITY_LOG})  # sources that say a principal is no user


def _lookups(x: Entity) -> list[str]:
    if isinstance(x, User):
        return [k for k in (principal_key("oid", x.object_id), principal_key("upn", x.upn)) if k]
    if isinstance(x, ServicePrincipal) and x.object_id:
        return [f"oid:{x.object_id}"]
    return []


def _merged(p: Principal, entries: list[Principal]) -> Principal | None:
    """`p` taken into what is known under its keys: filled in, or, contradicting it, a conflict.
    Graph's word replaces the stream's and settles a conflict; the stream never overrules Graph
    (None: `p` is not believed)."""
    if p.source == GRAPH:
        return p
    if any(e.source == GRAPH and not _agrees(p, e) for e in entries):
        return None
    merged = p
    for e in entries:
        if e.conflict or not _agrees(p, e):
            return replace(_fill(merged, e), conflict=True)
        merged = _fill(merged, e)
    return merged


def _agrees(a: Principal, b: Principal) -> bool:
    return (
        a.kind == b.kind
        and not (a.object_id and b.object_id and a.object_id != b.object_id)
        and not (a.upn and b.upn and a.upn.lower() != b.upn.lower())
    )


def _fill(a: Principal, b: Principal) -> Principal:
    """`a`, with what it leaves out taken from `b` (`b` was first: its source and time stay)."""
    return replace(b, object_id=b.object_id or a.object_id, upn=b.upn or a.upn, name=b.name or a.name,
                   app_id=b.app_id or a.app_id, tenant=b.tenant or a.tenant)  # fmt: skip


def _same(a: Principal, b: Principal) -> bool:
    """Equal but for when it was learned: nothing to write."""
    return replace(a, learned="") == replace(b, learned="")


def _sp_kind(kind: str) -> str:
    return "managed_identity" if kind == "managed_identity" else "application"
