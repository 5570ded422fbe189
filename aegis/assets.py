"""The AI estate: what an AI account is and exposes, as the inventory saw it (`aegis.inventory`),
its blind spots as findings, and what changed between two looks. Plain data, their JSON codecs and
the rules over them; the store keeps them, the correlator and the response read them.

An asset is parsed from documented Azure shapes: a Resource Graph row of the account, with the
account's model deployments and RAI (content filter) policies as the Cognitive Services REST API
lists them, its diagnostic settings as Azure Monitor lists them, and its subscription's Defender
for Cloud plan for AI services. Tags come from whoever may write them on the resource, so their
values are cut, stripped of control characters and only ever add protection or move a severity
one step (`AssetBook.weigh`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson

from aegis.arm import parse_resource_id
from aegis.errors import MalformedInput
from aegis.events import AiProject, AiResource, Entity, Severity
from aegis.records import SEVERITY_ORDER, safe_text

# what the inventory asks Resource Graph for: AI accounts (Azure OpenAI, AI services, AI Foundry
# resources and their projects) and the AI Foundry hubs and projects of Azure Machine Learning
ACCOUNT_TYPES = ("microsoft.cognitiveservices/accounts", "microsoft.cognitiveservices/accounts/projects")
HUB_TYPE = "microsoft.machinelearningservices/workspaces"
HUB_KINDS = ("hub", "project")
# the blocking thresholds of a content filter, strictest first: Low blocks low severity and above
THRESHOLDS = ("low", "medium", "high")
DEFAULT_THRESHOLD = "medium"  # Microsoft.DefaultV2's, for hate, sexual, violence and self-harm
MICROSOFT_POLICIES = ("microsoft.default", "microsoft.defaultv2")
# the prompt-attack filters the default policy turns on (jailbreak is Prompt Shields for user prompts)
SHIELDS = ("jailbreak", "indirect attack")

FINDING_KINDS = {
    "no_diagnostics": "Its logs do not reach Aegis",
    "no_defender": "Not covered by the Defender for Cloud plan for AI services",
    "local_auth": "Key (local) authentication is on",
    "public_network": "Reachable from the internet without IP rules",
    "weak_content_filter": "A deployment's content filter is weaker than Microsoft's default",
}


@dataclass(frozen=True, slots=True)
class ContentFilter:
    name: str  # hate, sexual, violence, selfharm, jailbreak, protected material text, ...
    source: str  # prompt | completion
    enabled: bool = True
    blocking: bool = True
    threshold: str | None = None  # low | medium | high (None for the shields, which have none)

    def weaker(self) -> str | None:
        """What makes this filter weaker than the default policy's, in words (None: it is not)."""
        if not self.enabled:
            return f"{self.name} ({self.source}) is off"
        if not self.blocking:
            return f"{self.name} ({self.source}) annotates and does not block"
        if self.threshold and THRESHOLDS.index(self.threshold) > THRESHOLDS.index(DEFAULT_THRESHOLD):
            return f"{self.name} ({self.source}) blocks only {self.threshold} severity"
        return None


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    model: str | None = None
    version: str | None = None
    rai_policy: str | None = None  # the policy's name (None: Microsoft's default)
    mode: str | None = None  # the policy's mode: Default, Deferred, Blocking, Asynchronous_filter
    filters: tuple[ContentFilter, ...] = ()  # the custom policy's filters (none for Microsoft's)

    def weakened(self) -> tuple[str, ...]:
        """Why its content filter is weaker than Microsoft.DefaultV2, each reason in words."""
        if (self.rai_policy or "microsoft.defaultv2").lower() in MICROSOFT_POLICIES:
            return ()
        reasons = [w for f in self.filters if (w := f.weaker())]
        named = {f.name.lower() for f in self.filters if f.source == "prompt"}
        reasons += [f"{s} (prompt) is not in the policy" for s in SHIELDS[:1] if s not in named]
        if (self.mode or "").lower() == "asynchronous_filter":
            reasons.append("asynchronous filtering: content streams before it is filtered")
        return tuple(reasons)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    name: str
    event_hub: str | None = None
    namespace: str | None = None  # the Event Hubs namespace of its authorization rule
    workspace: str | None = None  # a Log Analytics workspace's ARM id
    all_logs: bool = False  # every log category (allLogs, or each of the AI categories) is on


