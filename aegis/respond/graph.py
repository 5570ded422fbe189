"""Microsoft Graph actions on the official SDK (msgraph-sdk): revoke a user's sessions, disable or
enable a user, post in a Teams channel. The client keeps the SDK's middleware (its retry handler
honours `Retry-After` on 429 and 503); the base URL and the CA bundle can be pointed elsewhere
(tests, sovereign clouds).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from azure.core.credentials import TokenCredential
from azure.core.credentials_async import AsyncTokenCredential
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.generated.models.user import User
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory  # type: ignore[import-untyped]

from aegis.respond.actions import DisableUser, EnableUser, RevokeSessions, runs
from aegis.respond.connect import Connections, Context

GRAPH = "https://graph.microsoft.com/v1.0"
SCOPE = "https://graph.microsoft.com/.default"


def http_client(*, ca_file: str | None = None, timeout: float = 30.0) -> httpx.AsyncClient:
    """The HTTP client under a Graph client; `ca_file` trusts another CA (tests), the system's store otherwise."""
    return httpx.AsyncClient(verify=ssl.create_default_context(cafile=ca_file) if ca_file else True, timeout=timeout)


def client(
    credential: TokenCredential | AsyncTokenCredential, *, base_url: str = GRAPH, ca_file: str | None = None,
    timeout: float = 30.0, http_client_: httpx.AsyncClient | None = None, retries: int = 3,
) -> GraphServiceClient:  # fmt: skip
    """A Graph client with the SDK's middleware (retries honouring `Retry-After`, redirects, ...)."""
    host = urlsplit(base_url).hostname or ""
    base = http_client_ or http_client(ca_file=ca_file, timeout=timeout)
    options = {RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=retries)}
    http = GraphClientFactory.create_with_default_middleware(client=base, options=options)
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


GraphCall = Callable[[GraphServiceClient, Any], Awaitable[dict[str, Any]]]
T = TypeVar("T")


def using(conn: Connections, work: Callable[[GraphServiceClient], Awaitable[T]]) -> T:
    """Run `work` with a Graph client for `conn`, on this thread's own event loop; the client is closed after."""

    async def go() -> T:
        async with http_client(ca_file=conn.ca_file, timeout=conn.timeout) as http:
            return await work(client(conn.credential, base_url=conn.graph, http_client_=http, retries=conn.retries))

    return asyncio.run(go())


def run(call: GraphCall) -> Callable[[Any, Context], dict[str, Any]]:
    """An executor runner for a Graph call."""

    def runner(p: Any, ctx: Context) -> dict[str, Any]:
        return using(ctx.connections, lambda graph: call(graph, p))

    return runner


runs("revoke_sessions")(run(revoke_sessions))
runs("disable_user")(run(set_account_enabled))
runs("enable_user")(run(set_account_enabled))
