"""State stores. `open_store(settings)` builds the one the settings name."""

from __future__ import annotations

from aegis.settings import Settings
from aegis.store.base import SaveResult, Store
from aegis.store.sqlite import SqliteStore

__all__ = ["SaveResult", "SqliteStore", "Store", "open_store"]


def open_store(settings: Settings) -> Store:
    if settings.store == "sqlite":
        return SqliteStore(settings.db)
    from aegis.store.tables import TableStore  # noqa: PLC0415 - the storage SDKs load only when used

    if settings.storage_connection_string is not None:
        return TableStore.from_connection_string(settings.storage_connection_string.get_secret_value())
    from azure.identity import DefaultAzureCredential  # noqa: PLC0415

    assert settings.table_endpoint
    assert settings.blob_endpoint
    credential = DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)
    return TableStore.from_endpoints(settings.table_endpoint, settings.blob_endpoint, credential)