@dataclass(frozen=True, slots=True)
class Asset:
    id: str  # canonical (lower-case) ARM id
    name: str
    type: str
    kind: str | None = None  # OpenAI, AIServices, CognitiveServices, Hub, Project, ...
    location: str | None = None
    subscription: str | None = None
    resource_group: str | None = None
    tenant: str | None = None
    endpoint: str | None = None
    public_network_access: str | None = None  # enabled | disabled (None: not said, which Azure reads as enabled)
    default_action: str | None = None  # networkAcls.defaultAction: allow | deny
    ip_rules: tuple[str, ...] = ()
    private_endpoints: tuple[str, ...] = ()
    local_auth: bool | None = None  # keys accepted (disableLocalAuth false); None where it does not apply
    identities: tuple[str, ...] = ()  # systemassigned, and the user-assigned identities' ARM ids
    tags: Mapping[str, str] = field(default_factory=dict)
    owner: str | None = None
    criticality: str | None = None
    data_classification: str | None = None
    deployments: tuple[Deployment, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    monitored: bool | None = None  # a diagnostic setting sends its logs to Aegis's hub (None: not asked)
    defender: bool | None = None  # its subscription's Defender plan for AI services is on (None: not asked)
    hub: str | None = None  # a project's hub or parent account (ARM id)

    @property
    def is_project(self) -> bool:
        """An AI Foundry project: its network and keys are its account's or hub's."""
        return self.type == ACCOUNT_TYPES[1] or (self.type == HUB_TYPE and self.kind == "project")

    @property
    def public(self) -> bool:
        """Reachable from the internet with no IP rule in the way (a project: as its parent is)."""
        if self.is_project:
            return False
        if self.type == HUB_TYPE:
            return self.public_network_access != "disabled" and not self.private_endpoints
        return self.public_network_access != "disabled" and self.default_action != "deny"

    @property
    def has_public_endpoint(self) -> bool:
        """Its endpoint answers from public networks at all (some IP rules may still apply)."""
        return self.public_network_access != "disabled"

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Asset:
        d = orjson.loads(data)
        deployments = tuple(
            Deployment(**{**x, "filters": tuple(ContentFilter(**f) for f in x.get("filters", ()))})
            for x in d.pop("deployments", ())
        )
        diagnostics = tuple(Diagnostic(**x) for x in d.pop("diagnostics", ()))
        tuples = ("ip_rules", "private_endpoints", "identities")
        rest: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in d.items()}
        return cls(**rest, deployments=deployments, diagnostics=diagnostics)


@dataclass(frozen=True, slots=True)
class TagNames:
    """Which tags say an asset's owner, criticality and data classification (matched without case)."""

    owner: tuple[str, ...] = ("owner", "aegis-owner")
    criticality: tuple[str, ...] = ("criticality", "aegis-criticality")
    data_classification: tuple[str, ...] = ("data-classification", "dataclassification", "data_classification")

    def read(self, tags: Mapping[str, str], which: str) -> str | None:
        lowered = {k.lower(): v for k, v in tags.items()}
        for name in getattr(self, which):
            if (value := lowered.get(name.lower())) and value.strip():
                return safe_text(value.strip(), 128)
        return None


# --- parsing the documented shapes ---


