"""Microsoft Graph (msgraph-sdk): who the incident's people and applications are.

Users: display name, department, job title, whether the account is enabled, and the manager.
Service principals: the application, whether it is enabled, and its owners. Graph permissions:
`User.Read.All`, `Application.Read.All`.
"""

from __future__ import annotations

from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.service_principal import ServicePrincipal as GraphServicePrincipal
from msgraph.generated.models.user import User as GraphUser
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from aegis.directory import GRAPH
from aegis.enrich.base import Context, Skip, enricher, error_text
from aegis.events import ServicePrincipal, User
from aegis.records import Incident, Principal
from aegis.respond import graph

USER_FIELDS = ["id", "displayName", "userPrincipalName", "department", "jobTitle", "accountEnabled"]
MAX_EACH = 5


@enricher("graph")
def graph_context(incident: Incident, ctx: Context) -> dict[str, Any]:
    """The users (department, manager, enabled) and service principals (owners) in the incident."""
    users = sorted({e.key for e in incident.entities if isinstance(e, User)})[:MAX_EACH]
    apps = sorted({(e.object_id or "", e.app_id or "") for e in incident.entities if isinstance(e, ServicePrincipal)})
    if not users and not apps:
        raise Skip("no user or service principal in the incident")
    if ctx.connections is None:
        raise Skip("no Graph connection configured")

    async def work(client: GraphServiceClient) -> dict[str, Any]:
        found_users = [await _answer(_user(client, u), u) for u in users]
        found_apps = [await _answer(_service_principal(client, oid, app), oid or app) for oid, app in apps[:MAX_EACH]]
        return {"users": found_users, "service_principals": found_apps}

    return graph.using(ctx.connections, work)


async def _answer(work: Any, key: str) -> dict[str, Any]:
    try:
        return await work  # type: ignore[no-any-return]
    except Exception as exc:
        return {"id": key, "error": error_text(exc)}


async def _user(client: GraphServiceClient, key: str) -> dict[str, Any]:
    """GET /users/{id | upn}?$select=...; GET /users/{id | upn}/manager."""
    query = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=USER_FIELDS)
    item = client.users.by_user_id(key)
    u = await item.get(request_configuration=RequestConfiguration(query_parameters=query))
    if u is None:
        return {"id": key, "error": "not found"}
    manager = None
    try:
        m = await item.manager.get()
        if isinstance(m, GraphUser):
            manager = {"id": m.id, "name": m.display_name, "upn": m.user_principal_name}
    except Exception:  # noqa: S110  (no manager is an answer too: Graph says 404)
        pass
    return {"id": u.id, "upn": u.user_principal_name, "name": u.display_name, "department": u.department,
            "job_title": u.job_title, "account_enabled": u.account_enabled, "manager": manager}  # fmt: skip


async def _service_principal(client: GraphServiceClient, object_id: str, app_id: str) -> dict[str, Any]:
    """GET /servicePrincipals/{id} (or (appId='...')); GET .../owners."""
    item = (client.service_principals.by_service_principal_id(object_id) if object_id
            else client.service_principals_with_app_id(app_id))  # fmt: skip
    sp = await item.get()
    if not isinstance(sp, GraphServicePrincipal):
        return {"id": object_id or app_id, "error": "not found"}
    owners = await client.service_principals.by_service_principal_id(sp.id or object_id).owners.get()
    names = [
        {"id": o.id, "name": getattr(o, "display_name", None)}
        for o in (owners.value if owners and owners.value else [])
    ]
    return {"id": sp.id, "app_id": sp.app_id, "name": sp.display_name, "enabled": sp.account_enabled,
            "type": sp.service_principal_type, "owners": names[:20]}  # fmt: skip


def principals_of(result: dict[str, Any]) -> list[Principal]:
    """What Graph answered, as the directory's entries: its word on who each object id is."""
    out = []
    for u in result.get("users", ()):
        if u.get("id") and not u.get("error"):
            out.append(Principal("user", str(u["id"]).lower(), (u.get("upn") or "").lower() or None, u.get("name"),
                                 source=GRAPH))  # fmt: skip
    for sp in result.get("service_principals", ()):
        if sp.get("id") and not sp.get("error"):
            kind = "managed_identity" if str(sp.get("type") or "").lower() == "managedidentity" else "service_principal"
            out.append(Principal(kind, str(sp["id"]).lower(), None, sp.get("name"), sp.get("app_id"), source=GRAPH))
    return out
