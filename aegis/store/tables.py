"""The cloud store: Azure Table Storage for events and dead letters, Blob Storage for raw bodies.

Events are partitioned by event day (`PartitionKey` = `YYYYMMDD`) and keyed by event id, so a
replayed event is a 409 on insert, counted as a duplicate. Inserts go in entity-group transactions
of up to 100 per partition; a transaction that meets an existing event is retried entity by entity.
Raw message bodies (up to the 1 MB Event Hubs limit, more than a table entity holds) are blobs
named by their SHA-256. Tested against Azurite.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError
from azure.storage.blob import BlobServiceClient, ContainerClient

from aegis.errors import StoreError, StoreUnavailable
from aegis.events import DeadLetter, Event
from aegis.store.base import SaveResult

PREFIX = "aegis"  # tables {prefix}events and {prefix}deadletters, blob container {prefix}-raw
MAX_INLINE_DOC = 30_000  # characters; a table string property holds 32K UTF-16 code units
_TRANSACTION_SIZE = 100


class TableStore:
    def __init__(self, tables: TableServiceClient, blobs: BlobServiceClient, *, prefix: str = PREFIX) -> None:
        with _translate():
            self._events = tables.create_table_if_not_exists(f"{prefix}events")
            self._dead_letters = tables.create_table_if_not_exists(f"{prefix}deadletters")
            self._raw = blobs.get_container_client(f"{prefix}-raw")
            with suppress(ResourceExistsError):
                self._raw.create_container()

    @classmethod
    def from_connection_string(cls, conn: str, *, prefix: str = PREFIX) -> TableStore:
        tables = TableServiceClient.from_connection_string(conn)
        return cls(tables, BlobServiceClient.from_connection_string(conn), prefix=prefix)

    @classmethod
    def from_endpoints(cls, table_endpoint: str, blob_endpoint: str, credential: TokenCredential) -> TableStore:
        return cls(
            TableServiceClient(table_endpoint, credential=credential), BlobServiceClient(blob_endpoint, credential)
        )

    def save(
        self, raws: Mapping[str, bytes], events: Sequence[Event], dead_letters: Sequence[DeadLetter]
    ) -> SaveResult:
        with _translate():
            for digest, body in raws.items():
                _put_blob(self._raw, f"messages/{digest}", body)
            new_events = self._insert(self._events, [self._event_entity(e) for e in events])
            new_dls = self._insert(self._dead_letters, [_dead_letter_entity(d) for d in dead_letters])
        return SaveResult(new_events, new_dls)

    def events(self, *, limit: int | None = None) -> list[Event]:
        with _translate():
            out = []
            for entity in self._events.list_entities():
                doc = entity.get("doc")
                if doc is None:
                    doc = self._raw.download_blob(f"events/{entity['RowKey']}").readall()
                out.append(Event.from_json(doc))
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

    def raw(self, digest: str) -> bytes | None:
        with _translate():
            try:
                return self._raw.download_blob(f"messages/{digest}").readall()
            except ResourceNotFoundError:
                return None

    def close(self) -> None:
        self._raw.close()
        self._events.close()
        self._dead_letters.close()

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
        if status in (408, 429) or status >= 500:
            raise StoreUnavailable(f"storage answered {status}") from exc
        raise StoreError(f"storage answered {status}: {exc.reason}") from exc
    except AzureError as exc:
        raise StoreError(f"storage error: {type(exc).__name__}") from exc
