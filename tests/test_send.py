"""`aegis send` (the post-deploy smoke test), up to what can run without a namespace: each body goes
to its hub, batches stay within the size a hub takes, and a wrong namespace is refused before any
connection. Sending needs a deployed namespace (no Event Hubs emulator runs here)."""

from __future__ import annotations

import pytest

from aegis.errors import AegisError
from aegis.replay import collect, messages
from aegis.send import Hubs, batches
from tests.conftest import SAMPLES
from tests.test_cli import aegis


def test_each_sample_goes_to_its_hub():
    bodies = {m.body: Hubs().of(m.body) for f in collect([SAMPLES]) for m in messages(f, "send")}
    defender = [b for b, hub in bodies.items() if hub == "defender-alerts"]
    diagnostics = [b for b, hub in bodies.items() if hub == "ai-diagnostics"]
    assert defender
    assert diagnostics
    assert all(b'"records"' in b for b in diagnostics)
    assert Hubs("a", "d").of(b'{"records": [') == "a"  # malformed on purpose: still sent, to be dead-lettered


def test_batches_keep_order_and_size():
    bodies = [bytes([65 + i % 26]) * 300 for i in range(10)]
    made = list(batches(bodies, max_size=1000))
    assert [len(b) for b in made] == [3, 3, 3, 1]
    assert all(b.size_in_bytes <= 1000 for b in made)
    with pytest.raises(AegisError, match="larger than a batch may be"):
        list(batches([b"x" * 2000], max_size=1000))


def test_a_wrong_namespace_is_refused_before_any_connection():
    wrong = aegis("send", "--namespace", "https://evil.example/")
    assert wrong.returncode == 1
    assert "NAME.servicebus.windows.net" in wrong.stderr
