"""A seeded generator of realistic Event Hubs bodies for the benchmark.

- Defender for Cloud AI alerts of about 3 KB in the continuous-export shape (flat PascalCase, with
  `$id` / `$ref` entities and extended properties), some in the ARM shape;
- diagnostic-settings envelopes of 25 AI-account records (RequestResponse, AzureOpenAIRequestUsage,
  Audit), most with `properties` as a JSON string, resource ids upper-case, caller IPs masked.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta

ALERT_TYPES = [
    "AI.Azure_Jailbreak.ContentFiltering.BlockedAttempt", "AI.Azure_Jailbreak.ContentFiltering.DetectedAttempt",
    "AI.Azure_CredentialTheftAttempt", "AI.Azure_ASCIISmuggling", "AI.Azure_AccessFromSuspiciousIP",
    "AI.Azure_DOWVolumeAnomaly", "AI.Azure_MaliciousUrl.UserPrompt", "AI.Azure_AccessAnomaly",
]  # fmt: skip
OPERATIONS = ["ChatCompletions_Create", "Embeddings_Create", "Completions_Create", "Create_Thread"]
FILLER = (
    "The alert was raised because the request pattern of the caller deviated from the historical baseline "
    "of the resource and matched known abuse techniques. "
)


class BodyGenerator:
    def __init__(
        self,
        seed: int = 20261125,
        *,
        accounts: int = 20,
        callers: int = 200,
        span: timedelta = timedelta(days=14),
        step: timedelta | None = None,
        jitter: timedelta = timedelta(minutes=2),
    ) -> None:
        """Event times fall at random within `span`; or, with `step`, they advance by `step` per
        event with up to `jitter` either way, as a live stream does (late and early by a little)."""
        self.rng = random.Random(seed)
        self.start = datetime(2026, 11, 1, tzinfo=UTC)
        self.span = int(span.total_seconds())
        self.step, self.jitter, self.ticks = step, jitter, 0
        self.accounts = [
            f"/subscriptions/{self._guid()}/resourceGroups/rg-ai-{i}/providers/Microsoft.CognitiveServices/accounts/oai-{i}"
            for i in range(accounts)
        ]
        self.callers = [
            f"{self.rng.randint(11, 223)}.{self.rng.randint(0, 255)}.{self.rng.randint(0, 255)}" for _ in range(callers)
        ]

    def _guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _time(self) -> datetime:
        if self.step is not None:
            self.ticks += 1
            return self.start + self.ticks * self.step + self.rng.uniform(-1, 1) * self.jitter
        return self.start + timedelta(seconds=self.rng.randint(0, self.span), microseconds=self.rng.randint(0, 999_999))

    def alert(self) -> bytes:
        account = self.rng.choice(self.accounts)
        t = self._time()
        ip = f"{self.rng.choice(self.callers)}.{self.rng.randint(1, 254)}"
        alert_id = f"{self.rng.randint(2**60, 2**62)}_{self._guid()}"
        user = self.rng.randint(1, 500)  # one person: one UPN, one object id
        user_oid = str(uuid.UUID(int=user, version=4))
        stamp = t.strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
        export = {
            "VendorName": "Microsoft", "AlertType": self.rng.choice(ALERT_TYPES), "ProductName": "Microsoft Defender for Cloud",
            "StartTimeUtc": stamp, "EndTimeUtc": stamp, "TimeGenerated": stamp, "ProcessingEndTime": stamp,
            "Severity": self.rng.choice(["Low", "Medium", "High"]), "Status": "New", "IsIncident": False,
            "SystemAlertId": alert_id, "Intent": "Execution", "AzureResourceId": account.upper(),
            "CompromisedEntity": account.rsplit("/", 1)[-1], "AlertDisplayName": "AI threat detected on a model deployment",
            "Description": FILLER * 6,
            "Entities": [
                {"$id": "2", "Address": ip, "Location": {"CountryCode": "NL", "Asn": 64500}, "Type": "ip"},
                {"$id": "3", "ResourceId": account, "Type": "azure-resource"},
                {"$id": "4", "Name": f"user{user}", "UPNSuffix": "contoso.com", "AadUserId": user_oid, "Type": "account"},
                {"$ref": "2"},
            ],
            "ResourceIdentifiers": [{"$id": "5", "AzureResourceId": account, "Type": "AzureResource"}],
            "RemediationSteps": ["Review the caller's activity.", "Rotate the account keys if the caller is unknown."],
            "ExtendedProperties": {
                "Deployment name": f"gpt-4o-{self.rng.randint(1, 5)}", "Model name": "gpt-4o", "Client IP address": ip,
                "User agent": self.rng.choice(["python-requests/2.32.3", "openai-python/1.54.0", "curl/8.5.0"]),
                "Client principal name": f"user{user}@contoso.com", "resourceType": "Azure OpenAI",
                "Investigation steps": FILLER, "Potential causes": FILLER,
            },
            "AlertUri": f"https://portal.azure.com/#blade/Microsoft_Azure_Security/AlertBlade/alertId/{alert_id}",
        }  # fmt: skip
        if self.rng.random() < 0.2:  # some arrive in the ARM shape
            props = {k[0].lower() + k[1:]: v for k, v in export.items()}
            props["resourceIdentifiers"] = [{"type": "AzureResource", "azureResourceId": account}]
            return json.dumps(
                {
                    "id": f"{account}/providers/Microsoft.Security/locations/westeurope/alerts/{alert_id}",
                    "properties": props,
                }
            ).encode()
        return json.dumps(export).encode()

    def record(self) -> dict[str, object]:
        account = self.rng.choice(self.accounts).upper()
        category = self.rng.choices(["RequestResponse", "AzureOpenAIRequestUsage", "Audit"], [0.8, 0.15, 0.05])[0]
        props: dict[str, object] = {
            "apiName": "Azure OpenAI API version 2024-10-21", "requestTime": 638978186277847539, "responseTime": 638978186396151323,
            "requestLength": self.rng.randint(100, 120_000), "responseLength": self.rng.randint(100, 9000), "objectId": "",
            "streamType": "Non-Streaming", "modelDeploymentName": f"gpt-4o-{self.rng.randint(1, 5)}", "modelName": "gpt-4o",
            "modelVersion": "2024-08-06",
        }  # fmt: skip
        if category == "AzureOpenAIRequestUsage":
            props |= {"promptTokens": self.rng.randint(10, 9000), "completionTokens": self.rng.randint(10, 2000)}
        return {
            "time": self._time().strftime("%Y-%m-%dT%H:%M:%S.%f0Z"), "resourceId": account, "category": category,
            "operationName": self.rng.choice(OPERATIONS), "callerIpAddress": f"{self.rng.choice(self.callers)}.***",
            "correlationId": self._guid(), "durationMs": self.rng.randint(3, 12_000),
            "resultSignature": self.rng.choices(["200", "401", "429", "400"], [0.9, 0.04, 0.04, 0.02])[0],
            "location": "westeurope", "Tenant": "westeurope", "event": "ShoeboxCallResult",
            "properties": json.dumps(props) if self.rng.random() < 0.8 else props,
        }  # fmt: skip

    def envelope(self, records: int = 25) -> bytes:
        return json.dumps({"records": [self.record() for _ in range(records)]}).encode()

    def bodies(self, n: int) -> list[bytes]:
        """`n` bodies, half alerts and half envelopes, interleaved."""
        return [self.alert() if i % 2 == 0 else self.envelope() for i in range(n)]
