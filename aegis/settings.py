"""Every setting Aegis reads, in one place. Environment variables `AEGIS_*` (app settings in Azure).

Settings are validated when they are loaded: a missing or invalid one raises `ConfigurationError`
naming the variable and what it needs, at start-up rather than at the first message.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from aegis.assets import DEFAULT_WEIGHTS, TagNames
from aegis.decode import Limits
from aegis.durations import Duration
from aegis.errors import ConfigurationError
from aegis.tenancy import Tenancy

ENV_PREFIX = "AEGIS_"
_GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    store: Literal["sqlite", "table"] = Field("sqlite", description="State store: embedded SQLite or Azure Tables.")
    db: Path = Field(Path("aegis.db"), description="SQLite database file (store=sqlite).")
    table_endpoint: str | None = Field(None, description="Table service URL, identity-based (store=table).")
    blob_endpoint: str | None = Field(
        None, description="Blob service URL for raw bodies, identity-based (store=table)."
    )
    storage_connection_string: SecretStr | None = Field(
        None, description="Storage connection string instead of the endpoints (Azurite, development)."
    )
    managed_identity_client_id: str | None = Field(
        None, description="Client id of the user-assigned identity used for storage (store=table)."
    )

    defender_hub: str = Field("defender-alerts", description="Event hub receiving Defender continuous export.")
    diagnostics_hub: str = Field("ai-diagnostics", description="Event hub receiving diagnostic settings.")
    consumer_group: str = Field("aegis", description="Consumer group of the ingest functions.")
    diagnostics_regions: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Other regions with a diagnostics namespace of their own, comma-separated (eastus,swedencentral): "
        "each gets an ingest trigger on the connection AEGIS_EVENTHUB_<REGION>.",
    )

    tenant_id: str | None = Field(
        None,
        description="The Entra tenant of the watched subscriptions (GUID): events that name none belong to it.",
        pattern=_GUID,
    )
    tenants: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Subscriptions of other tenants, SUBSCRIPTION=TENANT comma-separated (GUIDs): their "
        "events belong to that tenant, whatever the payload says.",
    )

    inventory_subscriptions: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Subscriptions the inventory reads through Resource Graph, comma-separated GUIDs "
        "[default: every subscription the app's identity can read].",
    )
    inventory_file: Path | None = Field(
        None, description="A JSON file of Resource Graph rows the inventory reads instead of Azure (offline, the demo)."
    )
    owner_tags: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(TagNames().owner), description="Tags naming an AI asset's owner, comma-separated."
    )
    criticality_tags: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(TagNames().criticality),
        description="Tags saying an AI asset's criticality (critical, high, medium, low), comma-separated.",
    )
    classification_tags: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(TagNames().data_classification),
        description="Tags saying the data classification of an AI asset, comma-separated.",
    )
    criticality_weights: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        description="How many severity steps (-1, 0 or 1) an incident on an asset of each criticality moves, "
        "CRITICALITY=STEPS comma-separated [default: critical=1,low=-1].",
    )
    finding_severity: Literal["informational", "low", "medium", "high", "critical"] = Field(
        "low", description="The severity of the inventory's findings (blind spots), as delivered."
    )

    max_body_bytes: int = Field(1_048_576, gt=0, description="Larger message bodies are dead-lettered.")
    max_depth: int = Field(64, gt=1, le=512, description="Deeper JSON nesting is dead-lettered.")

    max_clock_skew: Duration = Field(
        timedelta(minutes=5),
        ge=timedelta(0),
        le=timedelta(hours=1),
        description="Events dated more than this after their message was enqueued are dead-lettered (forged clocks).",
    )
    lateness: Duration = Field(
        timedelta(hours=1), description="How late (in event time) an event may arrive and still correlate."
    )

    retention: Duration = Field(
        timedelta(days=30),
        ge=timedelta(days=1),
        description="How long events, dead letters and raw message bodies are kept (the retention timer purges older).",
    )
    keep_events: Literal["evidence", "all"] = Field(
        "evidence",
        description="Which normalized events the store keeps: those incidents hold as evidence (the stream "
        "itself stays in Event Hubs, Capture or Log Analytics), or every event (local investigation; a row per event).",
    )

    arm_endpoint: str = Field("https://management.azure.com", description="Azure Resource Manager (sovereign clouds).")
    graph_endpoint: str = Field("https://graph.microsoft.com/v1.0", description="Microsoft Graph.")
    mde_endpoint: str = Field("https://api.security.microsoft.com", description="Defender for Endpoint API.")
    logs_endpoint: str = Field("https://api.loganalytics.io", description="Log Analytics query API.")
    log_analytics_workspace: str | None = Field(
        None,
        description="Workspace id (GUID) the log_analytics enricher queries.",
        pattern=_GUID,
    )
    enrichers: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Enrichers to run, comma-separated [default: local with sqlite; log_analytics, "
        "defender, graph with table].",
    )
    corroborators: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Sources asked to corroborate a disruptive step's evidence, comma-separated: defender, "
        "log_analytics, entra [default: none, so every disruptive step needs one approval more].",
    )
    deliverers: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Where incidents are delivered, comma-separated: sentinel, teams [default: none].",
    )
    deliver_min_severity: Literal["informational", "low", "medium", "high", "critical"] = Field(
        "medium",
        description="Incidents below this severity are not delivered.",
    )
    enrich_budget: float = Field(20.0, gt=0, le=600, description="Seconds all enrichers of one incident may take.")
    sentinel_workspace: str | None = Field(
        None, description="ARM id of the Sentinel workspace (open_ticket system: sentinel)."
    )
    servicenow_instance: str | None = Field(None, description="https://NAME.service-now.com (system: servicenow).")
    servicenow_user: str | None = None
    servicenow_password: SecretStr | None = None
    jira_site: str | None = Field(None, description="https://NAME.atlassian.net (system: jira).")
    jira_user: str | None = Field(None, description="The Jira account's e-mail (basic auth with an API token).")
    jira_token: SecretStr | None = None
    jira_project: str | None = Field(None, description="The Jira project key tickets go to.")

    atlas_data: Path | None = Field(
        None,
        description="A full MITRE ATLAS release (ATLAS.yaml of mitre-atlas/atlas-data) for the console's coverage "
        "matrix; default: the subset Aegis ships (the techniques it maps to).",
    )
    display_timezone: str | None = Field(
        None,
        description="IANA time zone the console shows times in, with the zone named (Europe/Paris); default: UTC "
        "in Azure, the machine's own zone under `aegis serve`.",
    )
    console_auth: Literal["easy_auth", "bearer"] = Field(
        "easy_auth",
        description="Who calls the console and approvals API: easy_auth (the principal App Service Authentication "
        "passes) or bearer (an Entra ID access token for AEGIS_AUTH_CLIENT_ID, checked by the app itself: where the "
        "platform does not block unauthenticated callers, as on Flex Consumption).",
    )
    auth_client_id: str | None = Field(
        None, description="The console's app registration (client id): the audience of bearer tokens.", pattern=_GUID
    )
    bot_app_id: str | None = Field(
        None,
        description="The Azure Bot's Microsoft app id (its managed identity's client id): Teams cards.",
        pattern=_GUID,
    )
    bot_service_url: str = Field(
        "https://smba.trafficmanager.net/teams/",
        description="The Teams channel's Bot Connector service URL.",
        pattern=r"^https://[^\s/?#]+(:[0-9]+)?(/[^\s?#]*)?$",
    )
    bot_openid_metadata: str = Field(
        "https://login.botframework.com/v1/.well-known/openidconfiguration",
        description="The Bot Framework's OpenID metadata: the keys that sign the activities sent to /api/messages.",
        pattern=r"^https://[^\s?#]+$",
    )

    drill_account: str | None = Field(
        None, description="`aegis drill`: the ARM id of the AI account whose drill deployment gets the test prompt."
    )
    drill_deployment: str | None = Field(
        None, description="`aegis drill`: the model deployment (with Prompt Shields on) the test prompt goes to."
    )
    drill_endpoint: str | None = Field(
        None,
        description="`aegis drill`: the account's endpoint [default: https://NAME.openai.azure.com/].",
        pattern=r"^https://[^\s/?#]+/?$",
    )

    console_url: str = Field(
        "http://127.0.0.1:8765",
        description="Public URL of the console (https://APP.azurewebsites.net): the links in Teams cards; with "
        "AEGIS_CONSOLE_AUTH=bearer and https, where browsers sign in (its /console/signin/callback).",
        pattern=r"^https?://[^\s/?#]+(:[0-9]+)?/?$",
    )

    trace: Literal["auto", "azure", "console", "off"] = Field(
        "auto",
        description="Traces: azure (Application Insights through OpenTelemetry, with the managed identity), "
        "console (spans on stderr), off; auto: azure when running in Azure with a connection string, else off.",
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: JSON when running in Azure, readable console output elsewhere."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("enrichers", "deliverers", "corroborators", "owner_tags", "criticality_tags",
                     "classification_tags", mode="before")  # fmt: skip
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @field_validator("tenants", mode="before")
    @classmethod
    def _subscription_tenants(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for entry in (e.strip() for e in value.split(",")):
            sub, sep, tenant = (part.strip().lower() for part in entry.partition("="))
            if not entry:
                continue
            if not sep or not re.match(_GUID, sub) or not re.match(_GUID, tenant):
                raise ValueError(
                    f"{entry!r} is not SUBSCRIPTION=TENANT with two GUIDs "
                    "(example: 00000000-0000-0000-0000-000000000001=00000000-0000-0000-0000-00000000000a)"
                )
            pairs[sub] = tenant
        return pairs

    @field_validator("inventory_subscriptions", mode="before")
    @classmethod
    def _subscriptions(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        subs = [v.strip().lower() for v in value.split(",") if v.strip()]
        for sub in subs:
            if not re.match(_GUID, sub):
                raise ValueError(
                    f"{sub!r} is not a subscription id (a GUID; example: 00000000-0000-0000-0000-000000000001)"
                )
        return subs

    @field_validator("criticality_weights", mode="before")
    @classmethod
    def _weights(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        weights: dict[str, int] = {}
        for entry in (e.strip() for e in value.split(",") if e.strip()):
            name, sep, steps = (part.strip() for part in entry.partition("="))
            if not sep or not name or steps not in {"-1", "0", "1", "+1"}:
                raise ValueError(
                    f"{entry!r} is not CRITICALITY=STEPS with steps -1, 0 or 1 (example: critical=1,low=-1)"
                )
            weights[name.lower()] = int(steps)
        return weights

    @field_validator("diagnostics_regions", mode="before")
    @classmethod
    def _regions(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        regions = [r.strip().lower() for r in value.split(",") if r.strip()]
        for r in regions:
            if not re.fullmatch(r"[a-z0-9]{2,40}", r):
                raise ValueError(f"{r!r} is not an Azure region name as ARM writes it (example: eastus,swedencentral)")
        return list(dict.fromkeys(regions))

    @field_validator("display_timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"{value!r} is not an IANA time zone (examples: UTC, Europe/Paris, America/New_York)"
                ) from None
        return value

    @field_validator("tenant_id")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @model_validator(mode="after")
    def _two_hubs(self) -> Settings:
        if self.defender_hub == self.diagnostics_hub:
            raise ValueError(
                f"{ENV_PREFIX}DEFENDER_HUB and {ENV_PREFIX}DIAGNOSTICS_HUB are both {self.defender_hub!r}: alerts and "
                "diagnostic logs need a hub each (what a hub may carry is checked by its name)"
            )
        return self

    @model_validator(mode="after")
    def _store_settings(self) -> Settings:
        if self.store == "table" and self.storage_connection_string is None:
            missing = [
                f"{ENV_PREFIX}{name.upper()}" for name in ("table_endpoint", "blob_endpoint") if not getattr(self, name)
            ]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)} must be set when {ENV_PREFIX}STORE=table "
                    f"(or set {ENV_PREFIX}STORAGE_CONNECTION_STRING)"
                )
        return self

    @property
    def limits(self) -> Limits:
        return Limits(max_body_bytes=self.max_body_bytes, max_depth=self.max_depth, max_skew=self.max_clock_skew)

    @property
    def tenancy(self) -> Tenancy:
        return Tenancy(home=self.tenant_id, by_subscription=self.tenants)

    @property
    def hubs(self) -> dict[str, Literal["alerts", "diagnostics"]]:
        """What each configured hub carries: Defender alerts, or diagnostic-settings records."""
        return {self.defender_hub: "alerts", self.diagnostics_hub: "diagnostics"}

    @property
    def tag_names(self) -> TagNames:
        return TagNames(tuple(self.owner_tags), tuple(self.criticality_tags), tuple(self.classification_tags))

    @property
    def event_hub_namespaces(self) -> list[str]:
        """Aegis's Event Hubs namespaces (names), from the Functions connections AEGIS_EVENTHUB and
        AEGIS_EVENTHUB_<REGION> (`__fullyQualifiedNamespace`): what a diagnostic setting must send to."""
        named = re.compile(r"AEGIS_EVENTHUB(_[A-Z0-9]+)?__fullyQualifiedNamespace", re.IGNORECASE)
        found = [v.split(".", 1)[0].strip().lower() for k, v in os.environ.items() if named.fullmatch(k) and v]
        return sorted(set(found))

    @property
    def in_azure(self) -> bool:
        return bool(os.environ.get("WEBSITE_INSTANCE_ID") or os.environ.get("WEBSITE_SITE_NAME"))


def load(**overrides: object) -> Settings:
    """Read and validate the settings; `overrides` (CLI options) win over the environment."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None


@lru_cache(maxsize=1)
def get() -> Settings:
    """The process-wide settings, loaded once (Functions workers, CLI)."""
    return load()


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "__root__"]
        name = f"{ENV_PREFIX}{loc[0].upper()}" if loc else "settings"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(msg if not loc else f"{name}: {msg}")
    return "invalid settings: " + "; ".join(problems)
