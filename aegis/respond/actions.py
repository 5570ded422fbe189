"""The response action registry: what a playbook step may do, declared as data.

Each action registers its parameter model (every field a validated type from `params.py`), the
Azure role or Graph / Defender for Endpoint permission it needs, whether it is reversible and by
which action, whether it disrupts people or service (the response plan must then require an
approval for it), and the exact REST call it makes. The parameter model's docstring carries a
playbook step using the action, in YAML; a test loads every one through the real playbook loader.

The module of the service an action calls (`mde`, `cognitive`, `graph`, `tickets`, `defender`)
attaches its `run` (`@runs(name)`); the executor refuses to start if an action has none. The
playbook and response-plan schemas are generated from this registry (`playbooks.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aegis.registry import Registry
from aegis.respond.params import (
    AccountId,
    Guid,
    HostName,
    IpRange,
    MachineId,
    ResourceIdStr,
    SecretUri,
    TeamsChannel,
    UserRef,
)


class Params(BaseModel):
    """Base of action parameters: strict, immutable, and naming the target the step acts on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def target(self) -> str:
        raise NotImplementedError

    def request(self) -> str:
        """The exact HTTP request(s) this step makes, for the plan, the approver and the audit log."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ActionSpec:
    name: str
    params: type[Params]
    permission: str  # the Azure RBAC role, or the Graph / Defender for Endpoint application permission
    rest: str  # the exact call
    reversible: bool
    inverse: str | None
    disruptive: bool  # stops people or service: the plan must require at least one approval
    summary: str
    impact: str = ""  # what it stops, in the approver's words (every disruptive action says)
    undo: str = ""  # how it is undone, or why it cannot be
    run: Runner | None = None  # (params, context) → what the call returned: attached by the service's module


Runner = Callable[[Any, Any], dict[str, Any]]
ACTIONS: Registry[ActionSpec] = Registry("action")


def action(
    name: str, *, permission: str, rest: str, reversible: bool, disruptive: bool, inverse: str | None = None,
    impact: str = "", undo: str = "",
) -> Callable[[type[Params]], type[Params]]:  # fmt: skip
    def register(model: type[Params]) -> type[Params]:
        doc = (model.__doc__ or "").strip().splitlines()
        ACTIONS.add(name, ActionSpec(name, model, permission, rest, reversible, inverse, disruptive,
                                     doc[0] if doc else "", impact, undo))  # fmt: skip
        return model

    return register


R = TypeVar("R", bound=Runner)


def runs(name: str) -> Callable[[R], R]:
    """Attach the function that carries out action `name`: it takes the validated parameters and
    the executor's context (`connect.Context`), and returns what the call returned (no secrets)."""

    def attach(fn: R) -> R:
        spec = ACTIONS[name]
        if spec.run is not None:
            raise ValueError(f"action {name!r} has a run already")
        ACTIONS.replace(name, replace(spec, run=fn))
        return fn

    return attach


def example(spec: ActionSpec) -> str:
    """The YAML playbook step in the parameter model's docstring (after `Example:`)."""
    doc = spec.params.__doc__ or ""
    if "Example:" not in doc:
        return ""
    lines = doc.split("Example:", 1)[1].splitlines()
    body = [line for line in lines if line.strip()]
    indent = min(len(line) - len(line.lstrip()) for line in body)
    return "\n".join(line[indent:] for line in lines if line.strip() or line == "")


MDE = "https://api.security.microsoft.com/api"
GRAPH = "https://graph.microsoft.com/v1.0"
ARM_ACCOUNT = "https://management.azure.com{account}"
COGNITIVE_API = "2025-06-01"


class _MachineParams(Params):
    """A step on one Defender for Endpoint machine: by its id, or by host name (looked up first)."""

    machine_id: MachineId | None = None
    host_name: HostName | None = None
    comment: str = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _a_machine(self) -> _MachineParams:
        if self.machine_id is None and self.host_name is None:
            raise ValueError("machine_id or host_name: the host has neither a Defender for Endpoint id nor a name")
        return self

    def _lookup(self) -> str:
        if self.machine_id:
            return ""
        return f"GET {MDE}/machines?$filter=computerDnsName eq '{self.host_name}' (exactly one machine); then "

    @property
    def target(self) -> str:
        return f"machine:{self.machine_id}" if self.machine_id else f"host:{self.host_name}"


