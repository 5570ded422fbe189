"""The AI estate as Azure describes it, on the official SDKs and the app's identity (Reader and
Security Reader on the watched subscriptions):

- Azure Resource Graph (azure-mgmt-resourcegraph): every AI account, AI Foundry project and hub
  the identity can read, in pages of 1,000 (`$skipToken`), throttling honoured (a 429's
  `Retry-After`, or Resource Graph's own `x-ms-user-quota-resets-after`; a page that leaves no quota
  waits for it before the next);
- Cognitive Services (azure-mgmt-cognitiveservices): each account's model deployments and RAI
  (content filter) policies;
- Azure Monitor's REST API: each account's and hub's diagnostic settings;
- Defender for Cloud (azure-mgmt-security): each subscription's plan for AI services.

Each row comes back in the documented shapes, what was added under `deployments`, `raiPolicies`,
`diagnosticSettings` and `defenderForAi` (`aegis.assets.parse_asset` reads them). What cannot be
read (a 403 on one account) is said in `Collected.errors` and leaves that part unknown, never
"missing": an unreadable diagnostic setting is not a blind spot.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import RetryPolicy
from azure.core.rest import HttpRequest
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions
from azure.mgmt.security import SecurityCenter

from aegis.assets import ACCOUNT_TYPES, HUB_KINDS, HUB_TYPE
from aegis.respond.cognitive import account_client
from aegis.respond.connect import Connections, send

logger = structlog.get_logger("aegis.inventory")

PAGE = 1000  # Resource Graph's largest page
DIAGNOSTICS_API = "2021-05-01-preview"
MAX_WAIT = 60.0  # seconds: the longest Aegis waits for Resource Graph's quota before a page
QUERY = f"""resources
| where type in~ ({", ".join(f"'{t}'" for t in ACCOUNT_TYPES)})
    or (type =~ '{HUB_TYPE}' and kind in~ ({", ".join(f"'{k}'" for k in HUB_KINDS)}))
| project id, name, type, kind, location, subscriptionId, resourceGroup, tenantId, tags, identity, sku, properties
| order by id asc"""
_RESETS = re.compile(r"^(\d+):(\d{2}):(\d{2})(?:\.\d+)?$")


def _resets_after(headers: Any) -> float | None:
    """Resource Graph's `x-ms-user-quota-resets-after` (hh:mm:ss) in seconds."""
    m = _RESETS.match(str(headers.get("x-ms-user-quota-resets-after") or ""))
    return int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) if m else None


class QuotaRetry(RetryPolicy):
    """The SDKs' retry policy, and on a 429 that says no `Retry-After`, Resource Graph's own reset time."""

    def get_retry_after(self, response: Any) -> float | None:
        got = super().get_retry_after(response)
        if got is None and response.http_response.status_code == 429:
            return _resets_after(response.http_response.headers)
        return got


@dataclass
class Collected:
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pages: int = 0


@dataclass
class Estate:
    """Reads the AI estate from Azure through `connections`; `subscriptions` limits the Resource
    Graph query (empty: every subscription the identity can read). `sleep` waits (tests: a clock)."""

    connections: Connections
    subscriptions: Sequence[str] = ()
    sleep: Callable[[float], None] = time.sleep

    def collect(self) -> Collected:
        out = Collected()
        plans: dict[str, str | None] = {}
        for row in self.rows(out):
            rtype, rid = str(row.get("type", "")).lower(), str(row.get("id", ""))
            sub = str(row.get("subscriptionId") or "")
            if rtype == ACCOUNT_TYPES[0]:
                row.update(self._read(out, rid, "deployments", self._deployments, row) or {})
            if rtype in (ACCOUNT_TYPES[0], HUB_TYPE):
                row.update(self._read(out, rid, "diagnosticSettings", self._diagnostics, rid) or {})
            if sub and sub not in plans:
                plans[sub] = self._read(out, f"/subscriptions/{sub}", "defenderForAi", self._plan, sub)
            if plans.get(sub) is not None:
                row["defenderForAi"] = plans[sub]
            out.rows.append(row)
        return out

    def rows(self, out: Collected) -> Iterator[dict[str, Any]]:
        """Resource Graph's rows, page by page."""
        conn = self.connections
        client = conn.kept("resourcegraph", conn.arm, build=lambda: ResourceGraphClient(
            conn.credential, base_url=conn.arm, credential_scopes=[f"{conn.arm.rstrip('/')}/.default"],
            retry_policy=QuotaRetry(**conn.sdk_options()), **conn.sdk_options()))  # fmt: skip
        token: str | None = None
        while True:
            # no partial scopes: a refresh that missed subscriptions would read their assets as gone
            options = QueryRequestOptions(top=PAGE, skip_token=token, result_format="objectArray",
                                          allow_partial_scopes=False)  # fmt: skip
            request = QueryRequest(subscriptions=list(self.subscriptions) or None, query=QUERY, options=options)
            got: Any = client.resources(request, cls=lambda response, body, _: (body, response.http_response.headers))
            page, headers = got
            out.pages += 1
            yield from (r for r in (page.data or []) if isinstance(r, dict))
            token = page.skip_token
            if not token:
                return
            if str(headers.get("x-ms-user-quota-remaining", "")).strip() == "0":
                wait = min(_resets_after(headers) or 5.0, MAX_WAIT)
                logger.info("inventory.throttled", wait_s=wait)
                self.sleep(wait)

    @staticmethod
    def _read(out: Collected, what: str, part: str, read: Callable[[Any], Any], arg: Any) -> Any:
        """`read(arg)`, or None with the reason in `out.errors` when Azure refuses it."""
        try:
            return read(arg)
        except HttpResponseError as exc:
            out.errors.append(f"{what}: cannot read {part} ({exc.status_code} {exc.reason or ''})".strip())
            return None

    def _deployments(self, row: dict[str, Any]) -> dict[str, Any]:
        client, group, name = account_client(self.connections, str(row["id"]))  # the response's own client
        deployments = [d.serialize(keep_readonly=True) for d in client.deployments.list(group, name)]
        policies = [p.serialize(keep_readonly=True) for p in client.rai_policies.list(group, name)]
        return {"deployments": deployments, "raiPolicies": policies}

    def _diagnostics(self, rid: str) -> dict[str, Any]:
        path = f"{rid}/providers/Microsoft.Insights/diagnosticSettings"
        found = send(self.connections.arm_rest(), HttpRequest("GET", path, params={"api-version": DIAGNOSTICS_API}))
        value = found.get("value") if isinstance(found, dict) else None
        return {"diagnosticSettings": value if isinstance(value, list) else []}

    def _plan(self, sub: str) -> str | None:
        conn = self.connections
        ops = conn.kept("security", sub, build=lambda: SecurityCenter(conn.credential, sub, base_url=conn.arm,
                                                                      **conn.sdk_options())).pricings  # fmt: skip
        pricing = ops.get(f"subscriptions/{sub}", "AI")
        tier = pricing.pricing_tier
        return str(getattr(tier, "value", tier)) if tier else None
