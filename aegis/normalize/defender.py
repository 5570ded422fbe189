"""Microsoft Defender for Cloud alerts, in the shapes they reach us, and the export messages that
share their hub.

Shapes (field names: `../shared/reference/defender-alert-json-shape.md`):
- `defender.alert.arm`: the ARM/REST resource, camelCase under `properties`;
- `defender.alert.export`: continuous export to Event Hubs, flat PascalCase, entities linked by
  `$id` / `$ref`;
- `defender.alert.sentinel`: a row of the Log Analytics / Sentinel `SecurityAlert` table, with
  `Entities` and `ExtendedProperties` as JSON strings;
- `defender.alert.activity_log`: the "Activate Alert" event Defender writes to the activity log;
- `defender.export.other`: assessments, sub-assessments, secure scores and regulatory compliance
  from continuous export: valid, nothing to watch, counted as ignored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Any

from aegis.arm import ResourceId, try_parse_resource_id
from aegis.decode import kind_of, loads_nested
from aegis.errors import MalformedInput
from aegis.events import (
    UNKNOWN_KIND,
    DefenderAlert,
    Entity,
    Event,
    Evidence,
    Host,
    Model,
    ModelDeployment,
    Origin,
    ServicePrincipal,
    Severity,
    Source,
    User,
    UserAgent,
    make_ip,
)
from aegis.normalize import fields as f
from aegis.normalize import redact
from aegis.normalize.registry import Ignored, normalizer

MAX_EXTENDED = 64


@dataclass(frozen=True, slots=True)
class _Names:
    """Where each field of an alert is, in one shape."""

    system_alert_id: str
    alert_type: str
    display_name: tuple[str, ...]
    description: str
    severity: tuple[str, ...]
    times: tuple[str, ...]
    end_time: tuple[str, ...]
    resource_id: tuple[str, ...]
    resource_identifiers: str
    entities: str
    extended: str
    intent: str
    status: str
    compromised: str
    product: str
    vendor: str
    link: tuple[str, ...]
    techniques: str
    correlation_key: str


ARM = _Names(
    "systemAlertId", "alertType", ("alertDisplayName",), "description", ("severity",),
    ("startTimeUtc", "timeGeneratedUtc"), ("endTimeUtc",), (), "resourceIdentifiers", "entities",
    "extendedProperties", "intent", "status", "compromisedEntity", "productName", "vendorName",
    ("alertUri",), "techniques", "correlationKey",
)  # fmt: skip
EXPORT = _Names(
    "SystemAlertId", "AlertType", ("AlertDisplayName",), "Description", ("Severity", "ReportedSeverity"),
    ("StartTimeUtc", "TimeGenerated"), ("EndTimeUtc",), ("AzureResourceId",), "ResourceIdentifiers",
    "Entities", "ExtendedProperties", "Intent", "Status", "CompromisedEntity", "ProductName", "VendorName",
    ("AlertUri",), "Techniques", "CorrelationKey",
)  # fmt: skip
SENTINEL = _Names(
    "SystemAlertId", "AlertType", ("DisplayName", "AlertName"), "Description", ("AlertSeverity", "Severity"),
    ("StartTime", "TimeGenerated"), ("EndTime",), ("ResourceId", "AzureResourceId"), "ResourceIdentifiers",
    "Entities", "ExtendedProperties", "Tactics", "Status", "CompromisedEntity", "ProductName", "VendorName",
    ("AlertLink", "AlertUri"), "Techniques", "CorrelationKey",
)  # fmt: skip


# --- which normalizer takes an item --------------------------------------------------------------


def _is_arm_alert(item: dict[str, Any]) -> bool:
    props = item.get("properties")
    return isinstance(props, dict) and ("systemAlertId" in props or "alertType" in props)


def _is_sentinel_alert(item: dict[str, Any]) -> bool:
    return "SystemAlertId" in item and (
        item.get("Type") == "SecurityAlert" or isinstance(item.get("Entities"), str) or "AlertName" in item
    )


def _is_export_alert(item: dict[str, Any]) -> bool:
    return "SystemAlertId" in item or ("AlertType" in item and "VendorName" in item)


def _is_activity_log_alert(item: dict[str, Any]) -> bool:
    op = item.get("operationName")
    op_name = op.get("value") if isinstance(op, dict) else op
    return (
        isinstance(op_name, str)
        and op_name.lower() == "microsoft.security/locations/alerts/activate/action"
        and ("eventDataId" in item or "operationId" in item or "correlationId" in item)
    )


_EXPORT_MARKERS = frozenset({
    "securityEventDataEnrichment", "SecurityEventDataEnrichment", "assessmentEventDataEnrichment",
    "AssessmentEventDataEnrichment", "SubAssessmentEventDataEnrichment", "subAssessmentEventDataEnrichment",
})  # fmt: skip
_EXPORT_TYPES = (
    "microsoft.security/assessments", "microsoft.security/securescores", "microsoft.security/regulatorycompliance",
    "microsoft.security/securescorecontrols", "microsoft.security/governance",
)  # fmt: skip


def _is_export_other(item: dict[str, Any]) -> bool:
    if not item.keys().isdisjoint(_EXPORT_MARKERS):
        return True
    kind = item.get("type") or item.get("Type") or item.get("$type")
    return isinstance(kind, str) and kind.lower().startswith(_EXPORT_TYPES)


# --- normalizers ------------------------------------------------------------------------------------


@normalizer("defender.export.other", source=Source.DEFENDER, accepts=_is_export_other)
def export_other(item: dict[str, Any], evidence: Evidence) -> list[Event]:
    """Continuous-export messages that are not alerts (assessments, secure scores, compliance)."""
    kind = item.get("type") or item.get("Type") or item.get("$type") or "export message"
    raise Ignored(f"Defender export message that is not an alert ({str(kind)[:80]})")


def _is_xdr_streaming(item: dict[str, Any]) -> bool:
    category = item.get("category")
    return isinstance(category, str) and category.lower().startswith("advancedhunting-") and "properties" in item


@normalizer("defender.xdr.streaming", source=Source.DEFENDER, accepts=_is_xdr_streaming)
def xdr_streaming(item: dict[str, Any], evidence: Evidence) -> list[Event]:
    """Defender XDR streaming API records (`AdvancedHunting-AlertInfo`, `-AlertEvidence`, device
    tables): valid Microsoft data, counted and not read (Defender for Cloud's own alerts, which
    XDR also streams, arrive through continuous export, where they carry their AI context)."""
    raise Ignored(f"Defender XDR streaming record ({str(item.get('category'))[:80]})")


@normalizer("defender.alert.arm", source=Source.DEFENDER, accepts=_is_arm_alert)
def arm_alert(item: dict[str, Any], evidence: Evidence) -> list[Event]:
    """A Defender for Cloud alert as the ARM REST API returns it (camelCase under `properties`)."""
    return [_alert(item["properties"], ARM, "defender.alert.arm", evidence, alert_resource(item.get("id")),
                   resource_name=item.get("name"))]  # fmt: skip


@normalizer("defender.alert.sentinel", source=Source.DEFENDER, accepts=_is_sentinel_alert)
def sentinel_alert(item: dict[str, Any], evidence: Evidence) -> list[Event]:
    """A Defender alert as a row of the Log Analytics / Sentinel `SecurityAlert` table."""
    event = _alert(item, SENTINEL, "defender.alert.sentinel", evidence)
    # Sentinel gives the row an id of its own (SystemAlertId); Defender's is VendorOriginalId
    vendor = item.get("VendorOriginalId")
    if isinstance(vendor, str) and _DEFENDER_ID.match(vendor.strip()) and vendor.strip().lower() != event.id:
        event = replace(event, id=vendor.strip().lower(),
                        attributes={**event.attributes, "sentinel_alert_id": event.id})  # fmt: skip
    return [event]


@normalizer("defender.alert.export", source=Source.DEFENDER, accepts=_is_export_alert)
def export_alert(item: dict[str, Any], evidence: Evidence) -> list[Event]:
    """A Defender alert from continuous export (flat PascalCase, `$id`/`$ref` entities)."""
    return [_alert(item, EXPORT, "defender.alert.export", evidence)]


# an activity-log record: it reaches Aegis through the activity log's diagnostic setting
@normalizer("defender.alert.activity_log", source=Source.DEFENDER, accepts=_is_activity_log_alert, hub="diagnostics")
def activity_log_alert(item: dict[str, Any], evidence: Evidence) -> list[Event]:
    """A Defender alert as the activity-log event "Activate Alert" (Security category)."""
    props = f.obj(item, "properties")
    alert_id = _alert_id(f.text(item, "eventDataId") or f.text(item, "operationId") or f.text(item, "correlationId"))
    name = item.get("eventName")
    title = f.text(name, "value", limit=f.MAX_TITLE) if isinstance(name, dict) else f.text(item, "eventName")
    affected = f.resource(props, "azureResourceId") or f.resource(props, "resourceId")
    entities: list[Entity] = []
    if affected is not None:
        entities += f.resource_entities(affected)
    username = f.text(props, "username")
    if username:
        entities.append(User(name=username))
    arm = alert_resource(item.get("id"))  # .../alerts/A/events/E/ticks/T: the alert is the first part
    if arm is not None:
        entities.append(arm)
    entities = [replace(e, origin=Origin.DEFENDER) for e in entities]
    attributes = {
        "intent": _first_of_list_text(props.get("intent")),
        "compromised_entity": f.text(props, "compromisedEntity"),
        "status": _value_text(item.get("status")),
        "resource_type": f.text(props, "resourceType"),
    }
    return [
        Event(
            id=alert_id,
            source=Source.DEFENDER,
            normalizer="defender.alert.activity_log",
            kind=f.text(props, "alertType") or UNKNOWN_KIND,
            time=f.timestamp(item, "eventTimestamp", "submissionTimestamp"),
            evidence=evidence,
            resource=affected,
            severity=Severity.parse(props.get("severity")),
            title=title,
            entities=f.dedupe(entities),
            attributes={k: v for k, v in attributes.items() if v is not None},
            tenant=f.guid(item.get("tenantId")),
        )
    ]


# --- the shared alert reader --------------------------------------------------------------------------


def _alert(
    p: dict[str, Any], n: _Names, name: str, evidence: Evidence, arm: DefenderAlert | None = None, *,
    resource_name: object = None,
) -> Event:  # fmt: skip
    alert_id = _alert_id(f.text(p, n.system_alert_id, required=True))
    link = next((f.text(p, k) for k in n.link if p.get(k)), None)
    severity_raw = next((p[k] for k in n.severity if p.get(k) is not None), None)
    if severity_raw is not None and not isinstance(severity_raw, str):
        raise MalformedInput(f"'severity' is {kind_of(severity_raw)}, not a string")

    resource = _affected_resource(p, n)
    entities: list[Entity] = f.resource_entities(resource) if resource else []
    entities += _alert_entities(f.array(p, n.entities))
    extended = f.obj(p, n.extended)
    arm = arm or alert_resource_from_link(link)
    if arm is not None:
        entities.append(arm)
    entities = [replace(e, origin=Origin.DEFENDER) for e in entities]
    entities += _extended_entities(extended)  # each with the origin its property name gives it

    refused: list[str] = []
    attributes: dict[str, Any] = {
        "intent": _first_of_list_text(p.get(n.intent)),
        "status": f.text(p, n.status),
        "compromised_entity": _redacted(f.text(p, n.compromised)),
        "product": f.text(p, n.product),
        "vendor": f.text(p, n.vendor),
        "link": link,
        "techniques": _join(p.get(n.techniques)),
        "correlation_key": f.text(p, n.correlation_key),
        "description": _redacted(f.text(p, n.description, limit=2048)),
        "end_time": _end_time(p, n),
    }
    for key, value in list(extended.items())[:MAX_EXTENDED]:
        if isinstance(value, str):  # secrets redacted, prompts and completions dropped (`redact.py`)
            attributes[f"ext.{key[:64]}"] = redact.field(key, value[: f.MAX_TEXT])
        elif isinstance(value, bool):
            attributes[f"ext.{key[:64]}"] = value
        elif isinstance(value, int | float):  # a number out of bounds is left out, like any other refused field
            attributes[f"ext.{key[:64]}"] = f.number(extended, key, refused=refused)
    attributes["refused"] = ",".join(refused) or None

    # An ARM alert's `name` is its own, and normally its systemAlertId; one whose name is not may be
    # another alert that shares that id (published examples hold such pairs): it is kept apart by an
    # id of both, and says which id it shares.
    named = resource_name.strip().lower() if isinstance(resource_name, str) else None
    if named and named != alert_id:
        attributes["shares_alert_id"] = alert_id
        alert_id = f"{alert_id}~{hashlib.sha256(named.encode()).hexdigest()[:12]}"

    return Event(
        id=alert_id,
        source=Source.DEFENDER,
        normalizer=name,
        kind=f.text(p, n.alert_type, limit=200) or UNKNOWN_KIND,
        time=f.timestamp(p, *n.times),
        evidence=evidence,
        resource=resource,
        severity=Severity.parse(severity_raw),
        title=next((f.text(p, k, limit=f.MAX_TITLE) for k in n.display_name if p.get(k)), None),
        entities=f.dedupe(entities),
        attributes={k: v for k, v in attributes.items() if v is not None},
        tenant=_tenant(p, n),
    )


_DEFENDER_ID = re.compile(r"^\d{10,20}_[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
_ALERT_RESOURCE = re.compile(r"^(/subscriptions/[^/]+(?:/resourcegroups/[^/]+)?/providers/microsoft\.security"
                             r"/locations/[^/]+/alerts/[^/]+)(?:/.*)?$", re.IGNORECASE)  # fmt: skip
# AlertUri / AlertLink: https://portal.azure.com/#blade/.../alertId/A/subscriptionId/S/resourceGroup/R/.../location/L
_ALERT_LINK = re.compile(r"/alertId/([^/?#]+)/subscriptionId/([^/?#]+)(?:/resourceGroup/([^/?#]+))?(?:/[^?#]*?)?"
                         r"/location/([^/?#]+)")  # fmt: skip


def alert_resource(value: object) -> DefenderAlert | None:
    """The alert's ARM resource from an id that is, or starts with, `.../Microsoft.Security/locations/L/alerts/A`."""
    m = _ALERT_RESOURCE.match(value) if isinstance(value, str) else None
    rid = try_parse_resource_id(m[1]) if m else None
    return DefenderAlert(resource_id=rid.id) if rid else None


