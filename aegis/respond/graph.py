"""Microsoft Graph actions on the official SDK (msgraph-sdk): revoke a user's sessions, disable or
enable a user. The client keeps the SDK's middleware (its retry handler honours `Retry-After` on
429 and 503); the base URL and the CA bundle can be pointed elsewhere (tests, sovereign clouds).
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import urlsplit

import httpx
from azure.core.credentials import TokenCredential
from azure.core.credentials_async import AsyncTokenCredential
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph.generated.models.user import User
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory  # type: ignore[import-untyped]

from aegis.respond.actions import DisableUser, EnableUser, RevokeSessions

GRAPH = "https://graph.microsoft.com/v1.0"
SCOPE = "https://graph.microsoft.com/.default"


def client(
    credential: TokenCredential | AsyncTokenCredential, *, base_url: str = GRAPH, ca_file: str | None = None,
    timeout: float = 30.0,
) -> GraphServiceClient:  # fmt: skip
    """A Graph client; `ca_file` trusts another CA (tests), the system's store is used otherwise."""
    host = urlsplit(base_url).hostname or ""
    verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=verify, timeout=timeout))
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[SCOPE], allowed_hosts=[host])
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = base_url
    return GraphServiceClient(request_adapter=adapter)


async def revoke_sessions(graph: GraphServiceClient, p: RevokeSessions) -> dict[str, Any]:
    """POST /users/{id | userPrincipalName}/revokeSignInSessions."""
    result = await graph.users.by_user_id(p.user).revoke_sign_in_sessions.post()
    return {"revoked": bool(result is not None and result.value)}


async def set_account_enabled(graph: GraphServiceClient, p: DisableUser | EnableUser) -> dict[str, Any]:
    """PATCH /users/{id | userPrincipalName} {"accountEnabled": false | true}."""
    enabled = isinstance(p, EnableUser)
    await graph.users.by_user_id(p.user).patch(User(account_enabled=enabled))
    return {"account_enabled": enabled}
