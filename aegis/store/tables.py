"""The cloud store: Azure Table Storage for correlation state, incidents and their evidence, the
response and dead letters; Blob Storage for the dead letters' raw bodies.

With every event kept (`AEGIS_KEEP_EVENTS=all`; by default only evidence is), events go to
`{prefix}events`, partitioned by event day (`PartitionKey` = `YYYYMMDD`) and keyed by event id, so
a replayed event is a 409 on insert, counted as a duplicate; inserts go in entity-group
transactions of up to 100 per partition, retried entity by entity when one meets an existing
event. Raw message bodies (up to the 1 MB Event Hubs limit, more than a table entity holds) are
blobs named by their SHA-256.

Correlation state: one partition per bucket in `{prefix}state`, holding the bucket entity
(`RowKey` "bucket"), its entities ("bucket-entities-<n>": each once, in records rewritten only when
they change), its pane chunks ("chunk-<n>") and its incidents ("incident-<id>"), so that the bucket's optimistic
write (ETag, If-Match), its incidents' changes, the events they hold as evidence ("event-<digest>":
a write's evidence in one row, as a list) and their outbox rows ("outbox-<id>-<fingerprint>": what
the response has still to plan) are one entity-group transaction: all or nothing.
Documents larger than one property are split over binary properties `doc0`..`doc14`.

Response records: one partition per incident in `{prefix}response`, holding its steps
("step-<key>"), its audit entries ("audit-<time>-<n>") and its local ticket ("ticket"), so a step's
change and the audit entries that explain it are one entity-group transaction. A step is written
over the ETag of the revision it was read at. The audit rows are only ever created. The local
ticket numbers come from a counter entity changed under If-Match.

Tested against Azurite.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, Self

import orjson
from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import (
    EdmType,
    EntityProperty,
    TableClient,
    TableServiceClient,
    TableTransactionError,
    UpdateMode,
)
from azure.storage.blob import BlobServiceClient, ContainerClient

from aegis.assets import Asset, AssetChange, Finding, KeyCaller
from aegis.errors import StoreError, StoreUnavailable
from aegis.events import DeadLetter, Event, richer
from aegis.records import (
    AuditEntry,
    Enrichment,
    Incident,
    Pending,
    Principal,
    StepRecord,
    Triage,
    fingerprint,
    sortable,
)
from aegis.store.base import Bucket, BucketWrite, Committed, SaveResult, Version

PREFIX = "aegis"  # tables {prefix}events and {prefix}deadletters, blob container {prefix}-raw
MAX_INLINE_DOC = 30_000  # characters; a table string property holds 32K UTF-16 code units
_TRANSACTION_SIZE = 100
PARALLEL = 8  # partitions read or written at once (the SDK's connection pool keeps 10 per host)


class TableStore:
    def __init__(self, tables: TableServiceClient, blobs: BlobServiceClient, *, prefix: str = PREFIX) -> None:
        self._pool = ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="aegis-tables")
        with _translate():
            self._events = tables.create_table_if_not_exists(f"{prefix}events")
            self._dead_letters = tables.create_table_if_not_exists(f"{prefix}deadletters")
            self._state = tables.create_table_if_not_exists(f"{prefix}state")
            self._response = tables.create_table_if_not_exists(f"{prefix}response")
            self._raw = blobs.get_container_client(f"{prefix}-raw")
            with suppress(ResourceExistsError):
                self._raw.create_container()

    @classmethod
    def from_connection_string(cls, conn: str, *, prefix: str = PREFIX) -> Self:
        tables = TableServiceClient.from_connection_string(conn)
        return cls(tables, BlobServiceClient.from_connection_string(conn), prefix=prefix)

    @classmethod
    def from_endpoints(cls, table_endpoint: str, blob_endpoint: str, credential: TokenCredential) -> Self:
        return cls(
            TableServiceClient(table_endpoint, credential=credential), BlobServiceClient(blob_endpoint, credential)
        )

    def save(
        self,
        raws: Mapping[str, bytes],
        events: Sequence[Event],
        dead_letters: Sequence[DeadLetter],
        *,
        received: datetime | None = None,
    ) -> SaveResult:
        with _translate():
            for digest, body in raws.items():
                _put_blob(self._raw, f"messages/{digest}", body)
            new_events = self._insert(self._events, [self._event_entity(e) for e in events])
            new_dls = self._insert(self._dead_letters, [_dead_letter_entity(d) for d in dead_letters])
        return SaveResult(new_events, new_dls)

    def events(
        self, *, limit: int | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> list[Event]:
        """The events kept: incidents' evidence (rows in the buckets' partitions) and, with every event
        kept, the events table. A query over both tables: for the CLI and the enrichers, never ingest."""
        days, parameters = [], {}
        evidence, at_parameters = _rows_of(EVIDENCE)
        times = [evidence]
        for name, op, at in (("since", "ge", since), ("until", "le", until)):
            if at is not None:
                days.append(f"PartitionKey {op} @{name}")
                parameters[name] = at.astimezone(UTC).strftime("%Y%m%d")
        if since is not None:  # an evidence row's time is its latest event's: its others are sifted below
            times.append("time ge @since")
            at_parameters["since"] = since.astimezone(UTC).isoformat()
        found: dict[str, Event] = {}
        with _translate():
            rows = self._events.query_entities(" and ".join(days), parameters=parameters) if days else (
                self._events.list_entities())  # fmt: skip
            for entity in rows:
                doc = entity.get("doc")
                if doc is None:
                    doc = self._raw.download_blob(f"events/{entity['RowKey']}").readall()
                e = Event.from_json(doc)
                found[e.id] = e
            for entity in self._state.query_entities(" and ".join(times), parameters=at_parameters):
                for e in _evidence_of(_unpack(entity)):
                    found.setdefault(e.id, e)
        out = [e for e in found.values() if (since is None or e.time >= since) and (until is None or e.time <= until)]
        out.sort(key=lambda e: (e.time, e.id))
        return out[:limit] if limit else out

    def dead_letters(self, *, limit: int | None = None) -> list[DeadLetter]:
        with _translate():
            out = [
                DeadLetter.from_dict({k: v for k, v in entity.items() if k in DeadLetter.__dataclass_fields__})
                for entity in self._dead_letters.list_entities()
            ]
        out.sort(key=lambda d: (d.received, d.id))
        return out[:limit] if limit else out

    def purge(self, before: datetime) -> int:
        """Events and dead letters go by whole days (their partitions before `before`'s day), raw
        bodies and event documents in blobs by when they were written. (At scale, a Blob lifecycle
        management rule on the raw container does the blob part without listing.)"""
        day = before.astimezone(UTC).strftime("%Y%m%d")
        gone = 0
        with _translate():
            for table in (self._events, self._dead_letters):
                rows = table.query_entities("PartitionKey lt @day", parameters={"day": day},
                                            select=["PartitionKey", "RowKey"])  # fmt: skip
                by_partition: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
                for row in rows:
                    by_partition[row["PartitionKey"]].append(("delete", dict(row)))
                for group in by_partition.values():
                    for i in range(0, len(group), _TRANSACTION_SIZE):
                        chunk = group[i : i + _TRANSACTION_SIZE]
                        table.submit_transaction(chunk)
                        gone += len(chunk)
            evidence = self._state.query_entities(
                _rows_of(EVIDENCE)[0] + " and time lt @at",
                parameters={**_rows_of(EVIDENCE)[1], "at": before.astimezone(UTC).isoformat()},
                select=["PartitionKey", "RowKey", "count"],
            )  # fmt: skip
            for row in evidence:  # rows whose latest event is older: every event in them is
                with suppress(ResourceNotFoundError):
                    self._state.delete_entity(row["PartitionKey"], row["RowKey"])
                    gone += row.get("count") or 1
            old_changes = self._response.query_entities(
                "PartitionKey eq @pk and RowKey gt @row", select=["PartitionKey", "RowKey"],
                parameters={"pk": INVENTORY["change"], "row": _countdown(before)})  # fmt: skip
            old_callers = self._response.query_entities(
                "PartitionKey gt @lo and PartitionKey lt @hi and last_seen lt @at", select=["PartitionKey", "RowKey"],
                parameters={"lo": f"{CALLERS}-", "hi": f"{CALLERS}.", "at": sortable(before)})  # fmt: skip
            old_findings = self._response.query_entities(
                "PartitionKey eq @pk and closed gt '' and closed lt @at", select=["PartitionKey", "RowKey"],
                parameters={"pk": INVENTORY["finding"], "at": sortable(before)})  # fmt: skip
            for row in [*old_changes, *old_callers, *old_findings]:
                with suppress(ResourceNotFoundError):
                    self._response.delete_entity(row["PartitionKey"], row["RowKey"])
                    gone += 1
            for blob in self._raw.list_blobs():
                if blob.last_modified is not None and blob.last_modified < before:
                    with suppress(ResourceNotFoundError):
                        self._raw.delete_blob(blob.name)
                        gone += 1
        return gone

    def raw(self, digest: str) -> bytes | None:
        with _translate():
            try:
                return self._raw.download_blob(f"messages/{digest}").readall()
            except ResourceNotFoundError:
                return None

    def load_buckets(self, keys: Sequence[str]) -> dict[str, Bucket]:
        """One partition a bucket: read in parallel (`PARALLEL` at a time), each in one request (its
        head, chunks and records of entities)."""
        found = self._pool.map(self._load, keys)
        return {b.key: b for b in found if b is not None}

    def _load(self, key: str) -> Bucket | None:
        with _translate():
            try:
                rows = list(self._state.query_entities(
                    "PartitionKey eq @pk and RowKey lt @end", parameters={"pk": key, "end": "chunk."}
                ))  # fmt: skip
            except ResourceNotFoundError:
                return None
        found = next((r for r in rows if r["RowKey"] == BUCKET_ROW), None)
        if found is None:
            return None
        chunks = {int(r["RowKey"].removeprefix("chunk-")): _unpack(r) for r in rows if r["RowKey"].startswith("chunk-")}
        entities = {_entity_record(r["RowKey"]): _unpack(r) for r in rows if r["RowKey"].startswith(ENTITIES_ROW)}
        return Bucket(key, str(found.metadata["etag"]), orjson.loads(_unpack(found)), chunks, entities)

    def commit_buckets(self, writes: Sequence[BucketWrite]) -> Committed:
        """Each bucket's write is one entity-group transaction in its own partition (more only past
        100 operations); the partitions are written in parallel, `PARALLEL` at a time."""
        done = list(self._pool.map(self._commit, writes))
        versions: dict[str, Version] = {w.key: v for w, v in zip(writes, done, strict=True) if v is not None}
        return Committed(versions, {w.key for w in writes} - versions.keys())

    def _commit(self, w: BucketWrite) -> Version | None:
        """The new ETag, or None: another writer changed (or created) the bucket first."""
        with _translate():
            ops: list[Any] = []
            watermark = EntityProperty(w.watermark, EdmType.INT64)
            bucket = {"PartitionKey": w.key, "RowKey": BUCKET_ROW, "watermark": watermark, **_pack(w.doc)}
            if w.expected is None:
                ops.append(("create", bucket))
            else:
                ops.append(("update", bucket, {"mode": UpdateMode.REPLACE, "etag": w.expected,
                                                "match_condition": MatchConditions.IfNotModified}))  # fmt: skip
            for n, doc in w.chunks.items():
                row = {"PartitionKey": w.key, "RowKey": _chunk_row(n), **_pack(doc)}
                ops.append(("upsert", row, {"mode": UpdateMode.REPLACE}))
            ops += [("delete", {"PartitionKey": w.key, "RowKey": _chunk_row(n)}) for n in w.drop_chunks]
            for n, doc in w.entities.items():
                ops.append(("upsert", {"PartitionKey": w.key, "RowKey": _entities_row(n), **_pack(doc)},
                            {"mode": UpdateMode.REPLACE}))  # fmt: skip
            ops += [("delete", {"PartitionKey": w.key, "RowKey": _entities_row(n)}) for n in w.drop_entities]
            ops += [("delete", {"PartitionKey": w.key, "RowKey": f"{INCIDENT}-{i}"}) for i in w.delete]
            for i in w.upsert:
                body = i.to_json()
                packed = _pack(body)
                entity = {"PartitionKey": w.key, "RowKey": f"{INCIDENT}-{i.id}", "last_seen": i.last_seen.isoformat()}
                ops.append(("upsert", {**entity, **packed}, {"mode": UpdateMode.REPLACE}))
                pending = {"PartitionKey": w.key, "RowKey": _outbox_row(i.id, fingerprint(body)), **packed}
                ops.append(("upsert", pending, {"mode": UpdateMode.REPLACE}))
            for held in _evidence_rows(w.evidence):  # one row for a write's evidence (more only past ~900 KB)
                ids = hashlib.sha256("\n".join(sorted(e.id for e, _ in held)).encode()).hexdigest()[:32]
                row = {"PartitionKey": w.key, "RowKey": f"{EVIDENCE}-{ids}", "count": len(held),
                       "time": max(e.time for e, _ in held).isoformat()}  # fmt: skip
                doc = b"[" + b",".join(doc for _, doc in held) + b"]"
                ops.append(("upsert", {**row, **_pack(doc)}, {"mode": UpdateMode.REPLACE}))
            try:
                results = [self._state.submit_transaction(chunk) for chunk in _transactions(ops)]
            except TableTransactionError as exc:
                if exc.status_code in (409, 412):  # created meanwhile / changed meanwhile
                    return None
                raise
        return str(results[0][0]["etag"])

    def outbox(self) -> list[Pending]:
        """A query over the state table (the outbox rows sit in their buckets' partitions, to be written
        in the buckets' transactions): the response timer's, once a minute, never the ingest path's."""
        with _translate():
            where, parameters = _rows_of(OUTBOX)
            rows = self._state.query_entities(where, parameters=parameters)
            found = [(r.metadata["timestamp"], r["RowKey"], Incident.from_json(_unpack(r))) for r in rows]
        found.sort(key=lambda x: (x[0], x[1]))
        return [Pending(i, row.rsplit("-", 1)[1]) for _, row, i in found]

    def clear_outbox(self, done: Sequence[Pending]) -> None:
        by_partition: dict[str, list[Any]] = defaultdict(list)
        for p in done:
            row = {"PartitionKey": p.incident.bucket, "RowKey": _outbox_row(p.incident.id, p.fingerprint)}
            by_partition[p.incident.bucket].append(("delete", row))
        with _translate():
            for ops in by_partition.values():
                for chunk in _transactions(list({op[1]["RowKey"]: op for op in ops}.values())):
                    try:
                        self._state.submit_transaction(chunk)
                    except TableTransactionError as exc:
                        if exc.status_code != 404:
                            raise
                        for _, row in chunk:  # one was cleared already (another instance): the rest one by one
                            self._state.delete_entity(row["PartitionKey"], row["RowKey"])

    def expire_buckets(self, before: int) -> int:
        """A scan of the bucket heads: the correlator calls it once per several minutes of event time."""
        gone = 0
        with _translate():
            heads = self._state.query_entities(
                "RowKey eq @row and watermark lt @before", parameters={"row": BUCKET_ROW, "before": before},
                select=["PartitionKey", "RowKey"],
            )  # fmt: skip
            for head in list(heads):
                key = head["PartitionKey"]
                parts = self._state.query_entities(  # its entities and pane chunks: between its head and incidents
                    "PartitionKey eq @pk and RowKey gt @lo and RowKey lt @hi",
                    parameters={"pk": key, "lo": BUCKET_ROW, "hi": "chunk."}, select=["RowKey"],
                )  # fmt: skip
                unchanged = {"etag": head.metadata["etag"], "match_condition": MatchConditions.IfNotModified}
                ops: list[Any] = [("delete", {"PartitionKey": key, "RowKey": BUCKET_ROW}, unchanged)]
                ops += [("delete", {"PartitionKey": key, "RowKey": c["RowKey"]}) for c in parts]
                try:
                    for chunk in _transactions(ops):
                        self._state.submit_transaction(chunk)
                    gone += 1
                except TableTransactionError as exc:
                    if exc.status_code not in (404, 409, 412):  # written or removed meanwhile: keep it
                        raise
        return gone

    def evidence(self, incident: Incident) -> list[Event]:
        """The evidence rows of the incident's bucket partition (one query); an event kept only in
        the events table (every event kept) is a point read there, by its day and id."""
        wanted = set(incident.event_ids)
        found: dict[str, Event] = {}
        where, parameters = _rows_of(EVIDENCE)
        with _translate():
            rows = self._state.query_entities(
                f"PartitionKey eq @pk and {where}", parameters={**parameters, "pk": incident.bucket}
            )
            for row in rows:  # a later write may hold another copy of an event: the richest is shown
                for e in _evidence_of(_unpack(row)):
                    if e.id in wanted:
                        found[e.id] = richer(found[e.id], e) if e.id in found else e
            for entry in incident.timeline:
                if entry.event_id in found or entry.event_id not in wanted:
                    continue
                with suppress(ResourceNotFoundError):
                    entity = self._events.get_entity(entry.time.astimezone(UTC).strftime("%Y%m%d"), entry.event_id)
                    doc = entity.get("doc") or self._raw.download_blob(f"events/{entry.event_id}").readall()
                    found[entry.event_id] = Event.from_json(doc)
        return sorted(found.values(), key=lambda e: (e.time, e.id))

    def incidents(self) -> list[Incident]:
        with _translate():
            where, parameters = _rows_of(INCIDENT)
            rows = self._state.query_entities(where, parameters=parameters)
            found = [Incident.from_json(_unpack(r)) for r in rows]
        return sorted(found, key=lambda i: (i.last_seen, i.id))

    # --- response: planned steps, the audit log and local tickets (the `Store` port) ---

    def add_steps(self, steps: Sequence[StepRecord], audit: Sequence[AuditEntry]) -> int:
        new = 0
        with _translate():
            for n, step in enumerate(steps):
                ops: list[Any] = [("create", _step_entity(step, order=_order(step.created, n)))]
                ops += [("create", _audit_entity(step.incident, a, i))
                        for i, a in enumerate(a for a in audit if a.step == step.key)]  # fmt: skip
                try:
                    for chunk in _transactions(ops):
                        self._response.submit_transaction(chunk)
                    new += 1
                except TableTransactionError as exc:
                    if exc.status_code != 409:  # recorded already: nothing changes
                        raise
        return new

    def steps(
        self, *, incident: str | None = None, action: str | None = None, status: Sequence[str] | None = None
    ) -> list[StepRecord]:
        where, parameters = ["RowKey gt 'step-'", "RowKey lt 'step.'"], {}
        for name, value in (("PartitionKey", incident), ("action", action)):
            if value is not None:
                where.append(f"{name} eq @{name}")
                parameters[name] = value
        if status is not None:
            parameters.update({f"s{i}": s for i, s in enumerate(status)})
            # spaces inside the parentheses: the SDK reads a parameter name up to the next space
            where.append("( " + " or ".join(f"status eq @s{i}" for i in range(len(status))) + " )")
        with _translate():
            rows = list(self._response.query_entities(" and ".join(where), parameters=parameters))
        rows.sort(key=lambda r: r["order"])
        return [StepRecord.from_json(_unpack(r)) for r in rows]

    def step(self, key: str) -> StepRecord | None:
        """A scan across incidents (the key does not name its incident): for the rare lookups by id."""
        with _translate():
            rows = list(self._response.query_entities("RowKey eq @rk", parameters={"rk": f"step-{key}"}))
        return StepRecord.from_json(_unpack(rows[0])) if rows else None

    def replace_step(self, step: StepRecord, *, audit: Sequence[AuditEntry]) -> bool:
        with _translate():
            try:
                stored = self._response.get_entity(step.incident, f"step-{step.key}")
            except ResourceNotFoundError:
                return False
            if stored["revision"] != step.revision - 1:
                return False
            unchanged = {"mode": UpdateMode.REPLACE, "etag": stored.metadata["etag"],
                         "match_condition": MatchConditions.IfNotModified}  # fmt: skip
            ops: list[Any] = [("update", _step_entity(step, order=stored["order"]), unchanged)]
            ops += [("create", _audit_entity(step.incident, a, i)) for i, a in enumerate(audit)]
            try:
                for chunk in _transactions(ops):
                    self._response.submit_transaction(chunk)
            except TableTransactionError as exc:
                if exc.status_code == 412:  # written by another since it was read
                    return False
                raise
        return True

    def started_since(self, action: str, since: datetime) -> int:
        query = "RowKey gt 'step-' and RowKey lt 'step.' and action eq @a and started ge @since"
        with _translate():
            rows = self._response.query_entities(query, parameters={"a": action, "since": sortable(since)},
                                                 select=["RowKey"])  # fmt: skip
            return sum(1 for _ in rows)

    def save_ticket(self, incident: str, title: str, severity: str, now: datetime) -> tuple[str, bool]:
        fields = {"title": title, "severity": severity, "updated": sortable(now)}
        with _translate():
            try:
                ticket = self._response.get_entity(incident, TICKET_ROW)
                self._response.update_entity({"PartitionKey": incident, "RowKey": TICKET_ROW, **fields})
                return str(ticket["number"]), False
            except ResourceNotFoundError:
                pass
            number = f"AEGIS-{self._next_ticket_number()}"
            try:
                self._response.create_entity({"PartitionKey": incident, "RowKey": TICKET_ROW, "number": number,
                                              "opened": sortable(now), **fields})  # fmt: skip
            except ResourceExistsError:  # opened by another worker meanwhile: that one is the ticket
                return str(self._response.get_entity(incident, TICKET_ROW)["number"]), False
        return number, True

    def _next_ticket_number(self) -> int:
        for _ in range(20):
            try:
                counter = self._response.get_entity(COUNTER_PARTITION, TICKET_ROW)
            except ResourceNotFoundError:
                with suppress(ResourceExistsError):
                    self._response.create_entity({"PartitionKey": COUNTER_PARTITION, "RowKey": TICKET_ROW,
                                                  "last": EntityProperty(1, EdmType.INT64)})  # fmt: skip
                    return 1
                continue
            n = int(counter["last"].value) + 1  # an Int64 comes back wrapped
            with suppress(ResourceModifiedError):
                self._response.update_entity(
                    {"PartitionKey": COUNTER_PARTITION, "RowKey": TICKET_ROW, "last": EntityProperty(n, EdmType.INT64)},
                    mode=UpdateMode.REPLACE, etag=counter.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )  # fmt: skip
                return n
        raise StoreUnavailable("the ticket counter kept changing under 20 attempts")

    def audit_log(self) -> list[AuditEntry]:
        with _translate():
            rows = list(self._response.query_entities("RowKey gt 'audit-' and RowKey lt 'audit.'"))
        rows.sort(key=lambda r: r["RowKey"])
        return [AuditEntry.from_json(_unpack(r)) for r in rows]

    def protected_aliases(self) -> set[str]:
        with _translate():
            rows = self._response.query_entities("PartitionKey eq @pk", parameters={"pk": ALIASES_PARTITION})
            return {str(r["id"]) for r in rows}

    def add_protected_aliases(self, identifiers: Iterable[str], now: datetime) -> None:
        rows = [{"PartitionKey": ALIASES_PARTITION, "RowKey": hashlib.sha256(i.encode()).hexdigest()[:32], "id": i,
                 "learned": now.isoformat()} for i in identifiers]  # fmt: skip
        with _translate():
            self._insert(self._response, rows)

    # --- triage: row `triage` of the incident's partition (its audit rows beside it) ---

    def triage(self, incident: str) -> Triage | None:
        with _translate():
            try:
                return Triage.from_json(_unpack(self._response.get_entity(incident, TRIAGE_ROW)))
            except ResourceNotFoundError:
                return None

    def triages(self) -> dict[str, Triage]:
        with _translate():  # a scan by row key: the console's list, never the ingest path
            rows = self._response.query_entities("RowKey eq @rk", parameters={"rk": TRIAGE_ROW})
            return {t.incident: t for t in (Triage.from_json(_unpack(r)) for r in rows)}

    def save_triage(self, triage: Triage, *, audit: Sequence[AuditEntry]) -> bool:
        entity = {"PartitionKey": triage.incident, "RowKey": TRIAGE_ROW, "revision": triage.revision,
                  **_pack(triage.to_json())}  # fmt: skip
        with _translate():
            if triage.revision == 1:
                first: list[Any] = [("create", entity)]
            else:
                try:
                    stored = self._response.get_entity(triage.incident, TRIAGE_ROW)
                except ResourceNotFoundError:
                    return False
                if stored["revision"] != triage.revision - 1:
                    return False
                first = [("update", entity, {"mode": UpdateMode.REPLACE, "etag": stored.metadata["etag"],
                                             "match_condition": MatchConditions.IfNotModified})]  # fmt: skip
            ops = first + [("create", _audit_entity(triage.incident, a, i)) for i, a in enumerate(audit)]
            try:
                for chunk in _transactions(ops):
                    self._response.submit_transaction(chunk)
            except TableTransactionError as exc:
                if exc.status_code in (409, 412):  # created or written by another since it was read
                    return False
                raise
        return True

    # --- the directory: partition `principals` of the response table, a row per key ---

    def principals(self, keys: Sequence[str]) -> dict[str, Principal]:
        rows = {_principal_row(k): k for k in keys}
        names = list(rows)
        # a filter holds at most 15 comparisons: the partition's and 14 row keys
        parts = [names[i : i + 14] for i in range(0, len(names), 14)]

        def query(part: list[str]) -> list[dict[str, Any]]:
            where = " or ".join(f"RowKey eq @r{n}" for n in range(len(part)))
            params = {"pk": PRINCIPALS_PARTITION, **{f"r{n}": r for n, r in enumerate(part)}}
            return list(self._response.query_entities(f"PartitionKey eq @pk and ({where} )", parameters=params))

        with _translate():
            found = [row for got in self._pool.map(query, parts) for row in got]
        return {rows[r["RowKey"]]: Principal.from_json(r["doc"]) for r in found if r["RowKey"] in rows}

    def save_principals(self, entries: Mapping[str, Principal]) -> None:
        rows = [{"PartitionKey": PRINCIPALS_PARTITION, "RowKey": _principal_row(k), "key": k[:1024],
                 "doc": p.to_json().decode()} for k, p in entries.items()]  # fmt: skip
        with _translate():
            for i in range(0, len(rows), _TRANSACTION_SIZE):
                self._response.submit_transaction([("upsert", r, {"mode": UpdateMode.REPLACE})
                                                   for r in rows[i : i + _TRANSACTION_SIZE]])  # fmt: skip

    # --- the AI estate: partitions `inventory-*` and `callers-<account>` of the response table ---

    def assets(self) -> list[Asset]:
        return sorted((Asset.from_json(d) for d in self._partition(INVENTORY["asset"])), key=lambda a: a.id)

    def save_inventory(
        self, assets: Sequence[Asset], findings: Sequence[Finding], changes: Sequence[AssetChange],
        *, gone: Sequence[str] = (),
    ) -> None:  # fmt: skip
        def row(kind: str, key: str, doc: bytes, **more: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
            entity = {"PartitionKey": INVENTORY[kind], "RowKey": key, **more, **_pack(doc)}
            return "upsert", entity, {"mode": UpdateMode.REPLACE}

        ops = [row("asset", _principal_row(a.id), a.to_json()) for a in assets]
        ops += [("delete", {"PartitionKey": INVENTORY["asset"], "RowKey": _principal_row(g)}, {}) for g in gone]
        ops += [row("finding", f.id, f.to_json(), closed=sortable(f.closed) if f.closed else "")  # for retention
                for f in findings]  # fmt: skip
        ops += [row("change", f"{_countdown(c.time)}-{c.key[-16:]}", c.to_json()) for c in changes]
        with _translate():
            for op, entity, kw in ops:  # each row on its own: an asset's document may fill a transaction alone
                if op == "delete":
                    with suppress(ResourceNotFoundError):
                        self._response.delete_entity(entity["PartitionKey"], entity["RowKey"])
                else:
                    self._response.upsert_entity(entity, **kw)

    def findings(self) -> list[Finding]:
        return sorted((Finding.from_json(d) for d in self._partition(INVENTORY["finding"])),
                      key=lambda f: (f.asset, f.id))  # fmt: skip

    def asset_changes(self, *, limit: int | None = None) -> list[AssetChange]:
        return [AssetChange.from_json(d) for d in self._partition(INVENTORY["change"], limit=limit)]

    def key_callers(self, account: str) -> list[KeyCaller]:
        found = [KeyCaller.from_json(d) for d in self._partition(_callers_partition(account))]
        return sorted(found, key=lambda c: c.last_seen, reverse=True)

    def save_key_callers(self, callers: Sequence[KeyCaller]) -> None:
        by_partition: dict[str, list[Any]] = defaultdict(list)
        for c in callers:
            entity = {"PartitionKey": _callers_partition(c.account), "RowKey": c.key,
                      "last_seen": sortable(c.last_seen), **_pack(c.to_json())}  # fmt: skip
            by_partition[entity["PartitionKey"]].append(("upsert", entity, {"mode": UpdateMode.REPLACE}))
        with _translate():
            for ops in by_partition.values():
                for i in range(0, len(ops), _TRANSACTION_SIZE):
                    self._response.submit_transaction(ops[i : i + _TRANSACTION_SIZE])

    def _partition(self, pk: str, *, limit: int | None = None) -> list[bytes]:
        with _translate():
            rows = self._response.query_entities("PartitionKey eq @pk", parameters={"pk": pk})
            out = []
            for r in rows:
                out.append(_unpack(r))
                if limit is not None and len(out) >= limit:
                    break
        return out

    # --- enrichment and delivery: rows `<kind>-<name>` of its partition ---

    def save_enrichment(self, incident: str, items: Sequence[Enrichment], *, kind: str = "enrich") -> None:
        with _translate():
            for e in items:
                entity = {"PartitionKey": incident, "RowKey": f"{kind}-{e.name}", **_pack(orjson.dumps(e.summary()))}
                self._response.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def enrichment(self, incident: str, *, kind: str = "enrich") -> list[Enrichment]:
        with _translate():
            rows = list(
                self._response.query_entities(
                    f"PartitionKey eq @pk and RowKey gt '{kind}-' and RowKey lt '{kind}.'", parameters={"pk": incident}
                )
            )  # fmt: skip  (kind is one of the code's own words, never input)
        rows.sort(key=lambda r: r["RowKey"])
        return [Enrichment.from_json(_unpack(r)) for r in rows]

    def close(self) -> None:
        self._pool.shutdown()
        self._response.close()
        self._raw.close()
        self._events.close()
        self._dead_letters.close()
        self._state.close()

    def _event_entity(self, e: Event) -> dict[str, Any]:
        doc = e.to_json().decode()
        entity: dict[str, Any] = {
            "PartitionKey": e.time.strftime("%Y%m%d"),
            "RowKey": e.id,
            "time": e.time.isoformat(),
            "source": e.source.value,
            "kind": e.kind,
            "resource": e.resource.id if e.resource else "",
        }
        if len(doc) <= MAX_INLINE_DOC:
            entity["doc"] = doc
        else:  # an alert with hundreds of entities: the document goes to a blob
            _put_blob(self._raw, f"events/{e.id}", doc.encode())
        return entity

    @staticmethod
    def _insert(table: TableClient, entities: list[dict[str, Any]]) -> int:
        """Insert entities, skipping those already there; return how many were new."""
        by_partition: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entity in {(x["PartitionKey"], x["RowKey"]): x for x in entities}.values():
            by_partition[entity["PartitionKey"]].append(entity)
        new = 0
        for group in by_partition.values():
            for i in range(0, len(group), _TRANSACTION_SIZE):
                chunk = group[i : i + _TRANSACTION_SIZE]
                try:
                    table.submit_transaction([("create", x) for x in chunk])
                    new += len(chunk)
                    continue
                except TableTransactionError:
                    pass  # some already exist: go one by one
                for x in chunk:
                    try:
                        table.create_entity(x)
                        new += 1
                    except ResourceExistsError:
                        pass
        return new


BUCKET_ROW = "bucket"
# a bucket's entities, in records ("bucket-entities-<n>"; "bucket-entities" alone, written before there
# were several, is record -1): they sort between the head and the chunks, and are read with them
ENTITIES_ROW = "bucket-entities"
# the kinds of row in a bucket's partition besides its head and chunks: "<kind>-<id>"
INCIDENT, EVIDENCE, OUTBOX = "incident", "event", "outbox"  # its incidents, the events they hold, their changes
ALIASES_PARTITION = "protected-aliases"  # in the response table: identifiers paired with protected users
PRINCIPALS_PARTITION = "principals"  # in the response table: the directory (`aegis.directory`)
# in the response table: the inventory's assets, findings and changes (newest first), and each account's key callers
INVENTORY = {"asset": "inventory-asset", "finding": "inventory-finding", "change": "inventory-change"}
CALLERS = "callers"
_NEVER = 10**17  # a change's row key counts down from this (µs since the epoch): the newest sorts first
TRIAGE_ROW = "triage"
TICKET_ROW = "ticket"
COUNTER_PARTITION = "~counters"  # sorts after every incident id (hex)
_CHUNK = 64 * 1024
_MAX_CHUNKS = 15  # an entity holds at most 1 MiB: 15 binary properties of 64 KiB leave room for keys


def _principal_row(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]  # a UPN may hold characters a row key may not (#)


def _countdown(at: datetime) -> str:
    return f"{_NEVER - int(at.timestamp() * 1_000_000):017d}"


def _callers_partition(account: str) -> str:
    return f"{CALLERS}-{hashlib.sha256(account.lower().encode()).hexdigest()[:24]}"


def _outbox_row(incident: str, fp: str) -> str:
    return f"{OUTBOX}-{incident}-{fp}"


def _rows_of(kind: str) -> tuple[str, dict[str, str]]:
    """The filter (and its parameters) of the rows of one kind ("<kind>-..."), in any partition."""
    return "RowKey gt @lo and RowKey lt @hi", {"lo": f"{kind}-", "hi": f"{kind}."}


def _chunk_row(n: int) -> str:
    return f"chunk-{n:012d}"  # sorts by number, and before the incident rows


def _entities_row(n: int) -> str:
    return ENTITIES_ROW if n == -1 else f"{ENTITIES_ROW}-{n}"


def _entity_record(row: str) -> int:
    return int(row.removeprefix(ENTITIES_ROW + "-")) if row != ENTITIES_ROW else -1


def _pack(doc: bytes) -> dict[str, Any]:
    chunks = [doc[i : i + _CHUNK] for i in range(0, len(doc), _CHUNK)] or [b""]
    if len(chunks) > _MAX_CHUNKS:
        raise StoreError(f"a correlation document of {len(doc)} bytes exceeds what one table entity holds")
    return {f"doc{n}": chunk for n, chunk in enumerate(chunks)}


def _unpack(entity: Mapping[str, Any]) -> bytes:
    return b"".join(bytes(entity[f"doc{n}"]) for n in range(_MAX_CHUNKS) if f"doc{n}" in entity)


def _evidence_rows(events: Sequence[Event], budget: int = 900_000) -> list[list[tuple[Event, bytes]]]:
    """A write's evidence events, each with its JSON, in as few rows as their size allows (a row
    holds about 960 KB)."""
    rows: list[list[tuple[Event, bytes]]] = []
    size = budget
    for e in events:
        doc = e.to_json()
        if size + len(doc) > budget:
            rows.append([])
            size = 0
        rows[-1].append((e, doc))
        size += len(doc)
    return rows


def _evidence_of(doc: bytes) -> list[Event]:
    """The events of an evidence row: a list (or, in a row written before they were packed, one)."""
    raw = orjson.loads(doc)
    return [Event.from_dict(x) for x in raw] if isinstance(raw, list) else [Event.from_dict(raw)]


def _transactions(ops: list[Any]) -> list[list[Any]]:
    """Entity-group transactions hold 100 operations; the bucket's own write leads the first."""
    return [ops[i : i + _TRANSACTION_SIZE] for i in range(0, len(ops), _TRANSACTION_SIZE)]


def _step_entity(s: StepRecord, *, order: str) -> dict[str, Any]:
    return {"PartitionKey": s.incident, "RowKey": f"step-{s.key}", "order": order, "action": s.action,
            "status": s.status, "revision": s.revision, "started": sortable(s.started) if s.started else "",
            **_pack(orjson.dumps(s))}  # fmt: skip


def _order(created: datetime, n: int) -> str:
    """Planned order: the time the plan was recorded, then the step's place in it."""
    return f"{sortable(created)}-{n:06d}"


def _audit_entity(incident: str, a: AuditEntry, n: int) -> dict[str, Any]:
    """An audit row, named in the order entries were written (the writer's clock, then the place in
    its batch) and unique across workers."""
    row = f"audit-{time.time_ns():020d}-{n:04d}-{uuid.uuid4().hex[:12]}"
    return {"PartitionKey": incident, "RowKey": row, **_pack(orjson.dumps(a))}


def _dead_letter_entity(d: DeadLetter) -> dict[str, Any]:
    doc = d.to_dict()
    return {
        "PartitionKey": d.received.strftime("%Y%m%d"),
        "RowKey": d.id,
        **{k: v for k, v in doc.items() if v is not None},
    }


def _put_blob(container: ContainerClient, name: str, body: bytes) -> None:
    with suppress(ResourceExistsError):  # content-addressed: the same name holds the same bytes
        container.upload_blob(name, body, overwrite=False)


@contextmanager
def _translate() -> Iterator[None]:
    """azure-core errors → the store's exceptions: network faults, 408, 429 and 5xx are transient."""
    try:
        yield
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StoreUnavailable(f"storage unreachable: {type(exc).__name__}") from exc
    except HttpResponseError as exc:
        status = exc.status_code or 0
        cause = _cause(exc)
        if status in (408, 429) or status >= 500:
            raise StoreUnavailable(
                f"storage answered {status}{cause} (throttled or failing; the batch is retried)"
            ) from exc
        raise StoreError(f"storage answered {status}{cause}") from exc
    except AzureError as exc:
        raise StoreError(f"storage error: {type(exc).__name__}") from exc


def _cause(exc: HttpResponseError) -> str:
    """What the service said: its error code (`ServerBusy`, `OperationTimedOut`, ...) and how long it
    asked to wait (`Retry-After`), from the response the SDK kept after its own retries."""
    response: Any = exc.response
    headers = response.headers if response is not None else {}
    code = getattr(exc, "error_code", None) or headers.get("x-ms-error-code") or (exc.reason or "")
    code = getattr(code, "value", code)  # the SDKs give an enum (TableErrorCode.SERVER_BUSY → "ServerBusy")
    after = headers.get("Retry-After") or headers.get("retry-after")
    return (f" {str(code)[:80]}" if code else "") + (f", retry after {str(after)[:20]} s" if after else "")
