"""`aegis send`: the post-deploy smoke test. Pushes message bodies (the bundled samples by default) to
the deployed hubs with the azure-eventhub producer and `DefaultAzureCredential` (Event Hubs Data
Sender on the namespace): Defender alerts to the alerts hub, diagnostic-log envelopes (`records`)
to the diagnostics hub, in batches no larger than the hub accepts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson
from azure.core.credentials import TokenCredential
from azure.eventhub import EventData, EventDataBatch, EventHubProducerClient

from aegis.errors import AegisError

MAX_BATCH = 1_000_000  # bytes: a Standard namespace takes 1 MB per batch


@dataclass(frozen=True)
class Hubs:
    defender: str = "defender-alerts"
    diagnostics: str = "ai-diagnostics"

    def of(self, body: bytes) -> str:
        """The hub a body belongs to: diagnostic settings send `{"records": [...]}` envelopes."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self.defender  # malformed on purpose (the samples' dead-letter cases): the alerts hub
        return self.diagnostics if isinstance(doc, dict) and "records" in doc else self.defender


def batches(bodies: Iterable[bytes], *, max_size: int = MAX_BATCH) -> Iterator[EventDataBatch]:
    """The bodies in order, in batches of at most `max_size` bytes; one body too large is an error."""
    batch = EventDataBatch(max_size_in_bytes=max_size)
    for body in bodies:
        try:
            batch.add(EventData(body))
        except ValueError:
            if len(batch) == 0:
                raise AegisError(f"a message of {len(body)} bytes is larger than a batch may be ({max_size})") from None
            yield batch
            batch = EventDataBatch(max_size_in_bytes=max_size)
            batch.add(EventData(body))
    if len(batch):
        yield batch


def send(namespace: str, credential: TokenCredential, bodies: Iterable[bytes], hubs: Hubs = Hubs()) -> dict[str, int]:
    """Send each body to its hub; how many went to each."""
    by_hub: dict[str, list[bytes]] = {}
    for body in bodies:
        by_hub.setdefault(hubs.of(body), []).append(body)
    sent: dict[str, int] = {}
    for hub, items in by_hub.items():
        with EventHubProducerClient(fully_qualified_namespace=namespace, eventhub_name=hub, credential=credential) as p:
            for batch in batches(items):
                p.send_batch(batch)
        sent[hub] = len(items)
    return sent
