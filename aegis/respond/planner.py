"""What the response plan would do for an incident: the exact steps, targets and parameters, the
approvals each needs, and the steps it refuses and why. Pure: it runs nothing and writes nothing
(the executor that records and runs steps builds on it).

Each planned step has an idempotency key: a digest of the incident, playbook, step and its
parameters, so the same step for the same incident is recognised however often it is planned.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields as dc_fields
from typing import Any

import orjson
from pydantic import ValidationError

from aegis.assets import AssetBook, KeyCaller, protected_tag
from aegis.events import ENTITY_TYPES, AiResource, Entity, Host, Ip, Origin, ServicePrincipal, User, union
from aegis.records import SEVERITY_ORDER, Incident, PlannedStep
from aegis.respond import templates
from aegis.respond.actions import ACTIONS, ContainAiResource, Params, RotateAiKeys, cuts_keys
from aegis.respond.playbooks import Expected, Playbook, Response, ResponsePlan, Step
from aegis.yamlfiles import describe

_TARGET_FIELDS = ("user", "machine_id", "host_name")  # the parameters that name a user or a host


def plan(
    incident: Incident, response: Response, *, playbooks: list[str] | None = None,
    learned: frozenset[str] = frozenset(), assets: AssetBook | None = None,
    key_callers: Callable[[str], Sequence[KeyCaller]] | None = None,
) -> list[PlannedStep]:  # fmt: skip
    """The steps of every playbook the plan's triggers select for this incident (or of `playbooks`), in
    order. `learned`: identifiers earlier incidents paired with a protected user (protected too).
    `assets`: the inventory, which says what an AI account exposes and which tags it carries (a
    step that would change nothing is refused, a protected tag protects); `key_callers`: who an
    account's logs show using its keys (what a key rotation or turning keys off breaks)."""
    out: list[PlannedStep] = []
    context = incident_context(incident)
    context["_aliases"] = aliases_of(incident)
    context["_learned"] = learned
    context["_sources"] = response.corroborators
    context["_assets"] = assets
    context["_callers"] = key_callers
    if playbooks is None:
        work = expected_work(incident, response.plan)
        if work is not None:
            context["_expected"] = work.name  # triggered steps only: a playbook an engineer asks for is theirs
        playbooks = _triggered(incident, response.plan, work)
    for name in playbooks:
        book = response.playbooks[name]
        for step in book.steps:
            out += _steps(incident, book, step, context, response.plan)
    return out


def playbooks_for(incident: Incident, plan_: ResponsePlan) -> list[str]:
    """The playbooks the plan's triggers select, at the incident's severity (held to an expected
    work's, when the incident is that work: `expected_work`)."""
    return _triggered(incident, plan_, expected_work(incident, plan_))


def _triggered(incident: Incident, plan_: ResponsePlan, work: Expected | None) -> list[str]:
    severity = incident.severity if work is None else min(incident.severity, work.severity, key=SEVERITY_ORDER.index)
    level = SEVERITY_ORDER.index(severity)
    names: list[str] = []
    for trigger in plan_.triggers:
        if trigger.detections and incident.detection not in trigger.detections:
            continue
        if level < SEVERITY_ORDER.index(trigger.min_severity):
            continue
        names += [n for n in trigger.playbooks if n not in names]
        if trigger.detections:  # a specific trigger matched: the catch-all ones after it do not add more
            break
    return names


def incident_context(incident: Incident) -> dict[str, Any]:
    """The values placeholders may name (`templates.py`), as a flat map of path → value."""
    summary = incident.summary()
    context: dict[str, Any] = {f"incident.{k}": summary[k] for k in templates.INCIDENT_FIELDS}
    context["incident.event_ids"] = list(incident.event_ids)
    for kind, cls in ENTITY_TYPES.items():
        of_kind = [e for e in incident.entities if type(e) is cls]
        context[f"entities.{kind}"] = [e.key for e in of_kind]
        for f in dc_fields(cls):
            if f.name != "type":
                context[f"entities.{kind}.{f.name}"] = [v for e in of_kind if (v := getattr(e, f.name)) is not None]
        context[f"_items.{kind}"] = of_kind
    return context