def parse_asset(row: Mapping[str, Any], *, tags: TagNames = TagNames(), aegis_hubs: Iterable[str] = (),
                namespaces: Iterable[str] = ()) -> Asset:  # fmt: skip
    """An asset from a Resource Graph row (`id`, `name`, `type`, `kind`, `location`, `tenantId`,
    `tags`, `identity`, `properties`) with what the inventory added under `deployments`,
    `raiPolicies`, `diagnosticSettings` and `defenderForAi` (the plan's `pricingTier`). `aegis_hubs`
    and `namespaces` say what a diagnostic setting must name to reach Aegis (any namespace when
    none is given). Raises `MalformedInput` for a row that is not an AI asset."""
    rid = parse_resource_id(row.get("id"))
    if rid.type not in (*ACCOUNT_TYPES, HUB_TYPE):
        raise MalformedInput(f"{rid.type or rid.id!r} is not an AI account, project or hub")
    props = _obj(row.get("properties"))
    raw_tags = {safe_text(k, 128): safe_text(v, 256) for k, v in _obj(row.get("tags")).items() if isinstance(v, str)}
    acls = _obj(props.get("networkAcls"))
    ip_rules = tuple(
        safe_text(r.get("value"), 64) for r in _list(acls.get("ipRules")) if isinstance(r, dict) and r.get("value")
    )
    endpoints = tuple(
        safe_text(_obj(p.get("properties")).get("privateEndpoint", {}).get("id") or p.get("id") or "", 512)
        for p in _list(props.get("privateEndpointConnections")) if isinstance(p, dict)
    )  # fmt: skip
    identity = _obj(row.get("identity"))
    kind = str(identity.get("type") or "none").lower()
    assigned = tuple(k.lower() for k in _obj(identity.get("userAssignedIdentities")))
    identities = (kind, *assigned) if kind != "none" else assigned
    is_hub = rid.type == HUB_TYPE
    local = props.get("disableLocalAuth")
    policies = {safe_text(_obj(p).get("name"), 128).lower(): _obj(p) for p in _list(row.get("raiPolicies"))}
    diagnostics = tuple(_diagnostic(d) for d in _list(row.get("diagnosticSettings")) if isinstance(d, dict))
    hubs, spaces = {h.lower() for h in aegis_hubs}, {n.lower() for n in namespaces}
    monitored = None
    if "diagnosticSettings" in row:
        monitored = any(d.all_logs and d.event_hub and d.event_hub.lower() in hubs and
                        (not spaces or (d.namespace or "") in spaces) for d in diagnostics)  # fmt: skip
    plan = row.get("defenderForAi")
    return Asset(
        id=rid.id,
        name=rid.name or rid.id,
        type=rid.type or "",
        kind=_word(row.get("kind")),
        location=_word(row.get("location")),
        subscription=rid.subscription,
        resource_group=rid.resource_group,
        tenant=_word(row.get("tenantId")),
        endpoint=safe_text(props["endpoint"], 256) if isinstance(props.get("endpoint"), str) else None,
        public_network_access=_word(props.get("publicNetworkAccess")),
        default_action=_word(acls.get("defaultAction")),
        ip_rules=ip_rules,
        private_endpoints=tuple(e for e in endpoints if e),
        local_auth=None if is_hub or rid.type == ACCOUNT_TYPES[1] else local is not True,
        identities=identities,
        tags=raw_tags,
        owner=tags.read(raw_tags, "owner"),
        criticality=(tags.read(raw_tags, "criticality") or "").lower() or None,
        data_classification=tags.read(raw_tags, "data_classification"),
        deployments=tuple(_deployment(_obj(d), policies) for d in _list(row.get("deployments")) if isinstance(d, dict)),
        diagnostics=diagnostics,
        monitored=monitored,
        defender=None if plan is None else str(plan).lower() == "standard",
        hub=_hub(rid.id, rid.type, props),
    )


_AI_CATEGORIES = frozenset({"audit", "requestresponse", "trace", "azureopenairequestusage"})


def _diagnostic(d: Mapping[str, Any]) -> Diagnostic:
    props = _obj(d.get("properties"))
    rule = props.get("eventHubAuthorizationRuleId")
    namespace = None
    if isinstance(rule, str) and "/namespaces/" in rule.lower():
        namespace = rule.lower().split("/namespaces/", 1)[1].split("/", 1)[0] or None
    logs = [x for x in _list(props.get("logs")) if isinstance(x, dict) and x.get("enabled") is True]
    groups = {str(x.get("categoryGroup", "")).lower() for x in logs}
    categories = {str(x.get("category", "")).lower() for x in logs}
    return Diagnostic(
        name=safe_text(d.get("name") or "", 128),
        event_hub=safe_text(props["eventHubName"], 256) if isinstance(props.get("eventHubName"), str) else None,
        namespace=namespace,
        workspace=safe_text(props["workspaceId"], 512).lower() if isinstance(props.get("workspaceId"), str) else None,
        all_logs="alllogs" in groups
        or ("audit" in groups and _AI_CATEGORIES - {"audit"} <= categories)
        or _AI_CATEGORIES - {"azureopenairequestusage"} <= categories,
    )