def alert_resource_from_link(link: str | None) -> DefenderAlert | None:
    """The alert's ARM resource from its portal link (continuous export's AlertUri, Sentinel's AlertLink)."""
    m = _ALERT_LINK.search(link or "")
    if m is None:
        return None
    alert, sub, group, location = m.groups()
    scope = f"/subscriptions/{sub}" + (f"/resourceGroups/{group}" if group else "")
    return alert_resource(f"{scope}/providers/Microsoft.Security/locations/{location}/alerts/{alert}")


_ALERT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def _alert_id(value: str | None) -> str:
    """The event id of an alert: its SystemAlertId (`2518298467986649999_4d25bfef-…`), lower case.
    It keys the stores, so anything but the characters Defender uses is refused."""
    if value is None:
        raise MalformedInput("alert has no SystemAlertId")
    if not _ALERT_ID.match(value):
        raise MalformedInput("SystemAlertId has characters or a length no Defender alert id has")
    return value.lower()


def _affected_resource(p: dict[str, Any], n: _Names) -> ResourceId | None:
    for key in n.resource_id:
        rid = f.resource(p, key)
        if rid is not None:
            return rid
    for ident in f.array(p, n.resource_identifiers):
        if not isinstance(ident, dict):
            continue
        lowered = {str(k).lower(): v for k, v in ident.items()}
        if str(lowered.get("type", "")).lower() == "azureresource":
            rid = try_parse_resource_id(lowered.get("azureresourceid"))
            if rid is not None:
                return rid
    return None