def _steps(
    incident: Incident, book: Playbook, step: Step, context: dict[str, Any], plan_: ResponsePlan
) -> list[PlannedStep]:
    if step.for_each is None:
        return [_one(incident, book, step, context, plan_)]
    kind = step.for_each.split(".")[1]
    items: list[Any] = context.get(f"_items.{kind}", context.get(step.for_each, []))
    if kind == "user":
        items = people(items)
    return [_one(incident, book, step, {**context, **_item(x)}, plan_) for x in items]


def people(users: list[Any]) -> list[Any]:
    """Users as the people they are: user entities that share a UPN or an object id (and do not
    carry two different object ids) are one, with the fields of each: one person, one step."""
    groups: list[tuple[set[str], User]] = []
    for user in users:
        ids, merged = identifiers(user), user
        for g in [g for g in groups if g[0] & ids and _compatible(g[1], user)]:
            ids |= g[0]
            merged = union(g[1], merged)
            groups.remove(g)
        groups.append((ids, merged))
    return [u for _, u in groups]


def _compatible(a: User, b: User) -> bool:
    return not (a.object_id and b.object_id and a.object_id.lower() != b.object_id.lower())


def _item(x: Entity | str) -> dict[str, Any]:
    if isinstance(x, str):
        return {"item": x}
    values = {f"item.{f.name}": getattr(x, f.name) for f in dc_fields(x) if f.name != "type"}
    return {"item": x.key, "item.key": x.key, "_item": x, **values}


def identifiers(e: Entity) -> set[str]:
    """The ways a plan or a parameter may name this user or host (lower case)."""
    if isinstance(e, User):
        found = [e.upn, e.object_id]
    elif isinstance(e, Host):
        name = (e.name or "").lower()
        found = [name, name.split(".")[0], e.azure_id, e.mde_machine_id]
    else:
        found = []
    return {v.lower() for v in found if v}


def aliases_of(incident: Incident) -> dict[str, frozenset[str]]:
    """identifier → every identifier of the users and hosts that carry it in this incident: an alert
    that pairs a UPN with an object id makes them one person for the protected-assets check."""
    out: dict[str, frozenset[str]] = {}
    for e in incident.entities:
        ids = identifiers(e)
        for i in ids:
            out[i] = out.get(i, frozenset()) | ids
    return out


def _one(incident: Incident, book: Playbook, step: Step, context: dict[str, Any], plan_: ResponsePlan) -> PlannedStep:
    spec = ACTIONS[step.action]
    raw = {name: templates.render(value, context) for name, value in step.params.items()}
    approvals = plan_.approvals_for(step.action)
    base = {"incident": incident.id, "playbook": book.id, "step": step.name, "action": step.action}
    try:
        params: Params = spec.params.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        shown = {k: v for k, v in raw.items() if v is not None}
        return PlannedStep(_key(base, shown), **base, target="", params=shown, approvals=approvals,
                           status="refused", reason=f"parameters: {describe(exc)}", aliases=(),
                           corroboration="")  # fmt: skip
    values = params.model_dump(mode="json")
    known: dict[str, frozenset[str]] = context.get("_aliases", {})
    named = identifiers(context["_item"]) if isinstance(context.get("_item"), Entity) else set()
    named |= {str(v).lower() for k, v in values.items() if k in _TARGET_FIELDS and v}
    aliases = tuple(sorted(set().union(named, *(known.get(i, ()) for i in named))))
    reason = protected(params, plan_, aliases, context.get("_learned", frozenset()))
    inventory: AssetBook | None = context.get("_assets")
    asset = inventory.get(values.get("account")) if inventory is not None else None
    if reason is None and asset is not None:
        hit = protected_tag(asset.tags, plan_.protected.tags)
        reason = (f"{asset.name} is protected by the response plan: the inventory shows its tag {hit[0]}={hit[1]}"
                  if hit else _no_effect(params, asset))  # fmt: skip
    if reason is None and spec.disruptive:
        expected = context.get("_expected")
        reason = (
            _untrusted_target(incident, params, context.get("_item"))
            or (f"expected work ({expected}, in the response plan): no disruptive step is planned for it"
                if expected else None)
            or _misfit(incident, params)
        )  # fmt: skip
    corroboration = ""
    if spec.disruptive:  # until a source confirms the evidence, one approval more (`corroborate.py` settles it)
        corroboration = PENDING if context.get("_sources") else NO_SOURCE
        approvals = uncorroborated_approvals(approvals)
    if reason:
        status = "refused"
    elif approvals:
        status = "awaiting_approval"
    else:
        status = "dry_run" if plan_.mode == "dry_run" else "approved"  # approved by the plan itself
    return PlannedStep(_key(base, values), **base, target=params.target, params=values, approvals=approvals,
                       status=status, reason=reason, aliases=aliases, corroboration=corroboration,
                       dependents=_dependents(step.action, values, context.get("_callers")))  # fmt: skip


