"""Validated parameter types for response actions. Every value a playbook passes to an action
comes from an incident, so from attacker-shaped payloads: it is parsed into the one form the
action accepts, or the step is refused with the field and the reason."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, Field

from aegis.arm import parse_resource_id
from aegis.errors import MalformedInput

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_UPN = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"
)
_MDE_MACHINE = re.compile(r"^[0-9a-f]{40}$")  # Defender for Endpoint machine ids are 40 hex digits
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,62})(?:\.[a-z0-9](?:[a-z0-9-]{0,62}))*$")
_KEY_VAULT_SECRET = re.compile(r"^https://[a-z0-9-]{3,24}\.vault\.azure\.net/secrets/[A-Za-z0-9-]{1,127}/?$")


def _arm_id(value: str, *, provider: str | None = None, kind: str | None = None) -> str:
    try:
        rid = parse_resource_id(value)
    except MalformedInput as exc:
        raise ValueError(str(exc)) from None
    if provider and (rid.provider != provider or rid.type != f"{provider}/{kind}" or rid.name is None):
        raise ValueError(f"not a {provider}/{kind} resource id")
    return rid.id


def _account(value: str) -> str:
    return _arm_id(value, provider="microsoft.cognitiveservices", kind="accounts")


def _subscription(value: str) -> str:
    return _guid(value)


def _guid(value: str) -> str:
    value = value.strip().lower()
    if not _GUID.match(value):
        raise ValueError("not a GUID")
    return value


def _upn(value: str) -> str:
    value = value.strip().lower()
    if not _UPN.match(value):
        raise ValueError("not a user principal name")
    return value


def _user(value: str) -> str:
    """A user by object id or user principal name, as Graph's /users/{id | userPrincipalName} takes it."""
    try:
        return _guid(value)
    except ValueError:
        try:
            return _upn(value)
        except ValueError:
            raise ValueError("not a user object id (GUID) or user principal name") from None


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError("not an IP address or CIDR range") from None


def _machine(value: str) -> str:
    value = value.strip().lower()
    if not _MDE_MACHINE.match(value):
        raise ValueError("not a Defender for Endpoint machine id (40 hex digits)")
    return value


def _host(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    if not _HOST.match(value):
        raise ValueError("not a host name (letters, digits, hyphens and dots)")
    return value


def _secret_uri(value: str) -> str:
    if not _KEY_VAULT_SECRET.match(value.strip()):
        raise ValueError("not a Key Vault secret URI (https://NAME.vault.azure.net/secrets/NAME)")
    return value.strip().rstrip("/")


def _host_ref(value: str) -> str:
    """A host as a protected-assets list names it: an MDE machine id, an Azure VM id, or a host name."""
    for parse in (_machine, _arm_id, _host):
        try:
            return parse(value)
        except ValueError:
            continue
    raise ValueError("not a host name, Defender for Endpoint machine id or Azure resource id")


def _resource_group(value: str) -> str:
    rid = _arm_id(value)
    if rid.count("/") != 4 or not rid.startswith("/subscriptions/") or "/resourcegroups/" not in rid:
        raise ValueError("not a resource group id (/subscriptions/S/resourceGroups/G)")
    return rid


AccountId = Annotated[str, AfterValidator(_account)]
HostRef = Annotated[str, AfterValidator(_host_ref)]
ResourceGroupId = Annotated[str, AfterValidator(_resource_group)]
ResourceIdStr = Annotated[str, AfterValidator(_arm_id)]
SubscriptionId = Annotated[str, AfterValidator(_subscription)]
Guid = Annotated[str, AfterValidator(_guid)]
TeamsChannel = Annotated[str, Field(pattern=r"^19:[A-Za-z0-9_-]+@thread\.(tacv2|skype)$")]
Upn = Annotated[str, AfterValidator(_upn)]
UserRef = Annotated[str, AfterValidator(_user)]
IpRange = Annotated[str, AfterValidator(_ip)]
MachineId = Annotated[str, AfterValidator(_machine)]
HostName = Annotated[str, AfterValidator(_host)]
SecretUri = Annotated[str, AfterValidator(_secret_uri)]