def _tenant(p: dict[str, Any], n: _Names) -> str | None:
    """The alert's tenant, from its resource identifiers: the affected resource's tenant, else the
    Entra tenant it names."""
    found: dict[str, str] = {}
    for ident in f.array(p, n.resource_identifiers):
        if isinstance(ident, dict):
            lowered = {str(k).lower(): v for k, v in ident.items()}
            for key in ("azureresourcetenantid", "aadtenantid"):
                tenant = f.guid(lowered.get(key))
                if tenant:
                    found.setdefault(key, tenant)
    return found.get("azureresourcetenantid") or found.get("aadtenantid")


def _end_time(p: dict[str, Any], n: _Names) -> str | None:
    try:
        return f.timestamp(p, *n.end_time).isoformat().replace("+00:00", "Z")
    except MalformedInput:
        return None


def _resolve_refs(raw: list[Any]) -> list[dict[str, Any]]:
    """Entities with `$ref` replaced by the entity they reference (the nearest earlier `$id`, as
    JSON.NET writes them; exports that repeat ids resolve to the latest definition)."""
    latest: dict[str, dict[str, Any]] = {}
    first: dict[str, dict[str, Any]] = {}
    # every `$id`, in document order: a walk with a stack, not a recursive closure (one refers to
    # itself through its cell, a reference cycle that only the full collection would free)
    stack: list[Any] = [raw]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref_id = node.get("$id")
            if isinstance(ref_id, str):
                first.setdefault(ref_id, node)
            stack.extend(reversed(node.values()))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    out = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        ref = item.get("$ref")
        node = latest.get(ref) or first.get(ref) or {} if isinstance(ref, str) and len(item) == 1 else item
        ref_id = node.get("$id")
        if isinstance(ref_id, str):
            latest[ref_id] = node
        if node:
            out.append(node)
    return out


