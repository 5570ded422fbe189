"""One registry abstraction for every plugin kind: normalizers, rule kinds, actions, enrichers,
deliverers, corroboration sources.

An entry is the plugin itself, behaviour attached (a normalizer with its `accepts` test and its
function; an action with its parameters model, metadata, permission and its `run`). Names are
unique (a second registration fails at import), and asking for a name that is not there says
which names there are. A registry is a read-only mapping, so `name in R`, `R[name]`, `sorted(R)`
and `R.items()` work as on a dict; only `add` and `replace` write
(plugins, at import), `remove` and `substituted` (tests
that register or break a plugin of their own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

from aegis.errors import AegisError

T = TypeVar("T")


class UnknownName(AegisError, KeyError):
    """A name no plugin of that kind is registered under (a `KeyError` too, for mapping use)."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0])


class Registry(Mapping[str, T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind  # what an entry is, in messages: "action", "rule kind", ...
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator: the decorated plugin (a function) is registered under `name`."""
        return lambda entry: self.add(name, entry)

    def replace(self, name: str, entry: T) -> T:
        """Put a new version of a registered entry (a service module attaching an action's run)."""
        self[name]
        self._entries[name] = entry
        return entry

    @contextmanager
    def substituted(self, name: str, entry: T) -> Iterator[T]:
        """`entry` in place of the registered one for the length of a `with` (a test's broken plugin)."""
        original = self[name]
        self._entries[name] = entry
        try:
            yield entry
        finally:
            self._entries[name] = original

    def remove(self, name: str) -> T:
        """Take an entry out (a test's own plugin, when the test is done)."""
        entry = self[name]
        del self._entries[name]
        return entry

    def require(self, names: Iterable[str]) -> list[str]:
        """`names`, if every one is registered; otherwise `UnknownName` naming the missing ones."""
        wanted = list(names)
        unknown = [n for n in wanted if n not in self._entries]
        if unknown:
            raise UnknownName(f"no {self.kind} {', '.join(unknown)} (there are {', '.join(sorted(self._entries))})")
        return wanted

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f"no {self.kind} {name!r} (there are {', '.join(sorted(self._entries))})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
