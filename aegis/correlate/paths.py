"""Field paths over normalized events, as detections name them: compiled once into getters.

    kind, source, normalizer, severity, title, id   the event's own fields
    resource.id | .type | .subscription | .resource_group | .provider | .name
    attributes.<name>                               e.g. attributes.http_status
    entities.<type>                                 the keys of that entity type (ip: address or prefix)
    entities.<type>.<field>                         e.g. entities.ip.prefix, entities.user.upn

A path gives a list of values (an event may hold two IPs); a condition holds when any value does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields as dc_fields

from aegis.arm import ResourceId
from aegis.events import ENTITY_TYPES, Event, Scalar

Getter = Callable[[Event], list[Scalar]]

EVENT_FIELDS = ("id", "kind", "source", "normalizer", "severity", "title")
RESOURCE_FIELDS = tuple(f.name for f in dc_fields(ResourceId))


class PathError(ValueError):
    """A path that names no field of the event model."""


def compile_path(path: str) -> Getter:
    parts = path.split(".")
    head = parts[0]
    if head in EVENT_FIELDS and len(parts) == 1:
        return lambda e: [v] if (v := getattr(e, head)) is not None else []
    if head == "time" and len(parts) == 1:
        return lambda e: [e.time.isoformat()]
    if head == "resource" and len(parts) == 2 and parts[1] in RESOURCE_FIELDS:
        attr = parts[1]
        return lambda e: [v] if e.resource is not None and (v := getattr(e.resource, attr)) is not None else []
    if head == "attributes" and len(parts) == 2:
        name = parts[1]
        return lambda e: [v] if (v := e.attributes.get(name)) is not None else []
    if head == "entities" and len(parts) in (2, 3) and parts[1] in ENTITY_TYPES:
        cls = ENTITY_TYPES[parts[1]]
        if len(parts) == 2:
            return lambda e: [x.key for x in e.entities if type(x) is cls and x.key]
        attr = parts[2]
        if attr not in {f.name for f in dc_fields(cls)} - {"type"}:
            raise PathError(f"entity type {parts[1]!r} has no field {attr!r}")
        return lambda e: [v for x in e.entities if type(x) is cls and (v := getattr(x, attr)) is not None]
    raise PathError(
        f"unknown field path {path!r}: use one of {', '.join(EVENT_FIELDS)}, resource.<{'|'.join(RESOURCE_FIELDS)}>, "
        f"attributes.<name>, entities.<{'|'.join(ENTITY_TYPES)}>[.<field>]"
    )
