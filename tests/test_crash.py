"""Crashes and faults at every step boundary, on both stores: the response ends with the same steps,
each recorded once.

A *kill* is a `Crash` (a BaseException nothing in Aegis catches) raised where the process would
die; what follows is a new process: a new store client on the same database or tables, a new
pipeline with empty caches, and Event Hubs redelivering the batch it had not checkpointed. A
*fault* is `StoreUnavailable` raised by the store, as a throttled or unreachable service does: the
trigger's retry policy hands the same batch to the same process again. Then the response timer
runs once (`executor_run`'s order: drain the outbox, then execute).
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aegis import runtime, settings
from aegis.errors import StoreUnavailable
from aegis.pipeline import Message
from aegis.respond import connect, playbooks
from aegis.respond.execute import Executor
from aegis.respond.record import Responder
from aegis.store import SqliteStore, Store
from tests.conftest import SAMPLES, azurite_tables


class Crash(BaseException):
    """The process dies here."""


class Faulty:
    """A store whose `method` fails once: before the real call (nothing of it happened) or after it
    (it happened, and the process never learnt so)."""

    def __init__(self, store: Store, method: str, *, after: bool, error: BaseException, skip: int = 0) -> None:
        self._store, self._method, self._after, self._error, self._skip = store, method, after, error, skip
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._store, name)
        if name != self._method:
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            armed = not self.fired and self._skip == 0
            self._skip = max(0, self._skip - 1)
            if armed and not self._after:
                self.fired = True
                raise self._error
            out = real(*args, **kwargs)
            if armed:
                self.fired = True
                raise self._error
            return out

        return call


@pytest.fixture(params=["sqlite", "table"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the same store anew, as a restarted process would."""
    if request.param == "table":
        with azurite_tables() as open_store:
            yield open_store
        return
    opened: list[Store] = []

    def open_sqlite() -> Store:
        opened.append(SqliteStore(tmp_path / "aegis.db"))
        return opened[-1]

    yield open_sqlite
    for store in opened:
        store.close()