@action(
    "isolate_endpoint",
    permission="Defender for Endpoint application permission Machine.Isolate (and Machine.Read.All by host name)",
    rest=f"POST {MDE}/machines/{{id}}/isolate  body {{Comment, IsolationType}} (201: a machine action)",
    reversible=True,
    inverse="release_endpoint",
    disruptive=True,
    impact=(
        "The machine loses every network connection but the one to Defender for Endpoint: its users and the "
        "services it runs stop until it is released."
    ),
    undo="release_endpoint lifts the isolation (Defender for Endpoint applies it within minutes).",
)
class IsolateEndpoint(_MachineParams):
    """Isolate a machine from the network with Defender for Endpoint (its MDE connection stays).

    Example:
        name: isolate the host
        action: isolate_endpoint
        for_each: entities.host
        params:
          machine_id: "{{ item.mde_machine_id }}"
          host_name: "{{ item.name }}"
          isolation: Selective
          comment: "Aegis incident {{ incident.id }}"
    """

    isolation: Literal["Selective", "Full"] = "Selective"

    def request(self) -> str:
        body = orjson.dumps({"Comment": self.comment, "IsolationType": self.isolation}).decode()
        return f"{self._lookup()}POST {MDE}/machines/{self.machine_id or '{id}'}/isolate {body}"


@action(
    "release_endpoint",
    permission="Defender for Endpoint application permission Machine.Isolate (and Machine.Read.All by host name)",
    rest=f"POST {MDE}/machines/{{id}}/unisolate  body {{Comment}} (201: a machine action)",
    reversible=True,
    inverse="isolate_endpoint",
    disruptive=False,
    undo="isolate_endpoint isolates it again.",
)
class ReleaseEndpoint(_MachineParams):
    """Release a machine from isolation.

    Example:
        name: release the host
        action: release_endpoint
        for_each: entities.host
        params:
          machine_id: "{{ item.mde_machine_id }}"
          comment: "Aegis incident {{ incident.id }} closed"
    """

    def request(self) -> str:
        body = orjson.dumps({"Comment": self.comment}).decode()
        return f"{self._lookup()}POST {MDE}/machines/{self.machine_id or '{id}'}/unisolate {body}"


@action(
    "contain_ai_resource",
    permission="Azure role Cognitive Services Contributor (Microsoft.CognitiveServices/accounts/write) on the account",
    rest="GET "
    + ARM_ACCOUNT
    + "?api-version=2025-06-01 (the current values, kept for the restore); PATCH "
    + ARM_ACCOUNT
    + "?api-version=2025-06-01 body {properties: {publicNetworkAccess: Disabled} | {networkAcls: {defaultAction: "
    "Deny, ipRules}} | {disableLocalAuth: true}} (a long-running operation: Azure-AsyncOperation polled to Succeeded)",
    reversible=True,
    inverse="restore_ai_resource",
    disruptive=True,
    impact=(
        "Callers the containment shuts out get errors until the account is restored: with key auth turned "
        "off, every app that calls it with an API key (401); with public access denied or narrowed, every "
        "caller outside the allowed networks and private endpoints (403)."
    ),
    undo=(
        "restore_ai_resource puts back the network and authentication settings this step read just before it "
        "changed them (kept in its outcome)."
    ),
)
class ContainAiResource(Params):
    """Contain an AI account: deny public network access, allow only given networks, or turn off key auth.

    Example:
        name: cut key access to the AI account
        action: contain_ai_resource
        params:
          account: "{{ entities.ai_resource }}"
          mode: disable_local_auth
    """

    account: AccountId
    mode: Literal["deny_public_network", "allow_only", "disable_local_auth"]
    allow: list[IpRange] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _allow_only_with_ranges(self) -> ContainAiResource:
        if (self.mode == "allow_only") != bool(self.allow):
            raise ValueError("`allow` lists the networks to keep, with mode allow_only and only then")
        return self

    def properties(self) -> dict[str, Any]:
        """The account properties (REST names) the containment sets."""
        by_mode: dict[str, dict[str, Any]] = {
            "deny_public_network": {"publicNetworkAccess": "Disabled"},
            "allow_only": {"networkAcls": {"defaultAction": "Deny", "ipRules": [{"value": ip} for ip in self.allow]}},
            "disable_local_auth": {"disableLocalAuth": True},
        }
        return by_mode[self.mode]

    def request(self) -> str:
        body = orjson.dumps({"properties": self.properties()}).decode()
        url = f"https://management.azure.com{self.account}?api-version={COGNITIVE_API}"
        return f"GET {url} (the values kept for the restore); PATCH {url} {body}"

    @property
    def target(self) -> str:
        return self.account


@action(
    "restore_ai_resource",
    permission="Azure role Cognitive Services Contributor (Microsoft.CognitiveServices/accounts/write) on the account",
    rest="PATCH " + ARM_ACCOUNT + "?api-version=2025-06-01  body: the values kept by contain_ai_resource",
    reversible=True,
    inverse="contain_ai_resource",
    disruptive=False,
    undo="contain_ai_resource contains the account again.",
)
class RestoreAiResource(Params):
    """Put back the network and authentication settings an earlier containment changed.

    Example:
        name: restore the AI account
        action: restore_ai_resource
        params:
          account: "{{ entities.ai_resource }}"
    """

    account: AccountId

    def request(self) -> str:
        return f"PATCH https://management.azure.com{self.account}?api-version={COGNITIVE_API} (the values kept)"

    @property
    def target(self) -> str:
        return self.account


