"""One inventory refresh: the estate's rows (from Azure, `azure.Estate`, or a file of the same
shapes) parsed into assets, compared with the last refresh (each change kept with its time), the
blind spots reconciled into findings (opened, kept, or closed because they were fixed), all of it
written to the store. What a refresh could not read of an asset keeps what the last one read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from aegis import assets as estate
from aegis.assets import Asset, AssetChange, Finding, TagNames
from aegis.errors import ConfigurationError, MalformedInput
from aegis.events import Severity
from aegis.store import Store


@dataclass(frozen=True)
class Refreshed:
    assets: list[Asset]
    findings: list[Finding]  # every finding, open and closed
    changes: list[AssetChange]
    gone: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # rows that are not AI assets, parts that could not be read

    @property
    def open(self) -> list[Finding]:
        return [f for f in self.findings if f.open]


@dataclass(frozen=True)
class Options:
    tags: TagNames = field(default_factory=TagNames)
    hubs: Sequence[str] = ("ai-diagnostics",)  # the event hubs a diagnostic setting must send to
    namespaces: Sequence[str] = ()  # Aegis's Event Hubs namespaces (empty: any)
    severity: Severity = Severity.LOW  # of the findings


def refresh(store: Store, rows: Iterable[Mapping[str, Any]], *, options: Options = Options(),
            errors: Sequence[str] = (), now: datetime | None = None) -> Refreshed:  # fmt: skip
    """Write the inventory that `rows` (every AI asset there is now) make, against the stored one."""
    now = now or datetime.now(UTC)
    before = {a.id: a for a in store.assets()}
    found: dict[str, Asset] = {}
    problems = list(errors)
    for row in rows:
        try:
            asset = estate.parse_asset(row, tags=options.tags, aegis_hubs=options.hubs, namespaces=options.namespaces)
        except MalformedInput as exc:
            problems.append(f"{str(row.get('id'))[:200]!r}: {exc}")
            continue
        found[asset.id] = _kept(asset, before.get(asset.id), row)
    changes = [
        c for i in sorted(before.keys() | found.keys()) for c in estate.changes(before.get(i), found.get(i), now)
    ]
    gone = sorted(before.keys() - found.keys())
    findings = estate.reconcile(list(found.values()), store.findings(), now, severity=options.severity,
                                infra_hub=options.hubs[0] if options.hubs else "ai-diagnostics")  # fmt: skip
    listed = [found[i] for i in sorted(found)]
    store.save_inventory(listed, findings, changes, gone=gone)
    return Refreshed(listed, findings, changes, gone, problems)


def _kept(asset: Asset, old: Asset | None, row: Mapping[str, Any]) -> Asset:
    """What this refresh could not read of the asset, as the last one read it."""
    if old is None:
        return asset
    kept: dict[str, Any] = {}
    if "deployments" not in row and asset.type == estate.ACCOUNT_TYPES[0]:
        kept["deployments"] = old.deployments
    if asset.monitored is None and old.monitored is not None:
        kept |= {"monitored": old.monitored, "diagnostics": old.diagnostics}
    if asset.defender is None and old.defender is not None:
        kept["defender"] = old.defender
    return replace(asset, **kept) if kept else asset


def rows_from_file(path: Path) -> list[dict[str, Any]]:
    """Rows from a JSON file: a list of them, or a Resource Graph answer (`{"data": [...]}`)."""
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: no such file (give a JSON file of Resource Graph rows)") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"{path}: not JSON ({exc})") from None
    rows = doc.get("data") if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise ConfigurationError(f'{path}: expected a list of rows, or an object with the rows under "data"')
    return [r for r in rows if isinstance(r, dict)]