MAX_DEPENDENTS = 20


def _dependents(
    action: str, values: dict[str, Any], callers: Callable[[str], Sequence[KeyCaller]] | None
) -> tuple[str, ...]:
    """Who breaks when the step runs: the callers using the account's keys, for a key rotation or
    turning keys off (most recent first, at most `MAX_DEPENDENTS`, and how many more)."""
    if not cuts_keys(action, values) or callers is None:
        return ()
    found = callers(str(values["account"]))
    shown = tuple(c.describe() for c in found[:MAX_DEPENDENTS])
    more = len(found) - len(shown)
    return (*shown, f"and {more} more") if more > 0 else shown


def _no_effect(params: Params, asset: Any) -> str | None:
    """Why the step would change nothing on the account as the inventory last saw it."""
    if isinstance(params, ContainAiResource):
        if params.mode in ("deny_public_network", "allow_only") and not asset.has_public_endpoint:
            return f"{asset.name} has no public endpoint (publicNetworkAccess Disabled): {params.mode} changes nothing"
        if params.mode == "disable_local_auth" and asset.local_auth is False:
            return f"{asset.name} already refuses keys (disableLocalAuth true): nothing to turn off"
    if isinstance(params, RotateAiKeys) and asset.local_auth is False:
        return f"{asset.name} refuses keys (disableLocalAuth true): rotating them stops no caller"
    return None


PENDING = "pending"
NO_SOURCE = "uncorroborated: no source configured (AEGIS_CORROBORATORS)"
MAX_APPROVALS = 3


def uncorroborated_approvals(planned: int) -> int:
    """What an uncorroborated step needs: one approval more than the plan says (never fewer than 2)."""
    return min(max(planned, 1) + 1, MAX_APPROVALS)


def protected(
    params: Params, plan_: ResponsePlan, aliases: tuple[str, ...] = (), learned: Iterable[str] = ()
) -> str | None:
    """Why the plan forbids this target, if it does: its parameters and every alias the incident
    gave the target are checked against the protected users, hosts, resources, groups and subscriptions."""
    p = plan_.protected
    values = params.model_dump()
    names = {str(values[k]).lower() for k in _TARGET_FIELDS if values.get(k)} | set(aliases)
    if "user" in values:
        hit = sorted(names & ({u.lower() for u in p.users} | set(learned)))
        if hit:
            return f"user {values['user']} is protected by the response plan" + _as(hit[0], values["user"])
    if "machine_id" in values or "host_name" in values:
        # a protected FQDN protects its short (NetBIOS) name too: Defender names hosts either way
        listed = {h.lower() for h in p.hosts} | {h.lower().split(".")[0] for h in p.hosts if not h.startswith("/")}
        hit = sorted(names & listed)
        if hit:
            return f"host {params.target} is protected by the response plan" + _as(hit[0], params.target)
    for name in ("account", "alert"):
        rid = values.get(name)
        if isinstance(rid, str):
            if any(rid == r or rid.startswith(r + "/") for r in p.resources):
                return f"{rid} is protected by the response plan"
            if any(rid.startswith(g + "/") for g in p.resource_groups):
                return f"{rid} is in a resource group protected by the response plan"
            parts = rid.split("/")
            if len(parts) > 2 and parts[2] in p.subscriptions:
                return f"subscription {parts[2]} is protected by the response plan"
    return None