@action(
    "rotate_ai_keys",
    permission="Azure role Cognitive Services Contributor (Microsoft.CognitiveServices/accounts/listKeys/action, "
    "regenerateKey/action) on the account, and Key Vault Secrets Officer on the secret",
    rest="with a secret: GET {secret}; POST " + ARM_ACCOUNT + "/listKeys; POST .../regenerateKey {keyName: the key "
    "the secret does not hold}; PUT {secret} {value: that new key}; POST .../regenerateKey {keyName: the other}. "
    "Without: POST .../regenerateKey per key (api-version 2025-06-01; Key Vault 7.5)",
    reversible=False,
    disruptive=True,
    impact=(
        "Apps that hold the old key fail to authenticate until they use the new one: at once for a key in a "
        "config file, after their next read for the Key Vault secret when one is given."
    ),
    undo="Cannot be undone: a regenerated key is gone for good. Apps recover by reading the new key.",
)
class RotateAiKeys(Params):
    """Regenerate an AI account's keys; with the Key Vault secret consumers read, move it to a fresh key first.

    Example:
        name: rotate the keys
        action: rotate_ai_keys
        params:
          account: "{{ entities.ai_resource }}"
          key: both
          secret: https://kv-contoso-ai.vault.azure.net/secrets/oai-key
    """

    account: AccountId
    key: Literal["Key1", "Key2", "both"] = "both"
    secret: SecretUri | None = None

    def request(self) -> str:
        arm = f"https://management.azure.com{self.account}"
        keys = ["Key1", "Key2"] if self.key == "both" else [self.key]
        regen = [f'POST {arm}/regenerateKey?api-version={COGNITIVE_API} {{"keyName":"{k}"}}' for k in keys]
        if self.secret is None:
            return "; ".join(regen)
        return (f"GET {self.secret}?api-version=7.5; POST {arm}/listKeys?api-version={COGNITIVE_API}; then, the key "
                f"the secret does not hold first: POST {arm}/regenerateKey?api-version={COGNITIVE_API} {{keyName}}; "
                f"PUT {self.secret}?api-version=7.5 {{value: the new key}}; POST .../regenerateKey {{keyName: the "
                f"key the secret held}} (regenerating: {', '.join(keys)})")  # fmt: skip

    @property
    def target(self) -> str:
        return f"{self.account}#{self.key}"


class _UserParams(Params):
    """A step on one Entra ID user, by object id or user principal name."""

    user: UserRef

    @property
    def target(self) -> str:
        return f"user:{self.user}"


@action(
    "revoke_sessions",
    permission="Microsoft Graph application permission User.RevokeSessions.All",
    rest=f"POST {GRAPH}/users/{{user}}/revokeSignInSessions",
    reversible=False,
    disruptive=True,
    impact=(
        "The user is signed out everywhere and must sign in again (with MFA); apps that act with their "
        "refresh tokens fail until then."
    ),
    undo="Nothing to undo: the user signs in again.",
)
class RevokeSessions(_UserParams):
    """Invalidate a user's refresh tokens and session cookies (they must sign in again).

    Example:
        name: sign the user out everywhere
        action: revoke_sessions
        for_each: entities.user
        params:
          user: "{{ item.key }}"
    """

    def request(self) -> str:
        return f"POST {GRAPH}/users/{self.user}/revokeSignInSessions"


@action(
    "disable_user",
    permission="Microsoft Graph application permission User.EnableDisableAccount.All (and User.Read.All)",
    rest=f"PATCH {GRAPH}/users/{{user}}  body {{accountEnabled: false}}",
    reversible=True,
    inverse="enable_user",
    disruptive=True,
    impact=(
        "The user cannot sign in anywhere; sessions already open end as their tokens expire (within about an "
        "hour, at once with revoke_sessions)."
    ),
    undo="enable_user allows sign-in again.",
)
class DisableUser(_UserParams):
    """Block a user's sign-in.

    Example:
        name: block the user
        action: disable_user
        for_each: entities.user
        params:
          user: "{{ item.key }}"
    """

    def request(self) -> str:
        return f'PATCH {GRAPH}/users/{self.user} {{"accountEnabled":false}}'


