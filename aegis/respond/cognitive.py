"""AI account actions on the official SDKs: contain and restore a Cognitive Services / Azure OpenAI
account (azure-mgmt-cognitiveservices), rotate its keys and the Key Vault secrets that hold them
(azure-keyvault-secrets). No key value is ever returned, logged or recorded: outcomes name keys
and secret versions only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from azure.keyvault.secrets import SecretClient
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import Account, AccountProperties, NetworkRuleSet
from pydantic import TypeAdapter, ValidationError

from aegis.arm import parse_resource_id
from aegis.respond.actions import COGNITIVE_API, ContainAiResource, RestoreAiResource, RotateAiKeys, runs
from aegis.respond.connect import CannotRun, Connections, Context, check_tags
from aegis.respond.params import SecretUri

KEY_VAULT_API = "7.5"
SECRET_TAG = "aegis-key-secret"  # noqa: S105  (a tag name, not a secret); on an AI account: the Key Vault secret its consumers read the key from
_ATTR = {"publicNetworkAccess": "public_network_access", "disableLocalAuth": "disable_local_auth",
         "networkAcls": "network_acls"}  # fmt: skip


def account_client(conn: Connections, account: str) -> tuple[CognitiveServicesManagementClient, str, str]:
    rid = parse_resource_id(account)
    sub, group, name = rid.subscription or "", rid.resource_group or "", rid.name or ""  # AccountId has all three
    client = conn.kept("cognitiveservices", sub, build=lambda: CognitiveServicesManagementClient(
        conn.credential, sub, base_url=conn.arm, api_version=COGNITIVE_API, **conn.sdk_options()
    ))  # fmt: skip
    return client, group, name


@runs("contain_ai_resource")
def contain(p: ContainAiResource, ctx: Context) -> dict[str, Any]:
    """GET the account, keep the values about to change, PATCH the new ones (a long-running operation)."""
    client, group, name = account_client(ctx.connections, p.account)
    account = client.accounts.get(group, name)
    check_tags(p.account, account.tags, ctx.protected_tags)
    current = account.properties or AccountProperties()
    wanted = p.properties()
    previous = {k: _rest(getattr(current, _ATTR[k])) for k in wanted}
    _patch(client, group, name, wanted)
    return {"account": p.account, "previous": previous, "applied": wanted}


@runs("restore_ai_resource")
def restore(p: RestoreAiResource, ctx: Context) -> dict[str, Any]:
    """PATCH back the values the containments since the last restore kept (the earliest value of each)."""
    previous = _since_last_restore(ctx, p.account)
    if not previous:
        raise CannotRun(f"no containment of {p.account} has succeeded since the last restore: nothing to put back")
    client, group, name = account_client(ctx.connections, p.account)
    _patch(client, group, name, previous)
    return {"account": p.account, "restored": previous}


def _since_last_restore(ctx: Context, account: str) -> dict[str, Any]:
    """What the account's successful containments kept, since its last successful restore."""
    done = [s for action in ("contain_ai_resource", "restore_ai_resource")
            for s in ctx.store.steps(action=action, status=["succeeded"]) if s.target == account]  # fmt: skip
    kept: dict[str, Any] = {}
    for step in sorted(done, key=lambda s: s.started or s.created):  # in the order they ran, across incidents
        if step.action == "restore_ai_resource":
            kept = {}
        else:
            for k, v in (step.outcome or {}).get("previous", {}).items():
                kept.setdefault(k, v)
    return kept


def _patch(client: CognitiveServicesManagementClient, group: str, name: str, props: dict[str, Any]) -> None:
    values: dict[str, Any] = {
        _ATTR[k]: NetworkRuleSet.deserialize(v) if k == "networkAcls" and v else v for k, v in props.items()
    }
    client.accounts.begin_update(group, name, Account(properties=AccountProperties(**values))).result()


def _rest(value: Any) -> Any:
    return value.serialize() if isinstance(value, NetworkRuleSet) else value


@runs("rotate_ai_keys")
def rotate(p: RotateAiKeys, ctx: Context) -> dict[str, Any]:
    """Regenerate the account's keys without breaking consumers that read the key from Key Vault.

    The secret is the step's, or the one the account's `aegis-key-secret` tag names. With a
    secret: find which key the secret holds (H) and which it does not (O); regenerate O,
    write the new O to the secret, then regenerate H (if asked). Consumers read a valid key at
    every moment, and the exposed key dies last. Without a secret: regenerate the keys asked.
    """
    client, group, name = account_client(ctx.connections, p.account)
    account = client.accounts.get(group, name)
    check_tags(p.account, account.tags, ctx.protected_tags)
    wanted = ["Key1", "Key2"] if p.key == "both" else [p.key]
    secret = p.secret or _tagged_secret(account.tags)
    if secret is None:
        for key in wanted:
            client.accounts.regenerate_key(group, name, key)
        return {"account": p.account, "regenerated": wanted}
    vault_url, secret_name = _vault(ctx.connections, secret)
    conn = ctx.connections
    vault = conn.kept("keyvault", vault_url, build=lambda: SecretClient(
        vault_url, conn.credential, api_version=KEY_VAULT_API, verify_challenge_resource=conn.vault is None,
        **conn.sdk_options()))  # fmt: skip
    held = vault.get_secret(secret_name).value
    keys = client.accounts.list_keys(group, name)
    holds = "Key1" if held == keys.key1 else "Key2" if held == keys.key2 else None
    if holds is None:
        raise CannotRun(f"{secret} holds neither key of {p.account}: fix the secret by hand, then rotate")
    other = "Key2" if holds == "Key1" else "Key1"
    if holds not in wanted:  # the key in use is not being rotated: consumers are not affected
        client.accounts.regenerate_key(group, name, other)
        return {"account": p.account, "regenerated": [other], "secret_holds": holds}
    fresh = client.accounts.regenerate_key(group, name, other) if other in wanted else keys
    value = fresh.key1 if other == "Key1" else fresh.key2
    if not value:
        raise CannotRun(f"{p.account} answered without the {other} value: the secret was not changed")
    version = vault.set_secret(secret_name, value, content_type=f"{name} {other}").properties.version
    client.accounts.regenerate_key(group, name, holds)
    regenerated = [k for k in ("Key1", "Key2") if k in wanted]
    return {"account": p.account, "regenerated": regenerated, "secret_holds": other, "secret_version": version}


def _tagged_secret(tags: dict[str, str] | None) -> str | None:
    """The Key Vault secret the account's `aegis-key-secret` tag names, if any."""
    tagged = (tags or {}).get(SECRET_TAG)
    if tagged is None:
        return None
    try:
        return str(TypeAdapter(SecretUri).validate_python(tagged))
    except ValidationError:
        raise CannotRun(f"the {SECRET_TAG} tag of the account is not a Key Vault secret URI: fix the tag") from None


def _vault(conn: Connections, secret: str) -> tuple[str, str]:
    url = urlsplit(secret)
    name = url.path.split("/")[2]
    return (conn.vault or f"https://{url.hostname}"), name