def _alert_entities(raw: list[Any]) -> list[Entity]:
    out: list[Entity] = []
    for node in _resolve_refs(raw):
        e = {str(k).lower(): v for k, v in node.items()}
        kind = str(e.get("type", "")).lower()
        if kind == "ip":
            ip = make_ip(e.get("address"))
            if ip:
                out.append(ip)
        elif kind == "host":
            host_id = try_parse_resource_id(e.get("azureid"))
            name = _s(e.get("hostname")) or _s(e.get("netbiosname")) or _s(e.get("fqdn"))
            mde = _s(e.get("mdatpdeviceid")) or _s(e.get("mdedeviceid"))
            if name or host_id or mde:
                os_name = _s(e.get("osfamily")) or _s(e.get("ostype")) or _s(e.get("operatingsystem"))
                out.append(Host(name=name, azure_id=host_id.id if host_id else None, mde_machine_id=mde, os=os_name))
        elif kind == "account":
            user = _account(e)
            if user:
                out.append(user)
        elif kind == "azure-resource":
            rid = try_parse_resource_id(e.get("resourceid"))
            if rid:
                out += f.resource_entities(rid)
        elif kind == "cloud-application":
            app_id, name = e.get("appid"), _s(e.get("name"))
            if app_id is not None or name:
                out.append(ServicePrincipal(app_id=str(app_id)[:64] if app_id is not None else None, name=name))
    return out