def _deployment(d: Mapping[str, Any], policies: Mapping[str, Mapping[str, Any]]) -> Deployment:
    props = _obj(d.get("properties"))
    model = _obj(props.get("model"))
    policy_name = props.get("raiPolicyName") if isinstance(props.get("raiPolicyName"), str) else None
    policy = _obj(policies.get((policy_name or "").lower(), {}).get("properties"))
    filters = tuple(
        ContentFilter(
            name=safe_text(f.get("name") or f.get("policyName") or "", 64).lower(),
            source=safe_text(f.get("source") or "", 16).lower(),
            enabled=f.get("enabled") is not False,
            blocking=f.get("blocking") is not False,
            # severityThreshold since 2023-10-01-preview; allowedContentLevel (the same scale) before
            threshold=t if (t := str(f.get("severityThreshold") or f.get("allowedContentLevel") or "").lower())
            in THRESHOLDS else None,
        )
        for f in _list(policy.get("contentFilters")) if isinstance(f, dict)
    )  # fmt: skip
    return Deployment(
        name=safe_text(d.get("name") or "", 128),
        model=safe_text(model["name"], 128) if isinstance(model.get("name"), str) else None,
        version=safe_text(model["version"], 64) if isinstance(model.get("version"), str) else None,
        rai_policy=safe_text(policy_name, 128) if policy_name else None,
        mode=safe_text(policy["mode"], 32) if isinstance(policy.get("mode"), str) else None,
        filters=filters,
    )


def _hub(rid: str, rtype: str | None, props: Mapping[str, Any]) -> str | None:
    if rtype == "microsoft.cognitiveservices/accounts/projects":
        return rid.rsplit("/projects/", 1)[0]
    hub = props.get("hubResourceId")
    if isinstance(hub, str):
        try:
            return parse_resource_id(hub).id
        except MalformedInput:
            return None
    return None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _word(value: Any) -> str | None:
    return safe_text(value, 128).lower() if isinstance(value, str) and value.strip() else None


# --- blind spots ---


@dataclass(frozen=True, slots=True)
class Finding:
    """A blind spot of one asset: what it is, what shows it, and the exact fix. Open until a later
    refresh shows it fixed (`closed`), and again if it comes back."""

    id: str
    kind: str  # a key of FINDING_KINDS
    asset: str
    asset_name: str
    title: str
    evidence: tuple[str, ...]
    fix: str
    severity: Severity
    opened: datetime
    seen: datetime  # the newest refresh that showed it
    closed: datetime | None = None
    owner: str | None = None
    subject: str = ""  # what of the asset it is about (a deployment's name), "" for the asset itself

    @property
    def open(self) -> bool:
        return self.closed is None

    def to_json(self) -> bytes:
        return orjson.dumps(self, option=orjson.OPT_UTC_Z)

    @classmethod
    def from_json(cls, data: bytes | str) -> Finding:
        d = orjson.loads(data)
        times = {k: datetime.fromisoformat(d[k]) if d.get(k) else None for k in ("opened", "seen", "closed")}
        return cls(**{**d, **times, "evidence": tuple(d["evidence"]), "severity": Severity(d["severity"])})


def finding_id(asset: str, kind: str, subject: str = "") -> str:
    return "f-" + hashlib.sha256(f"{asset}|{kind}|{subject}".encode()).hexdigest()[:20]


