"""Shared fixtures: the reference material in ../shared, Azurite, stores, and hypothesis profiles."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from aegis.store import SqliteStore, Store

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"

settings.register_profile("default", max_examples=200, deadline=None)
settings.register_profile(
    "ci", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile("default")  # `--hypothesis-profile=ci` (.ci/run) overrides


def shared_dir() -> Path:
    """`../shared` beside the project (or $AEGIS_SHARED). It is absent on a user's machine: tests
    that need it skip there, and fail in CI where AEGIS_REQUIRE_SHARED=1."""
    path = Path(os.environ.get("AEGIS_SHARED", ROOT.parent / "shared"))
    if not (path / "samples").is_dir():
        reason = f"reference material not found at {path} (the shared/ folder beside the project)"
        if os.environ.get("AEGIS_REQUIRE_SHARED") == "1":
            pytest.fail(reason + " and AEGIS_REQUIRE_SHARED=1")
        pytest.skip(reason)
    return path


@pytest.fixture
def shared() -> Path:
    return shared_dir()


def azurite_connection() -> str:
    conn = os.environ.get("AEGIS_TEST_STORAGE")
    if not conn:
        reason = "Azurite is not running (AEGIS_TEST_STORAGE unset): run the suite with `make test`"
        if os.environ.get("AEGIS_REQUIRE_AZURITE") == "1":
            pytest.fail(reason + " and AEGIS_REQUIRE_AZURITE=1")
        pytest.skip(reason)
    return conn


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "aegis.db")
    yield store
    store.close()


@contextmanager
def azurite_tables() -> Iterator[Callable[[], Store]]:
    """Opens TableStores on Azurite over tables and a container of their own (each call a new
    client on the same ones, as a restarted process would), and drops them afterwards."""
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient

    from aegis.store import tables

    conn = azurite_connection()
    prefix = "t" + uuid.uuid4().hex[:12]
    opened: list[Store] = []

    def open_store() -> Store:
        opened.append(tables.TableStore.from_connection_string(conn, prefix=prefix))
        return opened[-1]

    try:
        yield open_store
    finally:
        for store in opened:
            store.close()
        service = TableServiceClient.from_connection_string(conn)
        for name in ("events", "deadletters", "state", "response"):
            service.delete_table(f"{prefix}{name}")
        BlobServiceClient.from_connection_string(conn).delete_container(f"{prefix}-raw")


@pytest.fixture
def table_store() -> Iterator[Store]:
    """A TableStore on Azurite, with its own tables and container for this test."""
    with azurite_tables() as open_store:
        yield open_store()


@pytest.fixture(scope="session")
def functions() -> dict[str, object]:
    """Binding metadata of the Functions app, read once per run (`get_functions()` cannot be called twice)."""
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


@pytest.fixture(params=["sqlite", "table"])
def store(request: pytest.FixtureRequest) -> Store:
    """Each store test runs against both implementations."""
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    """Tests assert on logs with structlog.testing.capture_logs; keep the rest off the output."""
    from aegis import log

    log.configure(json=True, level="ERROR")
