"""What the loaded detections cover: MITRE ATLAS techniques (as a tactics × techniques matrix) and
the OWASP Top 10 for LLM applications, each with the detections that cover it, directly (the
detection's own `atlas` / `owasp_llm`) or through the Defender alert types it maps (`alert_mapping`).

The matrix is drawn over the ATLAS data Aegis ships (the techniques it maps to: what is covered,
and the gaps among those), or over a full ATLAS release (`ATLAS.yaml` of mitre-atlas/atlas-data,
`--atlas FILE` or AEGIS_ATLAS_DATA), which shows every gap. `navigator_layer` writes the coverage as
an ATLAS Navigator layer (the ATT&CK Navigator layer format 4.5, domain `atlas-atlas`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aegis.correlate import mapping, selftest
from aegis.correlate.detections import Detection
from aegis.errors import InputNotFound, MalformedInput

SHIPPED_VERSION = "5.6.0"  # of the subset in aegis/data


@dataclass(frozen=True)
class Technique:
    id: str
    name: str
    tactics: tuple[str, ...]  # tactic ids (a sub-technique's are its parent's)
    parent: str | None = None


@dataclass(frozen=True)
class Atlas:
    version: str
    tactics: list[tuple[str, str]]  # (id, name) in matrix order
    techniques: dict[str, Technique]
    source: str  # where it was read: "shipped" or a file

    @property
    def complete(self) -> bool:
        return self.source != "shipped"


def shipped_atlas() -> Atlas:
    names, rows = mapping.atlas_tactic_names(), mapping.atlas_technique_rows()
    techniques = {r["id"]: Technique(r["id"], r["name"], tuple(t for t in r["tactics"].split(",") if t),
                                     _parent_of(r["id"])) for r in rows}  # fmt: skip
    return Atlas(SHIPPED_VERSION, list(names.items()), techniques, "shipped")


def atlas_file(path: Path) -> Atlas:
    """A full ATLAS release (`dist/ATLAS.yaml`): every tactic and technique of its first matrix."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputNotFound(
            f"no ATLAS data at {path}: give the ATLAS.yaml of a mitre-atlas/atlas-data release"
        ) from None
    except (OSError, yaml.YAMLError) as exc:
        raise MalformedInput(f"cannot read ATLAS data {path}: {str(exc).splitlines()[0][:200]}") from None
    try:
        matrix = doc["matrices"][0]
        tactics = [(str(t["id"]), str(t["name"])) for t in matrix["tactics"]]
        raw = {str(t["id"]): t for t in matrix["techniques"]}
    except (KeyError, IndexError, TypeError):
        raise MalformedInput(f"{path} is not an ATLAS.yaml (no matrices[0].tactics and .techniques)") from None
    techniques = {}
    for ident, t in raw.items():
        parent = t.get("subtechnique-of")
        own = t.get("tactics") or (raw.get(parent, {}).get("tactics") if parent else None) or []
        techniques[ident] = Technique(ident, str(t.get("name", ident)), tuple(map(str, own)),
                                      str(parent) if parent else None)  # fmt: skip
    return Atlas(str(doc.get("version", "")), tactics, techniques, str(path))


@dataclass(frozen=True)
class Coverage:
    atlas: dict[str, list[str]]  # technique id → detection ids
    owasp: dict[str, list[str]]  # OWASP LLM id → detection ids


def coverage(detections: Sequence[Detection]) -> Coverage:
    found: dict[str, dict[str, set[str]]] = {"atlas": {}, "owasp_llm": {}}
    for d in detections:
        mapped = [mapping.mapping_of(k) for k in selftest.alert_types_matched(d)]
        for attr, into in found.items():
            for t in [*getattr(d, attr), *(t for m in mapped for t in getattr(m, attr))]:
                into.setdefault(t, set()).add(d.id)
    return Coverage({k: sorted(v) for k, v in found["atlas"].items()},
                    {k: sorted(v) for k, v in found["owasp_llm"].items()})  # fmt: skip


