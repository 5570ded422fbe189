"""Response actions through the real SDK clients, up to the wire: a local HTTPS server with a
throwaway CA checks each request and answers with the published example payloads."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from azure.core.credentials import AccessToken
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from aegis.respond import graph
from aegis.respond.actions import DisableUser, EnableUser, RevokeSessions
from tests.conftest import shared_dir
from tests.wire import Reply, WireServer, http_example

GRAPH_EXAMPLES = "samples/rest-examples/microsoft-graph"


class StaticToken:
    """A credential that hands out a fixed token (the server checks it arrives as a bearer token)."""

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        assert scopes == (graph.SCOPE,)
        return AccessToken("test-token", int(time.time()) + 3600)

    async def close(self) -> None:
        pass


@pytest.fixture
def server(tmp_path):
    with WireServer(tmp_path) as srv:
        yield srv


def graph_client(server: WireServer, timeout: float = 10.0):
    return graph.client(StaticToken(), base_url=server.url + "/v1.0", ca_file=str(server.ca_file), timeout=timeout)


def test_revoke_sessions_posts_to_the_user_and_reads_the_published_answer(server):
    example = shared_dir() / GRAPH_EXAMPLES / "user-revokesigninsessions.response.http"
    server.expect("POST", "/v1.0/users/mallory@contoso.com/revokeSignInSessions", http_example(example))
    result = asyncio.run(graph.revoke_sessions(graph_client(server), RevokeSessions(user="Mallory@Contoso.com")))
    assert result == {"revoked": True}
    [seen] = server.seen
    assert seen.headers["authorization"] == "Bearer test-token"
    assert seen.body is None  # the call takes no body


def test_disable_and_enable_patch_account_enabled(server):
    example = shared_dir() / GRAPH_EXAMPLES / "user-update.response.http"
    user = "7d3e9a61-2c4b-4f1e-8a5d-6b9c0e1f2a3b"
    server.expect("PATCH", f"/v1.0/users/{user}", http_example(example), http_example(example))
    client = graph_client(server)
    assert asyncio.run(graph.set_account_enabled(client, DisableUser(user=user))) == {"account_enabled": False}
    assert asyncio.run(graph.set_account_enabled(client, EnableUser(user=user))) == {"account_enabled": True}
    assert [s.body["accountEnabled"] for s in server.seen] == [False, True]
    assert all(s.method == "PATCH" and s.headers["content-type"].startswith("application/json") for s in server.seen)


def test_a_429_is_retried_after_the_time_it_asks_for(server):
    example = shared_dir() / GRAPH_EXAMPLES / "user-revokesigninsessions.response.http"
    path = "/v1.0/users/mallory@contoso.com/revokeSignInSessions"
    server.expect("POST", path, Reply(429, {"error": {"code": "TooManyRequests"}}, {"Retry-After": "1"}),
                  http_example(example))  # fmt: skip
    start = time.monotonic()
    assert asyncio.run(graph.revoke_sessions(graph_client(server), RevokeSessions(user="mallory@contoso.com")))
    assert time.monotonic() - start >= 1.0
    assert len(server.seen) == 2


def test_a_403_is_an_error_with_its_status_and_not_retried(server):
    server.expect("POST", "/v1.0/users/mallory@contoso.com/revokeSignInSessions",
                  Reply(403, {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges"}}))  # fmt: skip
    with pytest.raises(ODataError) as err:
        asyncio.run(graph.revoke_sessions(graph_client(server), RevokeSessions(user="mallory@contoso.com")))
    assert err.value.response_status_code == 403
    assert len(server.seen) == 1


def test_a_server_that_does_not_answer_times_out(server):
    server.expect("POST", "/v1.0/users/mallory@contoso.com/revokeSignInSessions", Reply(200, {"value": True}, delay=3))
    with pytest.raises(httpx.TimeoutException):
        asyncio.run(
            graph.revoke_sessions(graph_client(server, timeout=0.5), RevokeSessions(user="mallory@contoso.com"))
        )


class StaticArmToken:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        assert scopes == ("https://management.azure.com/.default",)
        return AccessToken("arm-token", int(time.time()) + 3600)


@pytest.mark.parametrize(
    ("example", "state", "verb"),
    [
        ("UpdateAlertSubscriptionLocation_inProgress_example.json", "inProgress", "inProgress"),
        ("UpdateAlertSubscriptionLocation_resolve_example.json", "resolve", "resolve"),
        ("UpdateAlertSubscriptionLocation_dismiss_example.json", "dismiss", "dismiss"),
        ("UpdateAlertSubscriptionLocation_activate_example.json", "activate", "activate"),
        ("UpdateAlertResourceGroupLocation_resolve_example.json", "resolve", "resolve"),
    ],
)
def test_update_defender_alert_makes_the_documented_call(server, example, state, verb):
    import orjson

    from aegis.respond import defender
    from aegis.respond.actions import UpdateDefenderAlert
    from aegis.respond.connect import Connections, Context

    spec = orjson.loads((shared_dir() / "samples/rest-examples/microsoft-security-alerts" / example).read_bytes())
    p = spec["parameters"]
    scope = f"/subscriptions/{p['subscriptionId']}"
    if "resourceGroupName" in p:
        scope += f"/resourceGroups/{p['resourceGroupName']}"
    alert = f"{scope}/providers/Microsoft.Security/locations/{p['ascLocation']}/alerts/{p['alertName']}"
    status = int(next(iter(spec["responses"])))
    server.expect("POST", f"{alert.lower()}/{verb}".replace("/resourcegroups/", "/resourceGroups/")
                  .replace("/microsoft.security/", "/Microsoft.Security/"), Reply(status))  # fmt: skip
    conn = Connections(StaticArmToken(), arm=server.url, ca_file=str(server.ca_file))  # type: ignore[arg-type]
    result = defender.update_alert(UpdateDefenderAlert(alert=alert, state=state), Context(conn, None, None))  # type: ignore[arg-type]
    assert result["state"] == state
    [seen] = server.seen
    assert seen.query["api-version"] == [p["api-version"]]
    assert seen.headers["authorization"] == "Bearer arm-token"
    assert seen.body is None