@pytest.fixture(scope="module")
def execute_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped playbooks with the plan in execute mode (automatic steps run: the local ticket)."""
    folder = tmp_path_factory.mktemp("crash") / "playbooks"
    shutil.copytree(playbooks.PLAYBOOKS_DIR, folder)
    plan = folder / playbooks.PLAN_FILE
    plan.write_text(plan.read_text().replace("mode: dry_run", "mode: execute"))
    return folder


def batches() -> list[list[Message]]:
    bodies = [p.read_bytes() for p in sorted(SAMPLES.rglob("*.json"))]
    messages = [Message(b, hub="replay", partition="0", sequence_number=n) for n, b in enumerate(bodies)]
    return [messages[i : i + 3] for i in range(0, len(messages), 3)]


def ingest(open_store: Callable[[], Store], folder: Path, wrap: Callable[[Store], Store] = lambda s: s) -> Store:
    """Every batch through the Event Hubs path, surviving kills and faults as the host would."""
    cfg = settings.load()
    store = wrap(open_store())
    pipeline = runtime.build_pipeline(cfg, store, respond=True, folder=folder)
    for batch in batches():
        for _ in range(3):
            try:
                pipeline.process(batch)
                break
            except Crash:  # a new process; the batch was not checkpointed: redelivered
                store = open_store()
                pipeline = runtime.build_pipeline(cfg, store, respond=True, folder=folder)
            except StoreUnavailable:  # the trigger's retry: the same batch, the same process
                pass
        else:
            pytest.fail("the batch never went through")
    return store


def timer(store: Store, folder: Path, *, clock: Callable[[], datetime] | None = None) -> None:
    """The response timer, as `runtime.executor_run` runs it."""
    cfg = settings.load()
    plan = runtime.load_response(cfg, folder)
    Responder(plan, store).drain()
    executor = Executor(plan, store, connect.from_settings(cfg), clock=clock or (lambda: datetime.now(UTC)))
    executor.run()


def steps_of(store: Store) -> dict[str, str]:
    return {s.key: s.status for s in store.steps()}


def recorded_once(store: Store) -> None:
    planned = Counter(a.step for a in store.audit_log() if a.event in ("planned", "refused"))
    assert planned, "nothing was planned"
    assert max(planned.values()) == 1, [k for k, n in planned.items() if n > 1]


@pytest.fixture
def expected(opener: Callable[[], Store], execute_plan: Path, tmp_path: Path) -> dict[str, str]:
    """The steps of a run nothing disturbed, on a store of the same kind (its own database or tables)."""
    clean = SqliteStore(tmp_path / "clean.db")
    try:
        ingest(lambda: clean, execute_plan)
        timer(clean, execute_plan)
        got = steps_of(clean)
    finally:
        clean.close()
    assert "succeeded" in got.values()
    assert "awaiting_approval" in got.values()
    return got


BOUNDARIES = [
    # (the store call, fail after it happened?, the error): where a process can die or a call fail
    pytest.param(("save", False, Crash()), id="kill-after-decode"),
    pytest.param(("commit_buckets", True, Crash()), id="kill-after-correlation-commit"),
    pytest.param(("commit_buckets", True, StoreUnavailable("lost answer")), id="fault-after-correlation-commit"),
    pytest.param(("add_steps", False, StoreUnavailable("throttled")), id="fault-during-planning"),
    pytest.param(("add_steps", True, Crash()), id="kill-during-planning"),
]


@pytest.mark.parametrize("fault", BOUNDARIES)
def test_a_kill_or_fault_on_the_ingest_path_leaves_the_same_steps_once(
    opener: Callable[[], Store], execute_plan: Path, expected: dict[str, str], fault: tuple[str, bool, BaseException]
) -> None:
    method, after, error = fault
    faulty: list[Faulty] = []

    def wrap(store: Store) -> Store:
        faulty.append(Faulty(store, method, after=after, error=error, skip=1))  # not the first batch's: mid-stream
        return faulty[-1]

    store = ingest(opener, execute_plan, wrap)
    assert faulty[0].fired
    timer(store, execute_plan)
    assert steps_of(store) == expected
    recorded_once(store)
    assert store.outbox() == []
    # every event an incident shows says where its bytes are (the message and the Event Hubs position)
    assert all(t.evidence and "@replay/0#" in t.evidence for i in store.incidents() for t in i.timeline)


def test_the_ingest_path_leaves_the_outbox_to_the_timer_and_a_kill_before_its_clear_loses_nothing(
    opener: Callable[[], Store], execute_plan: Path, expected: dict[str, str]
) -> None:
    """On the ingest path a batch plans its incidents' response and leaves the outbox entries (no
    third round trip to the partitions it touched); the timer plans them again (a no-op: steps are
    keyed) and clears them. A timer killed before the clear leaves them for the next run."""
    store = ingest(opener, execute_plan)
    assert store.outbox()  # planned, not yet cleared
    planned = steps_of(store)
    dying = Faulty(store, "clear_outbox", after=False, error=Crash())
    with pytest.raises(Crash):
        timer(dying, execute_plan)
    assert store.outbox()
    timer(opener(), execute_plan)
    assert steps_of(store) == expected
    assert planned.keys() == expected.keys()  # the ingest path had planned every step already
    recorded_once(store)
    assert store.outbox() == []


def test_a_kill_during_execution_runs_nothing_twice_and_says_what_is_unknown(
    opener: Callable[[], Store], execute_plan: Path, expected: dict[str, str]
) -> None:
    store = ingest(opener, execute_plan)
    dying = Faulty(store, "save_ticket", after=True, error=Crash())  # the ticket is opened; then the worker dies
    with pytest.raises(Crash):
        timer(dying, execute_plan)
    restarted = opener()
    timer(restarted, execute_plan)  # within the lease: the claim stands, nothing is run again
    claimed = [s for s in restarted.steps() if s.started is not None and s.status == "approved"]
    assert len(claimed) == 1
    later = datetime.now(UTC) + timedelta(hours=1)
    timer(restarted, execute_plan, clock=lambda: later)  # past the lease: recorded as failed, outcome unknown
    after = {s.key: s for s in restarted.steps()}
    died = after[claimed[0].key]
    assert died.status == "failed"
    assert (died.reason or "").startswith("unknown:")
    assert died.attempts == 1  # never called twice
    assert set(after) == set(expected)  # the same steps, each recorded once
    recorded_once(restarted)
    started = Counter(a.step for a in restarted.audit_log() if a.event == "started")
    assert started[died.key] == 1
