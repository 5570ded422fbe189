"""The embedded default: one SQLite file in WAL mode."""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

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
from aegis.store import checkpoints
from aegis.store.base import Bucket, BucketWrite, Committed, SaveResult, Version

SCHEMA_VERSION = 3  # 2: correlation state as panes (head + chunks); 3: response steps with revisions
# A bucket's pane chunks and entity records (1-2 KB each, rewritten as they change), in rowid tables:
# a WITHOUT ROWID table is a B-tree of the index kind, which keeps at most about 1,000 bytes of a row
# in its leaf page and the rest in an overflow page, so that each chunk written cost three pages of
# the WAL (the leaf, a new overflow page, the freelist); a rowid table keeps a row of up to 4 KB in
# its leaf, and an upsert keeps its rowid (one page a write: the WAL of the bench stream −25%)
PARTS = {
    "bucket_chunks": """CREATE TABLE IF NOT EXISTS bucket_chunks (
    key TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (key, chunk)
);""",
    "bucket_entity_records": """CREATE TABLE IF NOT EXISTS bucket_entity_records (
    key TEXT NOT NULL,
    record INTEGER NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (key, record)
);""",
}
# an outbox entry names the incident change (its fingerprint); the incident is read from `incidents`,
# written in the same transaction, rather than written twice (a long incident's JSON is 30-40 KB)
OUTBOX = """CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    incident TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    UNIQUE (incident, fingerprint)
);"""
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    resource TEXT,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (time);
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    received TEXT NOT NULL,
    reason TEXT NOT NULL,
    doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS raw_messages (
    digest TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    received TEXT  -- when first stored: retention
);
CREATE TABLE IF NOT EXISTS buckets (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    watermark INTEGER NOT NULL,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS buckets_by_watermark ON buckets (watermark);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_by_bucket ON incidents (bucket, last_seen);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS protected_aliases (
    id TEXT PRIMARY KEY,
    learned TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS principals (
    key TEXT PRIMARY KEY,
    doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS response_steps (
    key TEXT PRIMARY KEY,
    incident TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    revision INTEGER NOT NULL,
    started TEXT,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS response_steps_by_incident ON response_steps (incident);
CREATE INDEX IF NOT EXISTS response_steps_started ON response_steps (action, started);
CREATE TABLE IF NOT EXISTS tickets (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    incident TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    severity TEXT NOT NULL,
    opened TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS enrichment (
    incident TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (incident, kind, name)
);
CREATE TABLE IF NOT EXISTS triage (
    incident TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS inventory (
    kind TEXT NOT NULL,  -- asset | finding | change | caller
    key TEXT NOT NULL,
    part TEXT NOT NULL,  -- an asset's id, a change's time, a caller's account: what it is read by
    doc BLOB NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS inventory_by_part ON inventory (kind, part);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    doc BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_u BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_d BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
""" + "\n".join([*PARTS.values(), OUTBOX])


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._checkpoints: checkpoints.Checkpointer | None = None  # started by the first write
        try:
            self._db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            wal = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"  # not in memory
            self._background = wal and checkpoints.wanted()
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB: bucket state is rewritten every batch
            # the WAL is copied into the database by a thread of its own (`checkpoints.py`); the commit
            # that fills it past ~40 MiB copies it itself, if that thread falls behind (or on one processor)
            self._db.execute("PRAGMA wal_autocheckpoint=10000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            old = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone()
            if old and version < SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.path} was written by an older Aegis (schema {version}, now {SCHEMA_VERSION}): "
                    "replay your inputs into a new database (`aegis replay --db NEW ...`)"
                )
            self._db.executescript(SCHEMA)
            # bucket versions come from one counter, so that a bucket created again never repeats one
            self._db.execute("INSERT OR IGNORE INTO counters SELECT 'bucket_version', COALESCE(MAX(version), 0) "
                             "FROM buckets")  # fmt: skip
            for table, ddl in {**PARTS, "outbox": OUTBOX}.items():
                if _before(self._db, table):  # a layout from before: the table made again, its rows kept
                    with self._write() as cur:  # once, under the write lock: another instance may have done it
                        if _before(cur, table):
                            cur.execute(f"ALTER TABLE {table} RENAME TO {table}_before")
                            cur.execute(ddl)
                            columns = ", ".join(_columns(cur, table))
                            cur.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_before")  # noqa: S608
                            cur.execute(f"DROP TABLE {table}_before")
            if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'bucket_entities'").fetchone():
                # a bucket's entities were one record: kept as record -1, which the correlator reads and
                # writes again in records of their own at the bucket's next change
                with self._write() as cur:  # under the write lock, once: another instance may have done it
                    if cur.execute("SELECT 1 FROM sqlite_master WHERE name = 'bucket_entities'").fetchone():
                        cur.execute("INSERT OR IGNORE INTO bucket_entity_records "
                                    "SELECT key, -1, doc FROM bucket_entities")  # fmt: skip
                        cur.execute("DROP TABLE bucket_entities")
            if "received" not in _columns(self._db, "raw_messages"):  # from before retention: its bodies age from now
                self._db.execute("ALTER TABLE raw_messages ADD COLUMN received TEXT")
                self._db.execute("UPDATE raw_messages SET received = ?", (datetime.now(UTC).isoformat(),))
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction under the instance lock: BEGIN IMMEDIATE takes the database's write
        lock at once (what is read inside stays true until the commit); any error rolls it back."""
        with self._lock, _translate(self.path):
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
                if self._background:
                    self._copy()
            except BaseException:
                if self._db.in_transaction:  # SQLite has already rolled back after some errors (a full disk)
                    with suppress(sqlite3.Error):  # the cause, not a failed rollback, is what to report
                        cur.execute("ROLLBACK")
                raise

    def _copy(self) -> None:
        """Wake the thread that copies the WAL into the database (started by the first commit; it
        ends with the store, closed or collected)."""
        if self._checkpoints is None:
            self._checkpoints = checkpoints.Checkpointer(self.path)
            self._stop_checkpoints = weakref.finalize(self, self._checkpoints.close)
        self._checkpoints.committed()

    def save(
        self,
        raws: Mapping[str, bytes],
        events: Sequence[Event],
        dead_letters: Sequence[DeadLetter],
        *,
        received: datetime | None = None,
    ) -> SaveResult:
        event_rows = [_event_row(e) for e in events]
        dl_rows = [(d.id, d.received.isoformat(), d.reason, orjson.dumps(d.to_dict())) for d in dead_letters]
        with self._write() as cur:
            now = (received or datetime.now(UTC)).astimezone(UTC).isoformat()
            cur.executemany(
                "INSERT OR IGNORE INTO raw_messages VALUES (?, ?, ?)", [(d, b, now) for d, b in raws.items()]
            )
            cur.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)", event_rows)
            new_events = cur.rowcount if event_rows else 0
            cur.executemany("INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?)", dl_rows)
            new_dls = cur.rowcount if dl_rows else 0
        return SaveResult(new_events, new_dls)

    def events(
        self, *, limit: int | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> list[Event]:
        low = since.astimezone(UTC).isoformat() if since else ""
        high = until.astimezone(UTC).isoformat() if until else "~"
        with self._lock, _translate(self.path):
            rows = self._db.execute(
                "SELECT doc FROM events WHERE time >= ? AND time <= ? ORDER BY time, id LIMIT ?",
                (low, high, limit or -1),
            ).fetchall()
        return [Event.from_json(r[0]) for r in rows]

    def dead_letters(self, *, limit: int | None = None) -> list[DeadLetter]:
        with self._lock, _translate(self.path):
            rows = self._db.execute(
                "SELECT doc FROM dead_letters ORDER BY received, rowid LIMIT ?", (limit or -1,)
            ).fetchall()
        return [DeadLetter.from_dict(orjson.loads(r[0])) for r in rows]

    def raw(self, digest: str) -> bytes | None:
        with self._lock, _translate(self.path):
            row = self._db.execute("SELECT body FROM raw_messages WHERE digest = ?", (digest,)).fetchone()
        return bytes(row[0]) if row else None

    def purge(self, before: datetime) -> int:
        at = before.astimezone(UTC).isoformat()
        with self._write() as cur:
            gone = cur.execute("DELETE FROM events WHERE time < ?", (at,)).rowcount
            gone += cur.execute("DELETE FROM dead_letters WHERE received < ?", (at,)).rowcount
            gone += cur.execute("DELETE FROM raw_messages WHERE received < ?", (at,)).rowcount
            gone += cur.execute("DELETE FROM inventory WHERE kind = 'change' AND part < ?", (at,)).rowcount
            for kind, field in (("caller", "last_seen"), ("finding", "closed")):  # a closed finding ages out
                gone += cur.execute(f"DELETE FROM inventory WHERE kind = ? AND json_extract(doc, '$.{field}') < ?",  # noqa: S608
                                    (kind, at.replace("+00:00", "Z"))).rowcount  # fmt: skip
        return gone

    def load_buckets(self, keys: Sequence[str]) -> dict[str, Bucket]:
        rows = self._select_in("SELECT key, version, doc FROM buckets WHERE key IN ({})", keys)
        chunks: dict[str, dict[int, bytes]] = {}
        for key, chunk, doc in self._select_in("SELECT key, chunk, doc FROM bucket_chunks WHERE key IN ({})", keys):
            chunks.setdefault(key, {})[chunk] = doc
        entities: dict[str, dict[int, bytes]] = {}
        for key, n, doc in self._select_in("SELECT key, record, doc FROM bucket_entity_records WHERE key IN ({})",
                                           keys):  # fmt: skip
            entities.setdefault(key, {})[n] = doc
        return {key: Bucket(key, version, orjson.loads(doc), chunks.get(key, {}), entities.get(key, {}))
                for key, version, doc in rows}  # fmt: skip

    def commit_buckets(self, writes: Sequence[BucketWrite]) -> Committed:
        with self._write() as cur:  # holds the write lock: the versions read below stay true
            stored = dict(_rows_in(cur, "SELECT key, version FROM buckets WHERE key IN ({})", [w.key for w in writes]))
            ok = [w for w in writes if stored.get(w.key) == w.expected]
            if not ok:
                return Committed({}, {w.key for w in writes})
            last = cur.execute("UPDATE counters SET value = value + ? WHERE name = 'bucket_version' RETURNING value",
                               (len(ok),)).fetchone()[0]  # fmt: skip
            versions: dict[str, Version] = {w.key: last - len(ok) + 1 + n for n, w in enumerate(ok)}
            cur.executemany(
                "INSERT INTO buckets VALUES (?, ?, ?, ?)",
                [(w.key, versions[w.key], w.watermark, w.doc) for w in ok if w.expected is None],
            )
            cur.executemany(
                "UPDATE buckets SET version = ?, watermark = ?, doc = ? WHERE key = ?",
                [(versions[w.key], w.watermark, w.doc, w.key) for w in ok if w.expected is not None],
            )
            cur.executemany(
                "INSERT INTO bucket_chunks VALUES (?, ?, ?) ON CONFLICT (key, chunk) DO UPDATE SET doc = excluded.doc",
                [(w.key, n, doc) for w in ok for n, doc in w.chunks.items()],
            )
            cur.executemany(
                "DELETE FROM bucket_chunks WHERE key = ? AND chunk = ?",
                [(w.key, n) for w in ok for n in w.drop_chunks],
            )
            cur.executemany("INSERT INTO bucket_entity_records VALUES (?, ?, ?) "
                            "ON CONFLICT (key, record) DO UPDATE SET doc = excluded.doc",
                            [(w.key, n, doc) for w in ok for n, doc in w.entities.items()])  # fmt: skip
            cur.executemany("DELETE FROM bucket_entity_records WHERE key = ? AND record = ?",
                            [(w.key, n) for w in ok for n in w.drop_entities])  # fmt: skip
            gone = [(i,) for w in ok for i in w.delete]
            cur.executemany("DELETE FROM incidents WHERE id = ?", gone)
            cur.executemany("DELETE FROM outbox WHERE incident = ?", gone)  # no longer an incident to respond to
            docs = [(i, i.to_json()) for w in ok for i in w.upsert]
            cur.executemany(
                "INSERT OR REPLACE INTO incidents VALUES (?, ?, ?, ?)",
                [(i.id, i.bucket, i.last_seen.isoformat(), doc) for i, doc in docs],
            )
            cur.executemany(
                "INSERT OR IGNORE INTO outbox (incident, fingerprint) VALUES (?, ?)",
                [(i.id, fingerprint(doc)) for i, doc in docs],
            )
            evidence = {e.id: e for w in ok for e in w.evidence}  # an event held by incidents of several buckets: once
            # a copy stored before stays unless this one says more (one alert in two shapes: the richest)
            for (doc,) in _rows_in(cur, "SELECT doc FROM events WHERE id IN ({})", list(evidence)):
                kept = Event.from_json(doc)
                if richer(kept, evidence[kept.id]) is kept:
                    del evidence[kept.id]
            cur.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?)",
                            [_event_row(e) for e in evidence.values()])  # fmt: skip
        return Committed(versions, {w.key for w in writes} - versions.keys())

    def outbox(self) -> list[Pending]:
        with self._lock, _translate(self.path):
            rows = self._db.execute("SELECT o.fingerprint, i.doc FROM outbox o JOIN incidents i ON i.id = o.incident "
                                    "ORDER BY o.seq").fetchall()  # fmt: skip
        return [Pending(Incident.from_json(doc), fp) for fp, doc in rows]

    def clear_outbox(self, done: Sequence[Pending]) -> None:
        if not done:
            return
        with self._write() as cur:
            cur.executemany("DELETE FROM outbox WHERE incident = ? AND fingerprint = ?",
                            [(p.incident.id, p.fingerprint) for p in done])  # fmt: skip

    def expire_buckets(self, before: int) -> int:
        with self._write() as cur:
            for part in ("bucket_chunks", "bucket_entity_records"):
                cur.execute(f"DELETE FROM {part} WHERE key IN (SELECT key FROM buckets WHERE watermark < ?)",  # noqa: S608
                            (before,))  # fmt: skip
            gone = cur.execute("DELETE FROM buckets WHERE watermark < ?", (before,)).rowcount
        return gone

    def _select_in(self, query: str, keys: Sequence[str]) -> list[tuple[Any, ...]]:
        """Rows of `query` whose `IN ({})` takes `keys`, bound as parameters in chunks."""
        with self._lock, _translate(self.path):
            return _rows_in(self._db.cursor(), query, keys)

    def evidence(self, incident: Incident) -> list[Event]:
        rows = self._select_in("SELECT doc FROM events WHERE id IN ({})", list(incident.event_ids))
        return sorted((Event.from_json(r[0]) for r in rows), key=lambda e: (e.time, e.id))

    def incidents(self) -> list[Incident]:
        with self._lock, _translate(self.path):
            rows = self._db.execute("SELECT doc FROM incidents ORDER BY last_seen, id").fetchall()
        return [Incident.from_json(r[0]) for r in rows]

    # --- response: planned steps and the audit log (the `Store` port) ---

    def add_steps(self, steps: Sequence[StepRecord], audit: Sequence[AuditEntry]) -> int:
        with self._write() as cur:
            known = {k for (k,) in _rows_in(cur, "SELECT key FROM response_steps WHERE key IN ({})",
                                            [s.key for s in steps])}  # fmt: skip
            new = [s for s in steps if s.key not in known]
            cur.executemany("INSERT INTO response_steps VALUES (?, ?, ?, ?, ?, ?, ?)", [_step_row(s) for s in new])
            keys = {s.key for s in new}
            cur.executemany("INSERT INTO audit (doc) VALUES (?)", [(orjson.dumps(a),) for a in audit if a.step in keys])
        return len(new)

    def steps(
        self, *, incident: str | None = None, action: str | None = None, status: Sequence[str] | None = None
    ) -> list[StepRecord]:
        where, args = [], []
        for column, value in (("incident", incident), ("action", action)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if status is not None:
            where.append(f"status IN ({','.join('?' * len(status))})")
            args += status
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock, _translate(self.path):
            query = f"SELECT doc FROM response_steps {clause} ORDER BY rowid"  # noqa: S608  (columns fixed, values bound)
            rows = self._db.execute(query, args).fetchall()
        return [StepRecord.from_json(doc) for (doc,) in rows]

    def step(self, key: str) -> StepRecord | None:
        with self._lock, _translate(self.path):
            row = self._db.execute("SELECT doc FROM response_steps WHERE key = ?", (key,)).fetchone()
        return StepRecord.from_json(row[0]) if row else None

    def replace_step(self, step: StepRecord, *, audit: Sequence[AuditEntry]) -> bool:
        key, _, _, status, revision, started, doc = _step_row(step)
        with self._write() as cur:
            cur.execute(
                "UPDATE response_steps SET status = ?, revision = ?, started = ?, doc = ? "
                "WHERE key = ? AND revision = ?",
                (status, revision, started, doc, key, revision - 1),
            )
            won = cur.rowcount == 1
            if won:
                cur.executemany("INSERT INTO audit (doc) VALUES (?)", [(orjson.dumps(a),) for a in audit])
        return won

    def started_since(self, action: str, since: datetime) -> int:
        with self._lock, _translate(self.path):
            (n,) = self._db.execute(
                "SELECT count(*) FROM response_steps WHERE action = ? AND started >= ?", (action, sortable(since))
            ).fetchone()
        return int(n)

    def save_ticket(self, incident: str, title: str, severity: str, now: datetime) -> tuple[str, bool]:
        with self._write() as cur:
            row = cur.execute("SELECT number FROM tickets WHERE incident = ?", (incident,)).fetchone()
            if row:
                cur.execute("UPDATE tickets SET title = ?, severity = ?, updated = ? WHERE number = ?",
                            (title, severity, sortable(now), row[0]))  # fmt: skip
                number = row[0]
            else:
                values = (incident, title, severity, sortable(now), sortable(now))
                cur.execute("INSERT INTO tickets (incident, title, severity, opened, updated) "
                            "VALUES (?, ?, ?, ?, ?)", values)  # fmt: skip
                number = cur.lastrowid
        return f"AEGIS-{number}", row is None

    def audit_log(self) -> list[AuditEntry]:
        with self._lock, _translate(self.path):
            rows = self._db.execute("SELECT doc FROM audit ORDER BY seq").fetchall()
        return [AuditEntry.from_json(doc) for (doc,) in rows]

    def protected_aliases(self) -> set[str]:
        with self._lock, _translate(self.path):
            return {row[0] for row in self._db.execute("SELECT id FROM protected_aliases")}

    def add_protected_aliases(self, identifiers: Iterable[str], now: datetime) -> None:
        with self._write() as cur:
            cur.executemany("INSERT OR IGNORE INTO protected_aliases VALUES (?, ?)",
                            [(i, now.isoformat()) for i in identifiers])  # fmt: skip

    # --- triage ---

    def triage(self, incident: str) -> Triage | None:
        with self._lock, _translate(self.path):
            row = self._db.execute("SELECT doc FROM triage WHERE incident = ?", (incident,)).fetchone()
        return Triage.from_json(row[0]) if row else None

    def triages(self) -> dict[str, Triage]:
        with self._lock, _translate(self.path):
            rows = self._db.execute("SELECT doc FROM triage").fetchall()
        return {t.incident: t for t in (Triage.from_json(doc) for (doc,) in rows)}

    def save_triage(self, triage: Triage, *, audit: Sequence[AuditEntry]) -> bool:
        with self._write() as cur:
            if triage.revision == 1:
                cur.execute("INSERT OR IGNORE INTO triage VALUES (?, ?, ?)",
                            (triage.incident, triage.revision, triage.to_json()))  # fmt: skip
            else:
                cur.execute("UPDATE triage SET revision = ?, doc = ? WHERE incident = ? AND revision = ?",
                            (triage.revision, triage.to_json(), triage.incident, triage.revision - 1))  # fmt: skip
            won = cur.rowcount == 1
            if won:
                cur.executemany("INSERT INTO audit (doc) VALUES (?)", [(orjson.dumps(a),) for a in audit])
        return won

    # --- the directory ---

    def principals(self, keys: Sequence[str]) -> dict[str, Principal]:
        found: dict[str, Principal] = {}
        with self._lock, _translate(self.path):
            for i in range(0, len(keys), 500):
                part = list(keys[i : i + 500])
                marks = ",".join("?" * len(part))
                query = f"SELECT key, doc FROM principals WHERE key IN ({marks})"  # noqa: S608  (values bound)
                rows = self._db.execute(query, part).fetchall()
                found.update((k, Principal.from_json(doc)) for k, doc in rows)
        return found

    def save_principals(self, entries: Mapping[str, Principal]) -> None:
        with self._write() as cur:
            cur.executemany("INSERT OR REPLACE INTO principals VALUES (?, ?)",
                            [(k, p.to_json()) for k, p in entries.items()])  # fmt: skip

    # --- the AI estate ---

    def assets(self) -> list[Asset]:
        return [Asset.from_json(d) for d in self._docs("SELECT doc FROM inventory WHERE kind = 'asset' ORDER BY key")]

    def save_inventory(
        self, assets: Sequence[Asset], findings: Sequence[Finding], changes: Sequence[AssetChange],
        *, gone: Sequence[str] = (),
    ) -> None:  # fmt: skip
        rows = [("asset", a.id, a.id, a.to_json()) for a in assets]
        rows += [("finding", f.id, f.asset, f.to_json()) for f in findings]
        rows += [("change", c.key, c.time.astimezone(UTC).isoformat(), c.to_json()) for c in changes]
        with self._write() as cur:
            cur.executemany("DELETE FROM inventory WHERE kind = 'asset' AND key = ?", [(g,) for g in gone])
            cur.executemany("INSERT OR REPLACE INTO inventory VALUES (?, ?, ?, ?)", rows)

    def findings(self) -> list[Finding]:
        query = "SELECT doc FROM inventory WHERE kind = 'finding' ORDER BY part, key"
        return [Finding.from_json(d) for d in self._docs(query)]

    def asset_changes(self, *, limit: int | None = None) -> list[AssetChange]:
        query = "SELECT doc FROM inventory WHERE kind = 'change' ORDER BY part DESC, key DESC LIMIT ?"
        return [AssetChange.from_json(d) for d in self._docs(query, (-1 if limit is None else limit,))]

    def key_callers(self, account: str) -> list[KeyCaller]:
        query = "SELECT doc FROM inventory WHERE kind = 'caller' AND part = ?"
        found = [KeyCaller.from_json(d) for d in self._docs(query, (account.lower(),))]
        return sorted(found, key=lambda c: c.last_seen, reverse=True)

    def save_key_callers(self, callers: Sequence[KeyCaller]) -> None:
        with self._write() as cur:
            cur.executemany("INSERT OR REPLACE INTO inventory VALUES ('caller', ?, ?, ?)",
                            [(c.key, c.account.lower(), c.to_json()) for c in callers])  # fmt: skip

    def _docs(self, query: str, params: Sequence[Any] = ()) -> list[bytes]:
        with self._lock, _translate(self.path):
            return [row[0] for row in self._db.execute(query, params).fetchall()]

    # --- enrichment ---

    def save_enrichment(self, incident: str, items: Sequence[Enrichment], *, kind: str = "enrich") -> None:
        with self._write() as cur:
            cur.executemany("INSERT OR REPLACE INTO enrichment VALUES (?, ?, ?, ?)",
                            [(incident, kind, e.name, orjson.dumps(e.summary())) for e in items])  # fmt: skip

    def enrichment(self, incident: str, *, kind: str = "enrich") -> list[Enrichment]:
        with self._lock, _translate(self.path):
            rows = self._db.execute(
                "SELECT doc FROM enrichment WHERE incident = ? AND kind = ? ORDER BY name", (incident, kind)
            ).fetchall()
        return [Enrichment.from_json(doc) for (doc,) in rows]

    def close(self) -> None:
        if self._checkpoints is not None:
            self._stop_checkpoints()
        self._db.close()


def _step_row(s: StepRecord) -> tuple[Any, ...]:
    started = sortable(s.started) if s.started else None
    return (s.key, s.incident, s.action, s.status, s.revision, started, orjson.dumps(s))


def _columns(db: sqlite3.Connection | sqlite3.Cursor, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _before(db: sqlite3.Connection | sqlite3.Cursor, table: str) -> bool:
    """Whether `table` is laid out as before: chunks and records WITHOUT ROWID, an outbox that held
    each incident's JSON."""
    if table == "outbox":
        return "doc" in _columns(db, table)
    row = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    return row is not None and "WITHOUT ROWID" in row[0].upper()


def _rows_in(cur: sqlite3.Cursor, query: str, keys: Sequence[str]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for i in range(0, len(keys), 500):
        chunk = list(keys[i : i + 500])
        rows += cur.execute(query.format(",".join("?" * len(chunk))), chunk).fetchall()
    return rows


# Faults that a retry of the batch may outlive: another writer holds the lock, the disk is full or
# failing, the file was made read-only or cannot be opened (a volume remounted). By SQLite's result
# code (`sqlite_errorname`, extended codes included), not by the wording of its message.
_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")
_CAUSES = {
    "SQLITE_BUSY": "busy (another writer holds the lock)", "SQLITE_LOCKED": "locked",
    "SQLITE_FULL": "full (no space left on the disk)", "SQLITE_IOERR": "failing (disk I/O error)",
    "SQLITE_READONLY": "read-only", "SQLITE_CANTOPEN": "not openable",
}  # fmt: skip


def _event_row(e: Event) -> tuple[Any, ...]:
    return e.id, e.time.isoformat(), e.source.value, e.kind, e.resource.id if e.resource else None, e.to_json()


@contextmanager
def _translate(path: Path) -> Iterator[None]:
    """sqlite3 errors → the store's exceptions, naming the real cause: the faults in `_TRANSIENT`
    are `StoreUnavailable` (the trigger retries the batch), the rest `StoreError`."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        name = getattr(exc, "sqlite_errorname", "") or ""
        base = next((t for t in _TRANSIENT if name.startswith(t)), None)
        if base is not None:
            raise StoreUnavailable(f"database {path} is {_CAUSES[base]}: {exc} ({name})") from exc
        raise StoreError(f"database {path}: {exc}" + (f" ({name})" if name else "")) from exc