@action(
    "enable_user",
    permission="Microsoft Graph application permission User.EnableDisableAccount.All (and User.Read.All)",
    rest=f"PATCH {GRAPH}/users/{{user}}  body {{accountEnabled: true}}",
    reversible=True,
    inverse="disable_user",
    disruptive=False,
    undo="disable_user blocks sign-in again.",
)
class EnableUser(_UserParams):
    """Allow a user to sign in again.

    Example:
        name: unblock the user
        action: enable_user
        params:
          user: "{{ entities.user }}"
    """

    def request(self) -> str:
        return f'PATCH {GRAPH}/users/{self.user} {{"accountEnabled":true}}'


@action(
    "open_ticket",
    permission="local: none; sentinel: Azure role Microsoft Sentinel Responder on the workspace; "
    "servicenow: the itil role; jira: Create issues in the project",
    rest="local: the store's ticket table; sentinel: GET then PUT https://management.azure.com{workspace}/providers/"
    "Microsoft.SecurityInsights/incidents/{uuid5 of the incident}?api-version=2024-09-01; servicenow: GET "
    "/api/now/table/incident?sysparm_query=correlation_id={incident}, then POST /api/now/table/incident or PATCH "
    "/api/now/table/incident/{sys_id}; jira: GET /rest/api/3/search/jql (label aegis-{incident}), then POST "
    "/rest/api/3/issue or PUT /rest/api/3/issue/{key}",
    reversible=False,
    disruptive=False,
)
class OpenTicket(Params):
    """Open (or update: one ticket per incident) a ticket in the SOC's system.

    Example:
        name: open a ticket
        action: open_ticket
        params:
          system: local
          title: "{{ incident.title }}"
          severity: "{{ incident.severity }}"
    """

    system: Literal["local", "sentinel", "servicenow", "jira"] = "local"
    title: str = Field(min_length=1, max_length=250)
    severity: Literal["informational", "low", "medium", "high", "critical"]
    description: str = Field("", max_length=4000)

    def request(self) -> str:
        return f"open or update the incident's ticket in {self.system}: {self.severity}: {self.title}"

    @property
    def target(self) -> str:
        return f"tickets:{self.system}"


@action(
    "notify",
    permission="the Azure Bot on the app's managed identity, installed in the channel's team (Teams app from "
    "`aegis teams manifest`): Graph has no application permission to post in a channel",
    rest="POST https://smba.trafficmanager.net/teams/v3/conversations  body {isGroup: true, channelData: "
    "{channel: {id: channel}}, activity: {type: message, textFormat: xml, text}}  (Bot Connector API)",
    reversible=False,
    disruptive=False,
)
class Notify(Params):
    """Post a message in a Teams channel.

    Example:
        name: tell the SOC
        action: notify
        params:
          team: 0f9a1b2c-3d4e-4f5a-8b6c-7d8e9f0a1b2c
          channel: "19:abcdef0123456789@thread.tacv2"
          text: "{{ incident.severity }}: {{ incident.title }}"
    """

    team: Guid
    channel: TeamsChannel
    text: str = Field(min_length=1, max_length=4000)

    def request(self) -> str:
        return f"POST {GRAPH}/teams/{self.team}/channels/{self.channel}/messages (text, HTML-escaped)"

    @property
    def target(self) -> str:
        return f"teams:{self.team}/{self.channel}"


@action(
    "update_defender_alert",
    permission="Azure role Security Admin on the alert's subscription",
    rest="POST https://management.azure.com{alert}/{state}?api-version=2022-01-01  (no body; 204)",
    reversible=True,
    inverse="update_defender_alert",
    disruptive=False,
)
class UpdateDefenderAlert(Params):
    """Move a Defender for Cloud alert to in progress, resolved or dismissed as the response advances.

    Example:
        name: mark the alerts in progress
        action: update_defender_alert
        for_each: entities.defender_alert
        params:
          alert: "{{ item.key }}"
          state: inProgress
    """

    alert: ResourceIdStr
    state: Literal["inProgress", "resolve", "dismiss", "activate"]

    @model_validator(mode="after")
    def _an_alert(self) -> UpdateDefenderAlert:
        if "/providers/microsoft.security/locations/" not in self.alert or "/alerts/" not in self.alert:
            raise ValueError(
                "not a Defender for Cloud alert id (.../providers/Microsoft.Security/locations/L/alerts/A)"
            )
        return self

    def request(self) -> str:
        return f"POST https://management.azure.com{self.alert}/{self.state}?api-version=2022-01-01"

    @property
    def target(self) -> str:
        return self.alert


def cuts_keys(action: str, params: Mapping[str, Any]) -> bool:
    """The step stops every caller that uses the AI account's keys (a rotation, or keys turned off):
    who those callers are is what an approver must see."""
    return action == "rotate_ai_keys" or (
        action == "contain_ai_resource" and params.get("mode") == "disable_local_auth"
    )