def blind_spots(asset: Asset, *, infra_hub: str = "ai-diagnostics") -> list[tuple[str, str, tuple[str, ...], str]]:
    """(kind, subject, evidence, fix) of each blind spot the asset shows now."""
    found: list[tuple[str, str, tuple[str, ...], str]] = []
    if asset.monitored is False:
        have = [f"{d.name}: {d.event_hub or d.workspace or 'elsewhere'}" + ("" if d.all_logs else " (not every log)")
                for d in asset.diagnostics]  # fmt: skip
        found.append(("no_diagnostics", "", tuple(have) or ("no diagnostic setting",),
                      f"add {asset.id} to the infra parameter aiAccountIds (azd env set AEGIS_AI_ACCOUNT_IDS, "
                      f"comma-separated) and, if {asset.location or 'its region'} is not the deployment's, to "
                      f"diagnosticsRegions (AEGIS_DIAGNOSTICS_REGIONS); then azd provision: a diagnostic setting "
                      f"sends allLogs to the {infra_hub} hub"))  # fmt: skip
    if asset.defender is False:
        found.append(("no_defender", "", (f"subscription {asset.subscription}: plan AI is not Standard",),
                      "turn on the Defender for Cloud plan for AI services: the infra parameter enableDefenderForAi="
                      f"true on that subscription, or az security pricing create -n AI --tier standard "
                      f"--subscription {asset.subscription}"))  # fmt: skip
    if asset.local_auth:
        found.append(("local_auth", "", ("properties.disableLocalAuth is false: its keys are accepted",),
                      f"give its callers Entra ID roles (Cognitive Services OpenAI User), then set "
                      f"properties.disableLocalAuth=true: az resource update --ids {asset.id} --set "
                      f"properties.disableLocalAuth=true"))  # fmt: skip
    if asset.public:
        said = f"publicNetworkAccess {asset.public_network_access or 'not set (enabled)'}"
        if asset.type != HUB_TYPE:
            said += f", networkAcls.defaultAction {asset.default_action or 'not set (allow)'}"
        found.append(
            (
                "public_network",
                "",
                (said, f"{len(asset.ip_rules)} IP rule(s), {len(asset.private_endpoints)} private endpoint(s)"),
                "set properties.publicNetworkAccess=Disabled and reach it through a private endpoint, or "
                "properties.networkAcls.defaultAction=Deny with ipRules for the networks that call it",
            )
        )
    for d in asset.deployments:
        if reasons := d.weakened():
            evidence = (f"deployment {d.name}: policy {d.rai_policy}", *reasons)
            fix = (
                f"set deployment {d.name}'s properties.raiPolicyName to Microsoft.DefaultV2, or put the policy "
                f"{d.rai_policy}'s filters back to blocking at medium with the jailbreak shield on"
            )
            found.append(("weak_content_filter", d.name, evidence, fix))
    return found


def reconcile(
    assets: Sequence[Asset], previous: Iterable[Finding], now: datetime, *,
    severity: Severity = Severity.LOW, infra_hub: str = "ai-diagnostics",
) -> list[Finding]:  # fmt: skip
    """Every finding after a refresh: those it shows (opened now, or kept open since they were),
    those no longer shown closed at `now`, and the closed ones as they were. A finding of an asset
    the refresh no longer lists is closed too (the asset is gone)."""
    before = {f.id: f for f in previous}
    out: dict[str, Finding] = {}
    for a in assets:
        for kind, subject, evidence, fix in blind_spots(a, infra_hub=infra_hub):
            ident = finding_id(a.id, kind, subject)
            old = before.get(ident)
            title = f"{FINDING_KINDS[kind]}: {a.name}" + (f" / {subject}" if subject else "")
            opened = old.opened if old is not None and old.open else now
            out[ident] = Finding(ident, kind, a.id, a.name, title, evidence, fix, severity, opened, now,
                                 owner=a.owner, subject=subject)  # fmt: skip
    for ident, old in before.items():
        if ident not in out:
            out[ident] = old if not old.open else replace(old, closed=now)
    return sorted(out.values(), key=lambda f: (not f.open, f.asset, f.kind, f.subject))


# --- changes between two refreshes ---


@dataclass(frozen=True, slots=True)
class AssetChange:
    time: datetime
    asset: str
    what: str  # the setting: public_network_access, local_auth, deployment gpt-4o content filter, ...
    before: str
    after: str
    weaker: bool  # the change opens something (relaxed a filter, turned keys or public access on)

    def to_json(self) -> bytes:
        return orjson.dumps(self, option=orjson.OPT_UTC_Z)

    @classmethod
    def from_json(cls, data: bytes | str) -> AssetChange:
        d = orjson.loads(data)
        return cls(**{**d, "time": datetime.fromisoformat(d["time"])})

    @property
    def key(self) -> str:
        digest = hashlib.sha256(f"{self.asset}|{self.what}|{self.after}".encode()).hexdigest()[:16]
        return f"{self.time.isoformat()}-{digest}"