def _untrusted_target(incident: Incident, params: Params, item: object) -> str | None:
    """Why a disruptive step may not act on its target: the incident knows it only from fields an
    application supplied (the end-user context an AI app passes with its calls). A target must come
    from what Azure wrote or from a Defender alert. A literal target in a playbook is the author's."""
    values = {str(v).lower() for k, v in params.model_dump().items() if k in (*_TARGET_FIELDS, "account") and v}
    candidates = [item] if isinstance(item, Entity) else [
        e for e in incident.entities if identifiers(e) & values or e.key.lower() in values
    ]  # fmt: skip
    weak = [e for e in candidates if e.origin is Origin.APP]
    if weak and len(weak) == len(candidates):
        return (
            f"{params.target} is named only by application-supplied fields (an end-user context an app passed), "
            "which cannot choose the target of a disruptive step: Azure's logs or a Defender alert must name it"
        )
    return None


def expected_work(incident: Incident, plan_: ResponsePlan) -> Expected | None:
    """The plan's expected work this incident is, if any: every caller it shows is listed (see
    `playbooks.Expected`)."""
    ips = [e for e in incident.entities if isinstance(e, Ip)]
    identities = [e for e in incident.entities if isinstance(e, User | ServicePrincipal)]
    accounts = [e.key for e in incident.entities if isinstance(e, AiResource)]
    for work in plan_.expected:
        if work.detections and incident.detection not in work.detections:
            continue
        if work.resources and not (accounts and set(accounts) <= {r.lower() for r in work.resources}):
            continue
        if work.networks and not (ips and all(_within(ip, work.networks) for ip in ips)):
            continue
        if work.service_principals or work.users:
            listed = {v.lower() for v in (*work.service_principals, *work.users)}
            if not (identities and all(_caller_ids(e) & listed for e in identities)):
                continue
        return work
    return None


def _caller_ids(e: Entity) -> set[str]:
    if isinstance(e, ServicePrincipal):
        return {v.lower() for v in (e.app_id, e.object_id) if v}
    return identifiers(e)


def _within(ip: Ip, networks: Iterable[str]) -> bool:
    try:
        mine = ipaddress.ip_network(ip.address or ip.prefix or "", strict=False)
        return any(mine.version == n.version and mine.subnet_of(n)  # type: ignore[arg-type]
                   for n in map(ipaddress.ip_network, networks))  # fmt: skip
    except ValueError:
        return False


def _misfit(incident: Incident, params: Params) -> str | None:
    """Why a containment would not stop the traffic the incident shows: closing an account's public
    endpoint does nothing to callers that reach it over private networks (private endpoints)."""
    if not isinstance(params, ContainAiResource) or params.mode == "disable_local_auth":
        return None
    ips = [e for e in incident.entities if isinstance(e, Ip)]
    private = [ip for ip in ips if ip.private]
    if ips and len(private) == len(ips):
        shown = ", ".join(sorted({ip.key for ip in private})[:3])
        return (f"the incident's callers ({shown}) reach the account over private networks: {params.mode} "
                "closes its public endpoint and would not stop them (disable_local_auth would)")  # fmt: skip
    return None


def _as(alias: str, target: str) -> str:
    return "" if target.lower().endswith(alias) else f" (as {alias})"


def _key(base: dict[str, str], params: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps({**base, "params": params}, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return digest[:32]
