"""Rule kinds: how a detection turns the state of one group into triggers.

State is a row of *panes* (`panes.py`): the group's matches aggregated per slice of event time
(a thirtieth of the window, at least a second; a second for `single`). A kind looks at the panes
in order and says at which panes it fires, and where the evidence of each firing starts. Panes
are aggregates (counts, sums, distinct values, earliest and latest time per step), so a kind's
answer is a pure function of the set of matches, not of their arrival order, and its cost does
not grow with the number of matches in a pane.

    single            every pane with a match fires
    event_count       at least `threshold` matches within `window`
    value_count       at least `threshold` distinct values of `field` within `window`
    value_sum         the sum of the numeric `field` reaches `threshold` within `window`
    temporal          `min` matches of every step within `window`, in any order
    temporal_ordered  the same, step after step (at pane resolution: a step may share a pane with
                      the next one if its earliest match there is not after the next one's latest)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aegis.correlate.panes import Pane
from aegis.registry import Registry


@dataclass(frozen=True, slots=True)
class Trigger:
    pane: int  # the pane at which the detection fires
    start: int  # the first pane of the evidence window


@dataclass(frozen=True, slots=True)
class KindSpec:
    name: str
    evaluate: Callable[[Sequence[Pane], Any, int, int, float], list[Trigger]]
    needs: frozenset[str]  # detection fields this kind requires
    forbids: frozenset[str]


KINDS: Registry[KindSpec] = Registry("rule kind")
Evaluate = Callable[[Sequence[Pane], Any, int, int, float], list[Trigger]]


def kind(name: str, *, needs: set[str], forbids: set[str]) -> Callable[[Evaluate], Evaluate]:
    """Register a kind. Its function takes the panes (ascending), the detection, the window in
    panes, the first pane at which a trigger may still change (earlier ones are final), and the
    threshold to reach (the detection's, or more where its group's normal asks more: `baseline`)."""

    def register(fn: Evaluate) -> Evaluate:
        KINDS.add(name, KindSpec(name, fn, frozenset(needs), frozenset(forbids)))
        return fn

    return register


@kind("single", needs={"match"}, forbids={"steps", "threshold", "field", "window"})
def _single(panes: Sequence[Pane], d: Any, width: int, since: int, threshold: float) -> list[Trigger]:
    return [Trigger(p.index, p.index) for p in panes if p.index >= since]


class _Window:
    """The panes within `width` of the current one, kept with running aggregates."""

    def __init__(self, panes: Sequence[Pane], width: int) -> None:
        self.panes, self.width, self.lo = panes, width, 0

    def advance(self, i: int, drop: Callable[[Pane], None]) -> None:
        floor = self.panes[i].index - self.width
        while self.panes[self.lo].index <= floor:
            drop(self.panes[self.lo])
            self.lo += 1


def _running(
    panes: Sequence[Pane], width: int, since: int, *, add: Callable[[Pane], None], drop: Callable[[Pane], None],
    fires: Callable[[], bool],
) -> list[Trigger]:  # fmt: skip
    out, window = [], _Window(panes, width)
    for i, p in enumerate(panes):
        add(p)
        window.advance(i, drop)
        if p.index >= since and fires():
            out.append(Trigger(p.index, panes[window.lo].index))
    return out


@kind("event_count", needs={"match", "window", "threshold"}, forbids={"steps", "field"})
def _event_count(panes: Sequence[Pane], d: Any, width: int, since: int, threshold: float) -> list[Trigger]:
    total = [0]

    def add(p: Pane) -> None:
        total[0] += p.events

    def drop(p: Pane) -> None:
        total[0] -= p.events

    return _running(panes, width, since, add=add, drop=drop, fires=lambda: total[0] >= threshold)


@kind("value_count", needs={"match", "window", "threshold", "field"}, forbids={"steps"})
def _value_count(panes: Sequence[Pane], d: Any, width: int, since: int, threshold: float) -> list[Trigger]:
    seen: Counter[Any] = Counter()

    def add(p: Pane) -> None:
        seen.update(p.values)

    def drop(p: Pane) -> None:
        seen.subtract(p.values)
        for v in p.values:
            if seen[v] <= 0:
                del seen[v]

    return _running(panes, width, since, add=add, drop=drop, fires=lambda: len(seen) >= threshold)


@kind("value_sum", needs={"match", "window", "threshold", "field"}, forbids={"steps"})
def _value_sum(panes: Sequence[Pane], d: Any, width: int, since: int, threshold: float) -> list[Trigger]:
    # summed afresh per pane (not a running float), so the result does not depend on the order
    # in which panes came and went
    out, window = [], _Window(panes, width)
    for i, p in enumerate(panes):
        window.advance(i, lambda _: None)
        if p.index >= since and sum(q.total for q in panes[window.lo : i + 1]) >= threshold:
            out.append(Trigger(p.index, panes[window.lo].index))
    return out


@kind("temporal", needs={"steps", "window"}, forbids={"match", "threshold", "field"})
def _temporal(panes: Sequence[Pane], d: Any, width: int, since: int, threshold: float) -> list[Trigger]:
    mins = [s.min for s in d.steps]
    seen = [0] * len(mins)

    def add(p: Pane) -> None:
        for s, n in enumerate(p.counts):
            seen[s] += n

    def drop(p: Pane) -> None:
        for s, n in enumerate(p.counts):
            seen[s] -= n

    def complete() -> bool:
        return all(n >= m for n, m in zip(seen, mins, strict=True))

    return _running(panes, width, since, add=add, drop=drop, fires=complete)


@kind("temporal_ordered", needs={"steps", "window"}, forbids={"match", "threshold", "field"})
def _temporal_ordered(panes: Sequence[Pane], d: Any, width: int, since: int, threshold: float) -> list[Trigger]:
    mins = [s.min for s in d.steps]
    last = len(mins) - 1
    out, window = [], _Window(panes, width)
    for i, p in enumerate(panes):
        window.advance(i, lambda _: None)
        if p.index < since or not p.counts[last]:
            continue
        # walk back from this pane, collecting each step in turn (the last one first); a step's
        # matches count when they are not after the latest match of the step collected before it
        want, need, bound = last, mins[last], p.last[last]
        for q in reversed(panes[window.lo : i + 1]):
            while want >= 0 and q.counts[want] and q.first[want] <= bound:
                need -= q.counts[want]
                if need > 0:
                    break
                bound = min(bound, q.last[want])
                want -= 1
                need = mins[want] if want >= 0 else 0
            if want < 0:
                out.append(Trigger(p.index, panes[window.lo].index))
                break
    return out