def _shown(value: object) -> str:
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def changes(old: Asset | None, new: Asset | None, now: datetime) -> list[AssetChange]:
    """What changed from `old` to `new` (either None: the asset appeared or went)."""
    if old is None or new is None:
        if old is None and new is None:
            return []
        which = new or old
        assert which is not None
        return [AssetChange(now, which.id, "asset", "absent" if old is None else "listed",
                            "listed" if old is None else "gone", weaker=old is None)]  # fmt: skip
    out: list[AssetChange] = []

    def note(what: str, before: object, after: object, weaker: bool) -> None:
        if before != after:
            out.append(AssetChange(now, new.id, what, _shown(before), _shown(after), weaker))

    note("public_network_access", old.public_network_access, new.public_network_access, new.public and not old.public)
    note("network default action", old.default_action, new.default_action, new.public and not old.public)
    note("ip rules", old.ip_rules, new.ip_rules, len(new.ip_rules) > len(old.ip_rules) and new.public)
    note("private endpoints", old.private_endpoints, new.private_endpoints, False)
    note("local (key) auth", old.local_auth, new.local_auth, bool(new.local_auth) and not old.local_auth)
    note("diagnostics to Aegis", old.monitored, new.monitored, new.monitored is False and old.monitored is True)
    note("Defender plan for AI", old.defender, new.defender, new.defender is False and old.defender is True)
    note("owner", old.owner, new.owner, False)
    note("criticality", old.criticality, new.criticality, False)
    olds = {d.name.lower(): d for d in old.deployments}
    news = {d.name.lower(): d for d in new.deployments}
    for name in sorted(olds.keys() | news.keys()):
        a, b = olds.get(name), news.get(name)
        if a is None or b is None:
            note(f"deployment {name}", "absent" if a is None else "listed", "listed" if a is None else "gone", False)
            continue
        note(f"deployment {name} model", a.model, b.model, False)
        before, after = a.weakened(), b.weakened()
        if (a.rai_policy, a.filters, a.mode) != (b.rai_policy, b.filters, b.mode):
            out.append(AssetChange(now, new.id, f"deployment {name} content filter",
                                   f"{a.rai_policy or 'default'}" + (f": {'; '.join(before)}" if before else ""),
                                   f"{b.rai_policy or 'default'}" + (f": {'; '.join(after)}" if after else ""),
                                   weaker=len(after) > len(before) or bool(set(after) - set(before))))  # fmt: skip
    return out


# --- what incidents and the response read ---


DEFAULT_WEIGHTS = {"critical": 1, "low": -1}  # criticality: steps a severity moves (any other: none)


@dataclass(frozen=True)
class AssetBook:
    """The inventory as the correlator and the response read it: an asset by ARM id (a child's
    id finds its account), by account name (what a gateway's backend host names) and by endpoint."""

    assets: Sequence[Asset] = ()
    weights: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    _by_id: dict[str, Asset] = field(default_factory=dict, init=False, repr=False)
    _by_name: dict[str, Asset] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        names: dict[str, list[Asset]] = {}
        for a in self.assets:
            self._by_id[a.id] = a
            names.setdefault(a.name.lower(), []).append(a)
        self._by_name.update({n: found[0] for n, found in names.items() if len(found) == 1})  # ambiguous: none

    def __len__(self) -> int:
        return len(self.assets)

    def get(self, resource_id: str | None) -> Asset | None:
        """The asset of an ARM id, or of the account or hub it is a child of."""
        if not resource_id:
            return None
        rid = resource_id.lower()
        while rid:
            if (found := self._by_id.get(rid)) is not None:
                return found
            if "/providers/" not in rid or rid.count("/") <= 8:
                return None
            rid = rid.rsplit("/", 2)[0]
        return None

    def named(self, name: str | None) -> Asset | None:
        return self._by_name.get(name.lower()) if name else None

    def parents(self, entities: Sequence[Entity]) -> tuple[Entity, ...] | None:
        """The entities with each hub-based AI Foundry project (an Azure Machine Learning workspace
        of kind Project, whose hub only ARM names) standing as its hub, the project kept as an
        `AiProject`: so it joins the hub's alerts and logs. None when none is such a project."""
        out: dict[tuple[str, str], Entity] = {}
        changed = False
        for e in entities:
            asset = self._by_id.get(e.resource_id) if isinstance(e, AiResource) else None
            if asset is None or asset.type != HUB_TYPE or not asset.is_project or not asset.hub:
                out.setdefault((e.type, e.key), e)
                continue
            hub = self._by_id.get(asset.hub)
            project = AiProject(resource_id=asset.id, name=asset.name, account=asset.hub, origin=e.origin)
            parent = AiResource(resource_id=asset.hub, name=hub.name if hub else asset.hub.rsplit("/", 1)[-1],
                                origin=e.origin)  # fmt: skip
            out.setdefault((project.type, project.key), project)
            out.setdefault((parent.type, parent.key), parent)
            changed = True
        return tuple(out.values()) if changed else None

    def of(self, resource_ids: Iterable[str | None]) -> Asset | None:
        """The most critical asset among these ids (an incident's AI resources)."""
        found = [a for r in resource_ids if (a := self.get(r)) is not None]
        return max(found, key=lambda a: self.weights.get(a.criticality or "", 0), default=None)

    def weigh(self, severity: Severity, asset: Asset | None, *, alerted: bool) -> tuple[Severity, str | None]:
        """`severity` moved by the asset's criticality (`weights`, one step at most either way),
        and what moved it; an incident holding a Defender alert is never weighed down."""
        if asset is None or not asset.criticality:
            return severity, None
        step = max(-1, min(1, self.weights.get(asset.criticality, 0)))
        if step == 0 or (step < 0 and alerted):
            return severity, None
        level = min(max(SEVERITY_ORDER.index(severity) + step, 0), len(SEVERITY_ORDER) - 1)
        if SEVERITY_ORDER[level] == severity:
            return severity, None
        way = "higher" if step > 0 else "lower"
        return SEVERITY_ORDER[level], f"asset {asset.name} is {asset.criticality}: 1 {way}"