def _account(e: dict[str, Any]) -> User | None:
    name = _s(e.get("name"))
    suffix = _s(e.get("upnsuffix"))
    upn = f"{name}@{suffix}".lower() if name and suffix else None
    object_id = f.guid(e.get("aaduserid"))
    if not (upn or object_id or name):
        return None
    return User(
        upn=upn, object_id=object_id, name=_s(e.get("displayname")) or name, tenant_id=f.guid(e.get("aadtenantid"))
    )


# Extended properties of AI alerts carry the caller's context under loosely named keys; these
# are the names seen in Defender alerts and in the end-user context feature (compacted form).
_EXT_IP = {"clientipaddress", "ipaddress", "callerip", "calleripaddress", "sourceip", "clientip", "enduseripaddress"}
_EXT_UPN = {"clientprincipalname", "userprincipalname", "upn", "enduserid", "username"}
_EXT_UA = {"useragent", "clientuseragent", "suspicioususeragent"}
_EXT_DEPLOYMENT = {"deploymentname", "modeldeploymentname", "modeldeployment", "aideploymentname"}
_EXT_MODEL = {"modelname", "model"}
_EXT_APP = {"applicationname", "clientapplication", "appname"}


# The user security context an AI application passes with its model calls (end-user id, end-user
# IP, application name) reaches alerts as these properties: the application's word, not Azure's.
_EXT_APP_SUPPLIED = ("enduser", "sourceip", "application", "appname", "clientapplication")


def _extended_entities(ext: dict[str, Any]) -> list[Entity]:
    out: list[Entity] = []
    for key, value in list(ext.items())[:MAX_EXTENDED]:
        if not isinstance(key, str) or not isinstance(value, str) or not value.strip():
            continue
        k, v = f.compact_key(key), value.strip()[: f.MAX_TEXT]
        origin = Origin.APP if k.startswith(_EXT_APP_SUPPLIED) else Origin.DEFENDER
        entity: Entity | None = None
        if k in _EXT_IP:
            entity = make_ip(v)
        elif k in _EXT_UPN:
            entity = User(upn=v.lower()) if "@" in v else User(name=v)
        elif k in _EXT_UA:
            entity = UserAgent(value=redact.text(v))
        elif k in _EXT_DEPLOYMENT:
            entity = ModelDeployment(name=v[:128])
        elif k in _EXT_MODEL:
            entity = Model(name=v[:128])
        elif k in _EXT_APP:
            entity = ServicePrincipal(name=v[:256])
        if entity is not None:
            out.append(replace(entity, origin=origin))
    return out


def _redacted(value: str | None) -> str | None:
    return redact.text(value) if value else value


def _s(value: Any) -> str | None:
    return value.strip()[: f.MAX_TEXT] or None if isinstance(value, str) and value.strip() else None


def _first_of_list_text(value: Any) -> str | None:
    """Intent arrives as `"Execution"`, as `"[\\"Persistence\\"]"` or as a list of intents."""
    try:
        value = loads_nested(value, "intent") if isinstance(value, str) and value.startswith("[") else value
    except MalformedInput:
        return None
    return _join(value)


def _join(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip()[: f.MAX_TEXT] or None
    if isinstance(value, list):
        parts = [v.strip() for v in value if isinstance(v, str) and v.strip()]
        return ",".join(parts)[: f.MAX_TEXT] or None
    return None


def _value_text(value: Any) -> str | None:
    """Activity-log fields are `{"value": ..., "localizedValue": ...}` or plain strings."""
    return _s(value.get("value") if isinstance(value, dict) else value)
