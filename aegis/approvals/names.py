"""What a person reads for an entity: a short name (the full key on hover), and where to open it.

ARM ids become their resource names (`oai-contoso-prod`, `oai-contoso-prod/gpt-4o` for a
deployment, `hub/project` for a project); links go to the Azure portal for a resource, to the
Defender for Cloud alert blade for an alert (the `alertUri` shape of the Security REST API), and
to the Entra admin center for a user or service principal with an object id, and to Defender XDR for
a machine Defender for Endpoint knows. Keys are canonical
(`aegis.arm`), so a link built from one names only that resource.
"""

from __future__ import annotations

from urllib.parse import quote

from aegis.arm import try_parse_resource_id
from aegis.events import AiProject, AiResource, DefenderAlert, Entity, Host, ModelDeployment, ServicePrincipal, User

PORTAL = "https://portal.azure.com"
ENTRA = "https://entra.microsoft.com"
DEFENDER_XDR = "https://security.microsoft.com"


def label(e: Entity) -> str:
    """A short name for an entity."""
    if isinstance(e, ModelDeployment):
        account = try_parse_resource_id(e.resource_id) if e.resource_id else None
        return f"{account.name}/{e.name}" if account and account.name else e.name
    if isinstance(e, AiResource | AiProject | DefenderAlert):
        return resource_names(e.resource_id)
    if isinstance(e, Host):
        return e.name or (resource_names(e.azure_id) if e.azure_id else e.key)
    if isinstance(e, User):
        return e.upn or e.name or e.key
    if isinstance(e, ServicePrincipal):
        return e.name or e.key
    return e.key


def link(e: Entity, tenant: str | None = None) -> tuple[str, str] | None:
    """(where, url) to open the entity in, or None."""
    at = f"@{tenant}/" if tenant else ""
    if isinstance(e, DefenderAlert):
        rid = try_parse_resource_id(e.resource_id)
        parts = e.resource_id.split("/")
        if rid and rid.subscription and rid.name and "locations" in parts:
            location = parts[parts.index("locations") + 1]
            return "Defender for Cloud", (
                f"{PORTAL}/#{at}blade/Microsoft_Azure_Security/AlertBlade/alertId/{quote(rid.name)}/subscriptionId/"
                f"{rid.subscription}/resourceGroup/{quote(rid.resource_group or '')}/referencedFrom/alertDeepLink/"
                f"location/{quote(location)}"
            )
        return None
    if isinstance(e, Host) and e.mde_machine_id and e.mde_machine_id.isalnum():
        return "Defender for Endpoint", f"{DEFENDER_XDR}/machines/{e.mde_machine_id}/overview"
    resource = e.resource_id if isinstance(e, AiResource | AiProject | ModelDeployment) else None
    if isinstance(e, Host):
        resource = e.azure_id
    if isinstance(e, ModelDeployment) and resource:
        resource = f"{resource}/deployments/{e.name}"
    if resource and try_parse_resource_id(resource):
        return "Azure portal", f"{PORTAL}/#{at}resource{quote(resource)}"
    if isinstance(e, User) and e.object_id:
        return (
            "Entra ID",
            f"{ENTRA}/#view/Microsoft_AAD_UsersAndTenants/UserProfileMenuBlade/~/overview/userId/" + quote(e.object_id),
        )
    if isinstance(e, ServicePrincipal) and e.object_id:
        return "Entra ID", (
            f"{ENTRA}/#view/Microsoft_AAD_IAM/ManagedAppMenuBlade/~/Overview/objectId/{quote(e.object_id)}"
            + (f"/appId/{quote(e.app_id)}" if e.app_id else "")
        )
    return None


def resource_names(resource_id: str) -> str:
    """`.../providers/ns/accounts/a/projects/p` → `a/p`: the names of the resource and its parents."""
    parts = resource_id.split("/")
    if "providers" not in parts:
        return parts[-1] or resource_id
    rest = parts[parts.index("providers") + 2 :]  # type/name pairs after the namespace
    if rest[-2:-1] == ["alerts"]:  # locations/L/alerts/A: the alert's own name
        return rest[-1]
    return "/".join(rest[n] for n in range(1, len(rest), 2)) or resource_id
