"""Records that diagnostic settings send to Event Hubs inside `{"records": [...]}`.

- `diagnostics.signin`: Entra ID sign-in logs (`SignInLogs`, `NonInteractiveUserSignInLogs`, ...);
- `diagnostics.activity`: the Azure activity log (Administrative operations such as `listKeys`,
  `regenerateKey` or network changes on an AI account, and the other activity categories);
- `diagnostics.ai`: resource logs of AI accounts (Azure OpenAI, AI Foundry, AI services):
  `RequestResponse`, `Audit`, `Trace`, `AzureOpenAIRequestUsage` and any later category;
- `diagnostics.resource`: any other resource log in the common schema.

Field facts: `../shared/reference/ai-diagnostic-logs.md`. `properties` may be an object or a JSON
string; resource ids arrive upper-case; caller IPs arrive with the last octet masked.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from aegis.arm import ResourceId
from aegis.events import (
    Entity,
    Event,
    Evidence,
    Model,
    ModelDeployment,
    ServicePrincipal,
    Source,
    User,
    UserAgent,
    make_ip,
)
from aegis.normalize import fields as f
from aegis.normalize import redact
from aegis.normalize.registry import normalizer

SIGNIN_CATEGORIES = frozenset(
    {
        "signinlogs", "noninteractiveusersigninlogs", "serviceprincipalsigninlogs",
        "managedidentitysigninlogs", "microsoftserviceprincipalsigninlogs", "adfssigninlogs",
    }
)  # fmt: skip
ACTIVITY_CATEGORIES = frozenset(
    {
        "administrative", "security", "servicehealth", "resourcehealth", "alert", "recommendation",
        "policy", "autoscale", "write", "delete", "action",
    }
)  # fmt: skip
_APP_SIGNIN = frozenset(
    {"serviceprincipalsigninlogs", "managedidentitysigninlogs", "microsoftserviceprincipalsigninlogs"}
)

_CLAIM_UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
_CLAIM_OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
_CLAIM_NAME = "name"
_CLAIM_TID = "http://schemas.microsoft.com/identity/claims/tenantid"

# Token counts: no published AzureOpenAIRequestUsage sample exists, so accept the usual spellings
# (seen in the field: `promptTokens` and `generatedTokens`, each a single-element array)
_TOKEN_FIELDS = {
    "prompttokens": "prompt_tokens", "inputtokens": "prompt_tokens",
    "completiontokens": "completion_tokens", "outputtokens": "completion_tokens",
    "generatedtokens": "completion_tokens", "totaltokens": "total_tokens",
}  # fmt: skip


def _category(item: dict[str, Any]) -> str:
    value = item.get("category", item.get("type"))
    return value.lower() if isinstance(value, str) else ""


def _is_record(item: dict[str, Any]) -> bool:
    return "time" in item and "resourceId" in item and isinstance(item.get("category", item.get("type")), str)


def _is_signin(item: dict[str, Any]) -> bool:
    return _is_record(item) and _category(item) in SIGNIN_CATEGORIES


def _is_activity(item: dict[str, Any]) -> bool:
    return _is_record(item) and _category(item) in ACTIVITY_CATEGORIES


def _is_ai(item: dict[str, Any]) -> bool:
    rid = item.get("resourceId")
    if not _is_record(item) or not isinstance(rid, str):
        return False
    low = rid.lower()
    for marker in _AI_MARKERS:  # noqa: SIM110 - a loop is faster than any() over a generator here
        if marker in low:
            return True
    return False


_AI_MARKERS = tuple(f"/providers/{p}/" for p in f.AI_PROVIDERS)


@normalizer("diagnostics.signin", source=Source.SIGNIN_LOG, accepts=_is_signin)
def signin(item: dict[str, Any], evidence: Evidence) -> list[Event]:
    """An Entra ID sign-in record (user, non-interactive, service principal, managed identity)."""
    category = _category(item)
    props = f.obj(item, "properties")
    entities: list[Entity] = []
    ip = make_ip(props.get("ipAddress")) or make_ip(item.get("callerIpAddress"))
    if ip:
        entities.append(ip)
    if category in _APP_SIGNIN:
        sp_name = f.text(props, "servicePrincipalName") or f.text(props, "appDisplayName")
        app_id, sp_id = f.guid(props.get("appId")), f.guid(props.get("servicePrincipalId"))
        if app_id or sp_id or sp_name:
            kind = "managed_identity" if category == "managedidentitysigninlogs" else "application"
            entities.append(ServicePrincipal(app_id=app_id, object_id=sp_id, name=sp_name, kind=kind))
    else:
        upn = f.text(props, "userPrincipalName")
        user_id = f.guid(props.get("userId"))
        if upn or user_id:
            entities.append(
                User(
                    upn=upn.lower() if upn else None,
                    object_id=user_id,
                    name=f.text(props, "userDisplayName"),
                    tenant_id=f.guid(props.get("homeTenantId")) or f.guid(item.get("tenantId")),
                )
            )
    ua = f.text(props, "userAgent")
    if ua:
        entities.append(UserAgent(value=redact.text(ua)))
    status = _dict(props.get("status"))
    location = _dict(props.get("location"))
    refused: list[str] = []
    error_code = f.number(status, "errorCode", refused=refused)
    attributes = {
        "category": item.get("category"),
        "operation": f.text(item, "operationName"),
        "error_code": error_code,
        "success": error_code == 0 if error_code is not None else None,
        "app_id": f.guid(props.get("appId")),
        "app_name": f.text(props, "appDisplayName"),
        "target_resource": f.text(props, "resourceDisplayName"),
        "client_app": f.text(props, "clientAppUsed"),
        "interactive": props.get("isInteractive") if isinstance(props.get("isInteractive"), bool) else None,
        "conditional_access": f.text(props, "conditionalAccessStatus"),
        "risk_level": f.text(props, "riskLevelDuringSignIn"),
        "risk_level_aggregated": f.text(props, "riskLevelAggregated"),
        "risk_state": f.text(props, "riskState"),
        "country": f.text(location, "countryOrRegion"),
        "correlation_id": f.text(item, "correlationId"),
        "refused": ",".join(refused) or None,
    }
    # the sign-in's own time first: some pipelines write the record's `time` in a US form, or late
    when = f.timestamp(props, "createdDateTime", fallback=(item, "time"))
    return [
        _event(
            item,
            "diagnostics.signin",
            Source.SIGNIN_LOG,
            entities=entities,
            attributes=attributes,
            evidence=evidence,
            time=when,
            tenant=f.guid(item.get("tenantId")) or f.guid(props.get("resourceTenantId")),
            properties=props,
        )
    ]


@normalizer("diagnostics.activity", source=Source.ACTIVITY_LOG, accepts=_is_activity)
def activity(item: dict[str, Any], evidence: Evidence) -> list[Event]:
    """An activity-log record (control-plane operation, health or policy event)."""
    identity = _dict(item.get("identity"))
    claims = _dict(identity.get("claims"))
    authz = _dict(identity.get("authorization"))
    evidence_block = _dict(authz.get("evidence"))

    rid = f.resource(item, "resourceId", required=True)
    assert rid is not None
    entities: list[Entity] = f.resource_entities(rid)
    ip = make_ip(item.get("callerIpAddress"))
    if ip:
        entities.append(ip)
    principal_type = str(evidence_block.get("principalType", "")).lower()
    object_id = f.guid(claims.get(_CLAIM_OID)) or f.guid(evidence_block.get("principalId"))
    upn = claims.get(_CLAIM_UPN) if isinstance(claims.get(_CLAIM_UPN), str) else None
    caller = f.text(item, "caller")
    if caller and "@" in caller:
        upn = upn or caller
    elif caller and not object_id:
        object_id = f.guid(caller)
    if principal_type == "serviceprincipal" or (not upn and f.guid(claims.get("appid")) and principal_type != "user"):
        entities.append(ServicePrincipal(app_id=f.guid(claims.get("appid")), object_id=object_id))
    elif upn or object_id:
        name = claims.get(_CLAIM_NAME) if isinstance(claims.get(_CLAIM_NAME), str) else None
        entities.append(User(upn=upn.strip().lower()[:256] if upn else None, object_id=object_id, name=name))
    props = f.obj(item, "properties")
    refused: list[str] = []
    status_code = props.get("statusCode")
    attributes = {
        "category": item.get("category"),
        "operation": _operation(item),
        "result_type": f.text(item, "resultType"),
        "result_signature": f.text(item, "resultSignature"),
        "http_status": f.number(props, "statusCode", refused=refused) if isinstance(status_code, int) else None,
        "status_code": f.text(props, "statusCode") if isinstance(status_code, str) else None,
        "level": f.text(item, "level"),
        "role": f.text(evidence_block, "role"),
        "authorization_action": f.text(authz, "action"),
        "authorization_scope": f.text(authz, "scope"),
        "correlation_id": f.text(item, "correlationId"),
        "refused": ",".join(refused) or None,
    }
    return [
        _event(
            item,
            "diagnostics.activity",
            Source.ACTIVITY_LOG,
            entities=entities,
            attributes=attributes,
            evidence=evidence,
            rid=rid,
            tenant=f.guid(claims.get(_CLAIM_TID)),
            properties=props,
        )
    ]


@normalizer("diagnostics.ai", source=Source.RESOURCE_LOG, accepts=_is_ai)
def ai_resource_log(item: dict[str, Any], evidence: Evidence) -> list[Event]:
    """A resource log of an AI account: RequestResponse, Audit, Trace, AzureOpenAIRequestUsage."""
    rid = f.resource(item, "resourceId", required=True)
    assert rid is not None
    props = f.obj(item, "properties")
    account = _account_of(rid)
    entities: list[Entity] = f.resource_entities(rid)
    ip = make_ip(item.get("callerIpAddress"))
    if ip:
        entities.append(ip)
    caller_oid = f.guid(props.get("objectId")) or f.guid(props.get("callerObjectId")) or f.guid(
        item.get("callerObjectId"))  # fmt: skip
    if caller_oid:
        # The log names the caller's Entra object id without saying whether it is a user or a
        # service principal; it is kept as a user, and enrichment resolves it.
        entities.append(User(object_id=caller_oid))
    deployment = f.text(props, "modelDeploymentName", limit=128)
    if deployment:
        entities.append(ModelDeployment(name=deployment, resource_id=account.id if account else None))
    model = f.text(props, "modelName", limit=128)
    if model:
        entities.append(Model(name=model, version=f.text(props, "modelVersion", limit=64)))
    ua = f.text(props, "userAgent") or f.text(item, "userAgent")
    if ua:
        entities.append(UserAgent(value=redact.text(ua)))
    refused: list[str] = []
    # resultSignature is an HTTP status (a number, or numeric text) or a word ("Succeeded")
    raw_signature = item.get("resultSignature")
    signature, signature_text = None, None
    if isinstance(raw_signature, int | float | list) or f.is_numeric_text(raw_signature):
        signature = f.number(item, "resultSignature", refused=refused)
    elif isinstance(raw_signature, str):
        signature_text = f.text(item, "resultSignature")
    elif raw_signature is not None:
        refused.append("resultSignature")
    attributes: dict[str, Any] = {
        "category": item.get("category", item.get("type")),
        "operation": f.text(item, "operationName"),
        "http_status": int(signature) if signature is not None else None,
        "result_signature": signature_text,
        "result_type": f.text(item, "resultType"),
        "duration_ms": f.number(item, "durationMs", refused=refused),  # published records hold negative ones
        "request_bytes": f.number(props, "requestLength", refused=refused, minimum=0),
        "response_bytes": f.number(props, "responseLength", refused=refused, minimum=0),
        "stream_type": f.text(props, "streamType"),
        "api_name": f.text(props, "apiName"),
        "correlation_id": f.text(item, "correlationId"),
        "location": f.text(item, "location"),
        "level": f.text(item, "level"),
        # an Entra identity called, or (an empty objectId: what these logs write for key auth) a key
        "auth": "entra" if caller_oid else "key" if props.get("objectId") == "" else None,
    }
    attributes |= _tokens(props, refused)
    attributes["refused"] = ",".join(refused) or None
    return [
        _event(
            item,
            "diagnostics.ai",
            Source.RESOURCE_LOG,
            entities=entities,
            attributes=attributes,
            evidence=evidence,
            rid=rid,
            properties=props,
        )
    ]


GATEWAY_CATEGORIES = frozenset({"gatewaylogs", "gatewayllmlogs"})
# the backend URL of an AI account behind the gateway: its custom subdomain, and the deployment
_AI_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")
_DEPLOYMENT_PATH = re.compile(r"/deployments/([A-Za-z0-9._-]{1,128})(?:/|$)")
_FILTERED = ("content_filter", "responsibleaipolicyviolation")  # in a 400: the content filter refused


def _is_gateway(item: dict[str, Any]) -> bool:
    rid = item.get("resourceId")
    return (_is_record(item) and _category(item) in GATEWAY_CATEGORIES and isinstance(rid, str)
            and "/providers/microsoft.apimanagement/service/" in rid.lower())  # fmt: skip


@normalizer("diagnostics.gateway", source=Source.RESOURCE_LOG, accepts=_is_gateway)
def gateway_log(item: dict[str, Any], evidence: Evidence) -> list[Event]:
    """API Management (AI gateway) in front of Azure OpenAI and AI Foundry: `GatewayLogs` (each
    request: the backend AI account and deployment from `backendUrl`, the status the backend and
    the client got, a content filter's refusal) and `GatewayLlmLogs` (token usage, model,
    deployment)."""
    rid = f.resource(item, "resourceId", required=True)
    assert rid is not None
    raw = f.obj(item, "properties")
    props = {f.compact_key(k): v for k, v in raw.items() if isinstance(k, str)}  # camelCase, or PascalCase
    refused: list[str] = []
    entities: list[Entity] = []
    ip = make_ip(item.get("callerIpAddress")) or make_ip(props.get("calleripaddress"))
    if ip:
        entities.append(ip)
    backend = f.text(props, "backendurl", limit=2048)
    host, deployment = _backend(backend)
    deployment = f.text(props, "deploymentname", limit=128) or deployment
    if deployment:
        entities.append(ModelDeployment(name=deployment))
    model = f.text(props, "modelname", limit=128)
    if model:
        entities.append(Model(name=model))
    backend_status = f.number(props, "backendresponsecode", refused=refused)
    client_status = f.number(props, "responsecode", refused=refused)
    said = " ".join(str(props.get(k) or "")[:4096] for k in ("lasterrorreason", "lasterrormessage", "errors",
                                                            "backendresponsebody", "responsebody")).lower()  # fmt: skip
    status = backend_status if backend_status is not None else client_status
    attributes: dict[str, Any] = {
        "category": item.get("category"),
        "operation": f.text(props, "operationid") or f.text(item, "operationName"),
        "http_status": int(status) if status is not None else None,
        "gateway_status": int(client_status) if client_status is not None else None,
        "content_filtered": True if status == 400 and any(m in said for m in _FILTERED) else None,
        "backend_host": host,
        "backend_account": host.split(".", 1)[0] if host else None,
        "api_name": f.text(props, "apiid"),
        "api_version": f.text(props, "apiversion"),
        "gateway_user": f.text(props, "userid"),
        "gateway_subscription": f.text(props, "apimsubscriptionid"),
        "request_bytes": f.number(props, "requestsize", refused=refused, minimum=0),
        "response_bytes": f.number(props, "responsesize", refused=refused, minimum=0),
        "duration_ms": f.number(item, "durationMs", refused=refused) or f.number(props, "totaltime", refused=refused),
        "correlation_id": f.text(item, "correlationId") or f.text(props, "correlationid"),
        **_tokens(props, refused),
    }
    attributes["refused"] = ",".join(refused) or None
    made = _event(item, "diagnostics.gateway", Source.RESOURCE_LOG, entities=entities, attributes=attributes,
                  evidence=evidence, rid=rid, properties=raw)  # fmt: skip
    return [made]


def _backend(url: str | None) -> tuple[str | None, str | None]:
    """The AI account host and the deployment a backend URL names (None for another backend)."""
    if not url:
        return None, None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None, None
    host = (parts.hostname or "").lower()
    if not host.endswith(_AI_HOSTS):
        return None, None
    m = _DEPLOYMENT_PATH.search(parts.path)
    return host, m.group(1) if m else None


def _tokens(props: dict[str, Any], refused: list[str]) -> dict[str, Any]:
    """Token counts under any of their usual spellings (`_TOKEN_FIELDS`), and the total as their
    sum when it is not given."""
    out: dict[str, Any] = {}
    for key in props:
        name = _TOKEN_FIELDS.get(f.compact_key(key)) if isinstance(key, str) else None
        if name:
            out[name] = f.number(props, key, refused=refused, minimum=0)
    parts = [p for p in (out.get("prompt_tokens"), out.get("completion_tokens")) if p is not None]
    if "total_tokens" not in out and parts:
        out["total_tokens"] = min(sum(parts), f.MAX_NUMBER)
    return out


def _is_generic(item: dict[str, Any]) -> bool:
    return _is_record(item)


@normalizer("diagnostics.resource", source=Source.RESOURCE_LOG, accepts=_is_generic)
def resource_log(item: dict[str, Any], evidence: Evidence) -> list[Event]:
    """A resource log of any other Azure resource, in the common schema."""
    rid = f.resource(item, "resourceId", required=True)
    entities: list[Entity] = []
    ip = make_ip(item.get("callerIpAddress"))
    if ip:
        entities.append(ip)
    attributes = {
        "category": item.get("category", item.get("type")),
        "operation": f.text(item, "operationName"),
        "result_type": f.text(item, "resultType"),
        "result_signature": f.text(item, "resultSignature"),
        "level": f.text(item, "level"),
        "correlation_id": f.text(item, "correlationId"),
    }
    return [
        _event(
            item,
            "diagnostics.resource",
            Source.RESOURCE_LOG,
            entities=entities,
            attributes=attributes,
            evidence=evidence,
            rid=rid,
        )
    ]


def _dict(value: Any) -> dict[str, Any]:
    """A nested object that is optional context: anything else counts as absent."""
    return value if isinstance(value, dict) else {}


def _operation(item: dict[str, Any]) -> str | None:
    op = f.text(item, "operationName")
    return op.lower() if op else None


def _account_of(rid: ResourceId) -> ResourceId | None:
    node: ResourceId | None = rid
    while node is not None and node.type is not None and node.type.count("/") > 1:
        node = node.parent()
    return node


def _event(
    item: dict[str, Any],
    name: str,
    source: Source,
    *,
    entities: list[Entity],
    attributes: dict[str, Any],
    evidence: Evidence,
    rid: ResourceId | None = None,
    time: datetime | None = None,
    tenant: str | None = None,
    properties: dict[str, Any] | None = None,
) -> Event:
    category = f.text(item, "category") or f.text(item, "type") or ""
    operation = attributes.get("operation") or ""
    return Event(
        id=f.content_id(item, properties),
        source=source,
        normalizer=name,
        kind=f"{category}:{operation}",
        time=time or f.timestamp(item, "time"),
        evidence=evidence,
        resource=rid if rid is not None else f.resource(item, "resourceId"),
        entities=f.dedupe(entities),
        attributes={k: v for k, v in attributes.items() if v is not None},
        # tenant-level records say their tenant (sign-ins do); others get their subscription's
        tenant=tenant or f.guid(item.get("tenantId")),
    )
