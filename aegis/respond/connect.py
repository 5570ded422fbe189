"""Where the response actions connect, and with what: one credential, the service endpoints (public
cloud by default; a sovereign cloud or the tests' local server otherwise), timeouts and retries,
and the ticketing systems' settings. Built from the settings module by `from_settings`.

Every client the actions build from this keeps its SDK's retry policy (429 and 5xx retried with
exponential backoff that honours `Retry-After`); the executor decides what a failure left after
those retries means (`execute.py`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    DistributedTracingPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from azure.identity import DefaultAzureCredential
from pydantic import SecretStr

from aegis.assets import protected_tag
from aegis.errors import AegisError
from aegis.records import StepRecord
from aegis.settings import Settings
from aegis.store import Store

T = TypeVar("T")


@dataclass(frozen=True)
class Tickets:
    sentinel_workspace: str | None = None  # ARM id of the Log Analytics workspace with Microsoft Sentinel
    servicenow_instance: str | None = None  # https://NAME.service-now.com
    servicenow_user: str | None = None
    servicenow_password: SecretStr | None = None
    jira_site: str | None = None  # https://NAME.atlassian.net
    jira_user: str | None = None
    jira_token: SecretStr | None = None
    jira_project: str | None = None


@dataclass(frozen=True)
class Bot:
    """The Azure Bot on the app's managed identity: its app id, its tenant, the Teams Bot Connector."""

    app_id: str
    tenant: str
    service_url: str = "https://smba.trafficmanager.net/teams/"


@dataclass(frozen=True)
class Connections:
    credential: TokenCredential
    arm: str = "https://management.azure.com"
    graph: str = "https://graph.microsoft.com/v1.0"
    mde: str = "https://api.security.microsoft.com"
    logs: str = "https://api.loganalytics.io"  # Log Analytics query API (enrichment)
    vault: str | None = None  # all Key Vault calls go here instead of the secret URI's host (tests)
    ca_file: str | None = None  # trust this CA instead of the system's (tests)
    timeout: float = 30.0  # seconds to connect, and to wait for an answer
    retries: int = 3  # the SDKs' own retries of 429 / 5xx / connection errors, per call
    tickets: Tickets = Tickets()
    bot: Bot | None = None  # the Azure Bot that posts in Teams (None: no Teams messages)
    _clients: dict[tuple[Hashable, ...], Any] = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def kept(self, *key: Hashable, build: Callable[[], T]) -> T:
        """The client `build` makes for `key` (a service and what it is bound to: a subscription, a
        vault), built on the first call and kept: later calls of the worker reuse its connection
        pool (and, through the one credential, its tokens). Azure SDK clients are thread-safe."""
        with self._lock:
            if key not in self._clients:
                self._clients[key] = build()
            return self._clients[key]  # type: ignore[no-any-return]

    def _retry(self) -> dict[str, Any]:
        return {"retry_total": self.retries, "retry_backoff_factor": 0.8, "retry_backoff_max": 60}

    def _transport(self) -> dict[str, Any]:
        return {"connection_timeout": self.timeout, "read_timeout": self.timeout,
                "connection_verify": self.ca_file or True}  # fmt: skip

    def sdk_options(self) -> dict[str, Any]:
        """Keyword options every azure-core based client (all the Azure SDKs used here) takes."""
        return {**self._retry(), **self._transport()}

    def arm_rest(self) -> PipelineClient[HttpRequest, Any]:
        """The worker's pipeline for the ARM REST calls no SDK here makes (Sentinel, Azure Monitor's
        diagnostic settings), with a token for Azure Resource Manager."""
        scope = f"{self.arm.rstrip('/')}/.default"
        return self.kept("arm-rest", self.arm, build=lambda: self.rest_client(
            self.arm, BearerTokenCredentialPolicy(self.credential, scope)))  # fmt: skip

    def rest_client(self, base_url: str, auth: Any) -> PipelineClient[HttpRequest, Any]:
        """An azure-core pipeline for the services with no Python SDK (Defender for Endpoint, ServiceNow,
        Jira): the SDKs' retry policy and transport options, then `auth`."""
        # a span per call (as the SDKs make), in the trace of the batch or run that makes it
        policies = [UserAgentPolicy("aegis"), RetryPolicy(**self._retry()), auth, DistributedTracingPolicy()]
        return PipelineClient(base_url=base_url.rstrip("/"), policies=policies,
                              transport=RequestsTransport(**self._transport()))  # fmt: skip


def send(client: PipelineClient[HttpRequest, Any], request: HttpRequest) -> Any:
    """Send; an error status raises `HttpResponseError` (as the SDKs do); the JSON answer, if any."""
    request.url = client.format_url(request.url)
    response = client.send_request(request)
    if response.status_code >= 400:
        raise HttpResponseError(response=response)
    return response.json() if response.content else None


def lazy(cfg: Settings) -> Callable[[], Connections]:
    """The settings' connections, built on the first call and kept: one credential (and its token
    cache) for everything a command or a timer run asks of it, none when nothing needs one."""
    return cache(lambda: from_settings(cfg))


def from_settings(cfg: Settings, credential: TokenCredential | None = None) -> Connections:
    """The connections the settings describe, with the managed identity (or the developer's login)."""
    if credential is None:
        credential = DefaultAzureCredential(managed_identity_client_id=cfg.managed_identity_client_id)
    tickets = Tickets(
        sentinel_workspace=cfg.sentinel_workspace, servicenow_instance=cfg.servicenow_instance,
        servicenow_user=cfg.servicenow_user, servicenow_password=cfg.servicenow_password,
        jira_site=cfg.jira_site, jira_user=cfg.jira_user, jira_token=cfg.jira_token, jira_project=cfg.jira_project,
    )  # fmt: skip
    bot = Bot(cfg.bot_app_id, cfg.tenant_id, cfg.bot_service_url) if cfg.bot_app_id and cfg.tenant_id else None
    return Connections(credential, arm=cfg.arm_endpoint, graph=cfg.graph_endpoint, mde=cfg.mde_endpoint,
                       logs=cfg.logs_endpoint, tickets=tickets, bot=bot)  # fmt: skip


class CannotRun(AegisError):
    """The action found it must not or cannot do what was asked (nothing to restore, an ambiguous
    machine name, a Key Vault secret that holds neither key): a permanent failure, never retried."""


@dataclass(frozen=True)
class Context:
    """What an action runs with: the connections, the recorded steps (a restore reads what a
    containment kept) and its own step."""

    connections: Connections
    store: Store
    step: StepRecord
    protected_tags: Mapping[str, str] = field(default_factory=dict)  # the plan's: a resource with one is not touched


class ProtectedAsset(CannotRun):
    """The target turned out to be protected (a tag the plan protects, seen when the action read
    it): the step is refused, never run."""


def check_tags(target: str, tags: Mapping[str, str] | None, protected: Mapping[str, str]) -> None:
    """Raise `ProtectedAsset` when `tags` carry one the plan protects (a value of `*` matches any)."""
    if hit := protected_tag(tags, protected):
        raise ProtectedAsset(f"{target} is protected by the response plan: it has the tag {hit[0]}={hit[1]}")
