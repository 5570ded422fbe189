"""MITRE ATLAS and OWASP LLM Top 10 data shipped with Aegis (`aegis/data/`), and the mapping of
Defender for Cloud AI alert types to them. An AI alert type the mapping does not know gets the
generic mapping: it still surfaces, and `mapping_of(kind).generic` says so."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

DATA = Path(__file__).resolve().parents[1] / "data"


@dataclass(frozen=True, slots=True)
class AlertMapping:
    atlas: tuple[str, ...]
    owasp_llm: tuple[str, ...]
    generic: bool = False
    renamed_to: str | None = None


def _tsv(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8") as f:
        return list(csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t"))


@cache
def atlas_names() -> dict[str, str]:
    """Technique id → display name (`Parent: Sub-technique` for sub-techniques)."""
    return {
        r["id"]: f"{r['parent_name']}: {r['name']}" if r["parent_name"] else r["name"] for r in atlas_technique_rows()
    }


@cache
def atlas_technique_rows() -> list[dict[str, str]]:
    """The shipped techniques: id, name, parent_name, tactics (comma-separated tactic ids)."""
    return _tsv("atlas-techniques.tsv")


@cache
def atlas_tactic_names() -> dict[str, str]:
    return {r["id"]: r["name"] for r in _tsv("atlas-tactics.tsv")}


def atlas_tactics(techniques: Iterable[str]) -> list[str]:
    """The ATLAS tactics (names, in ATLAS order of first use) the techniques serve."""
    of = {r["id"]: r["tactics"].split(",") for r in atlas_technique_rows()}
    names = atlas_tactic_names()
    out: list[str] = []
    for t in techniques:
        for tactic in of.get(t, []):
            if names.get(tactic) and names[tactic] not in out:
                out.append(names[tactic])
    return out


@cache
def owasp_names() -> dict[str, str]:
    return {r["id"]: r["name"] for r in _tsv("owasp-llm-2025.tsv")}


@cache
def _alerts() -> tuple[dict[str, AlertMapping], AlertMapping]:
    doc = yaml.safe_load((DATA / "defender-ai-alerts.yaml").read_text(encoding="utf-8"))
    alerts = {
        kind: AlertMapping(tuple(v["atlas"]), tuple(v["owasp_llm"]), renamed_to=v.get("renamed_to"))
        for kind, v in doc["alerts"].items()
    }
    g = doc["generic"]
    return alerts, AlertMapping(tuple(g["atlas"]), tuple(g["owasp_llm"]), generic=True)


def known_alert_types() -> list[str]:
    return list(_alerts()[0])


def mapping_of(alert_type: str) -> AlertMapping:
    alerts, generic = _alerts()
    return alerts.get(alert_type, generic)
