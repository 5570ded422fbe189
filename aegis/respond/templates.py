"""The template syntax of playbook parameters: `{{ path }}` placeholders, nothing else.

No expressions, filters or code: a placeholder names one path of the incident, checked when the
playbook loads; the value it gives is then validated by the action's parameter model.

    incident.id | .detection | .title | .severity | .group | .first_seen | .last_seen
    incident.event_ids                          a list (Defender alerts: their SystemAlertId)
    entities.<type>                             the keys of the incident's entities of that type
    entities.<type>.<field>                     one field of each (entities.host.mde_machine_id)
    item, item.<field>                          the entity (or value) of a step's `for_each`

A parameter that is one placeholder takes the value itself (the single value of a list of one;
a list of several is an error unless the parameter takes a list); a placeholder inside text is
replaced by the value's text, control characters removed.
"""

from __future__ import annotations

import re
from dataclasses import fields as dc_fields
from typing import Any

from aegis.events import ENTITY_TYPES
from aegis.records import safe_text

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
INCIDENT_FIELDS = ("id", "detection", "title", "severity", "group", "first_seen", "last_seen")
INCIDENT_LISTS = ("event_ids",)


class TemplateError(ValueError):
    """A placeholder naming nothing an incident has."""


def paths(value: str) -> list[str]:
    return PLACEHOLDER.findall(value)


def check_path(path: str, *, item: str | None) -> None:
    """Raise `TemplateError` unless `path` names something an incident (or the step's item) has.
    `item` is the step's `for_each` path, if any."""
    parts = path.split(".")
    head = parts[0]
    if head == "incident" and len(parts) == 2 and parts[1] in INCIDENT_FIELDS + INCIDENT_LISTS:
        return
    if head == "entities" and len(parts) in (2, 3) and parts[1] in ENTITY_TYPES:
        if len(parts) == 3:
            _entity_field(parts[1], parts[2])
        return
    if head == "item" and item is not None:
        if len(parts) == 1:
            return
        source = item.split(".")
        if len(parts) == 2 and source[0] == "entities" and len(source) == 2:
            if parts[1] != "key":
                _entity_field(source[1], parts[1])
            return
        raise TemplateError(f"'{path}': only an entity item has fields (for_each: entities.<type>)")
    if head == "item":
        raise TemplateError(f"'{path}': `item` needs the step's for_each")
    raise TemplateError(
        f"unknown placeholder '{path}': use incident.<{'|'.join(INCIDENT_FIELDS + INCIDENT_LISTS)}>, "
        f"entities.<{'|'.join(ENTITY_TYPES)}>[.<field>] or item[.<field>]"
    )


def check_for_each(path: str) -> None:
    parts = path.split(".")
    ok = (parts[0] == "entities" and len(parts) == 2 and parts[1] in ENTITY_TYPES) or (
        parts[0] == "incident" and len(parts) == 2 and parts[1] in INCIDENT_LISTS
    )
    if not ok:
        raise TemplateError(f"for_each '{path}': use entities.<type> or incident.<{'|'.join(INCIDENT_LISTS)}>")


def _entity_field(kind: str, name: str) -> None:
    known = {f.name for f in dc_fields(ENTITY_TYPES[kind])} - {"type"}
    if name not in known:
        raise TemplateError(f"entity type {kind!r} has no field {name!r} (it has {', '.join(sorted(known))})")


def render(value: Any, context: dict[str, Any]) -> Any:
    """A parameter with its placeholders replaced from `context` (a flat map of path → value)."""
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if not isinstance(value, str):
        return value
    whole = PLACEHOLDER.fullmatch(value.strip())
    if whole:
        got = context.get(whole.group(1))
        if isinstance(got, list) and len(got) == 1:
            return got[0]
        return got
    return PLACEHOLDER.sub(lambda m: _text(context.get(m.group(1))), value)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(safe_text(v, 200) for v in value)
    return "" if value is None else safe_text(value, 500)