def protected_tag(tags: Mapping[str, str] | None, protected: Mapping[str, str]) -> tuple[str, str] | None:
    """The first of `tags` the plan protects (`protected`: name → value, `*` for any; names and
    values matched without case), as (name, the value it carries); None when none is."""
    have = {k.lower(): v for k, v in (tags or {}).items()}
    for name, value in protected.items():
        got = have.get(name.lower())
        if got is not None and (value == "*" or got.lower() == value.lower()):
            return name, got
    return None


def cached_book(
    read: Callable[[], Sequence[Asset]], *, weights: Mapping[str, int] | None = None, ttl: float = 300.0,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[], AssetBook]:  # fmt: skip
    """The inventory as a book, read again at most every `ttl` seconds (a worker reads it per batch)."""
    held: list[tuple[float, AssetBook]] = []

    def book() -> AssetBook:
        now = clock()
        if not held or now - held[0][0] >= ttl:
            held[:] = [(now, AssetBook(read(), weights=dict(weights if weights is not None else DEFAULT_WEIGHTS)))]
        return held[0][1]

    return book


def context(asset: Asset) -> dict[str, Any]:
    """What an incident carries of its asset (`Incident.attributes["asset"]`)."""
    return {k: v for k, v in {
        "id": asset.id, "name": asset.name, "owner": asset.owner, "criticality": asset.criticality,
        "data_classification": asset.data_classification, "public": asset.has_public_endpoint,
        "local_auth": asset.local_auth,
    }.items() if v is not None}  # fmt: skip


@dataclass(frozen=True, slots=True)
class KeyCaller:
    """A caller the diagnostic logs show using an account's keys (no Entra identity on the request):
    what breaks when the keys are rotated. `last_seen` is kept to the nearest write (`aegis.pipeline`)."""

    account: str  # the account's ARM id
    ip: str | None
    user_agent: str | None
    deployment: str | None
    last_seen: datetime

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.account}|{self.ip}|{self.user_agent}|{self.deployment}".encode()).hexdigest()[:32]

    def to_json(self) -> bytes:
        return orjson.dumps(self, option=orjson.OPT_UTC_Z)

    @classmethod
    def from_json(cls, data: bytes | str) -> KeyCaller:
        d = orjson.loads(data)
        return cls(**{**d, "last_seen": datetime.fromisoformat(d["last_seen"])})

    def describe(self) -> str:
        parts = [f"from {self.ip}" if self.ip else "from an unknown network",
                 f"as {self.user_agent!r}" if self.user_agent else "",
                 f"on {self.deployment}" if self.deployment else ""]  # fmt: skip
        return " ".join(p for p in parts if p) + f", last {self.last_seen:%Y-%m-%d %H:%M} UTC"
