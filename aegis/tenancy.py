"""Which Entra tenant each event belongs to: a dimension of every group, so that no incident spans
two tenants (a managed service provider's customers, or a company's several directories, seen from
one network must not become one incident, and one response).

Policy, in order:
1. a subscription named in `AEGIS_TENANTS` belongs to the tenant given there: the operator's word
   beats the payload's (a subscription belongs to exactly one tenant). A payload that names another
   tenant keeps what it claimed in the `claimed_tenant` attribute;
2. else the tenant the payload names: an alert's resource identifiers, a sign-in's `tenantId`, the
   activity log's token claims, a tenant-level log record's `tenantId`;
3. else the home tenant, `AEGIS_TENANT_ID` (infra sets it to the deployment's tenant);
4. else none: such events group among themselves. A deployment that names no tenant and receives
   alerts that do (continuous export writes it) keeps those apart from its logs wherever a rule
   groups by network alone; a group with a value that names one tenant's thing (an ARM resource,
   an alert) needs no tenant beside it and never carries one (`Detection.by_tenant`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from aegis.events import Event

TENANT_PART = "tenant="  # the first part of a group that carries its tenant: "tenant=<guid>|<values>"


@dataclass(frozen=True, slots=True)
class Tenancy:
    home: str | None = None
    by_subscription: Mapping[str, str] = field(default_factory=dict)  # lower-case subscription id → tenant

    def assign(self, e: Event) -> Event:
        sub = e.resource.subscription if e.resource is not None else None
        configured = self.by_subscription.get(sub) if sub else None
        tenant = configured or e.tenant or self.home
        if tenant == e.tenant:
            return e
        if configured and e.tenant and e.tenant != configured:
            return replace(e, tenant=tenant, attributes={**e.attributes, "claimed_tenant": e.tenant})
        return replace(e, tenant=tenant)


def split_group(group: str) -> tuple[str | None, str]:
    """A group's tenant (None when it carries none) and its values as the rule grouped them."""
    if group.startswith(TENANT_PART):
        head, _, rest = group.partition("|")
        return head.removeprefix(TENANT_PART), rest
    return None, group