@dataclass(frozen=True)
class Cell:
    technique: Technique
    by: list[str]  # detections covering it
    subs: list[Cell]

    @property
    def covered(self) -> bool:
        return bool(self.by) or any(s.covered for s in self.subs)


@dataclass(frozen=True)
class Column:
    tactic: str
    name: str
    cells: list[Cell]

    @property
    def covered(self) -> int:
        return sum(1 for c in self.cells if c.covered)


def matrix(cov: Coverage, atlas: Atlas) -> list[Column]:
    """The ATLAS matrix: a column per tactic, a cell per technique under it (its sub-techniques in it)."""
    subs: dict[str, list[Technique]] = {}
    for t in atlas.techniques.values():
        if t.parent:
            subs.setdefault(t.parent, []).append(t)
    columns = []
    for tactic, name in atlas.tactics:
        cells = [
            Cell(t, cov.atlas.get(t.id, []), [Cell(s, cov.atlas.get(s.id, []), []) for s in subs.get(t.id, [])])
            for t in atlas.techniques.values() if tactic in t.tactics and not t.parent
        ]  # fmt: skip
        # a shipped sub-technique whose parent is not shipped stands on its own
        cells += [Cell(t, cov.atlas.get(t.id, []), []) for t in atlas.techniques.values()
                  if t.parent and t.parent not in atlas.techniques and tactic in t.tactics]  # fmt: skip
        columns.append(Column(tactic, name, cells))
    return columns


def owasp_rows(cov: Coverage) -> list[tuple[str, str, list[str]]]:
    return [(i, name, cov.owasp.get(i, [])) for i, name in mapping.owasp_names().items()]


def counts(cov: Coverage, atlas: Atlas) -> dict[str, int]:
    return {
        "atlas_covered": sum(1 for t in atlas.techniques if cov.atlas.get(t)),
        "atlas_techniques": len(atlas.techniques),
        "owasp_covered": sum(1 for i in mapping.owasp_names() if cov.owasp.get(i)),
        "owasp": len(mapping.owasp_names()),
    }


def navigator_layer(cov: Coverage, atlas: Atlas, *, name: str = "Aegis detection coverage") -> dict[str, Any]:
    """An ATLAS Navigator layer: score 1 and the detections' ids as the comment for each covered
    technique (a parent covered through its sub-techniques too), 0 for the rest of the data."""
    covered_parents = {t.parent for t in atlas.techniques.values() if t.parent and cov.atlas.get(t.id)}
    techniques = []
    for t in atlas.techniques.values():
        by = cov.atlas.get(t.id, [])
        entry: dict[str, Any] = {"techniqueID": t.id, "score": 1 if by or t.id in covered_parents else 0}
        if by:
            entry["comment"] = "Detected by: " + ", ".join(by)
            entry["metadata"] = [{"name": "detection", "value": d} for d in by]
        if not t.parent:
            entry["showSubtechniques"] = t.id in covered_parents
        techniques.append(entry)
    c = counts(cov, atlas)
    return {
        "name": name,
        "versions": {"layer": "4.5", "navigator": "5.1.0"},
        "domain": "atlas-atlas",
        "description": f"{c['atlas_covered']} of {c['atlas_techniques']} ATLAS techniques covered by the loaded "
        f"detections (ATLAS {atlas.version}, {'full data' if atlas.complete else 'the subset Aegis ships'})",
        "metadata": [
            {"name": "atlas_data_version", "value": atlas.version},
            {"name": "generated_by", "value": "aegis"},
        ],
        "techniques": techniques,
        "gradient": {"colors": ["#ffffff", "#31a354"], "minValue": 0, "maxValue": 1},
        "legendItems": [{"label": "covered by a detection", "color": "#31a354"}],
    }


def _parent_of(ident: str) -> str | None:
    return ident.rsplit(".", 1)[0] if ident.count(".") == 2 else None
