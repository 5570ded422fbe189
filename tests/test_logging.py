"""Logs are structured and never carry payloads, prompts, keys or tokens."""

from __future__ import annotations

import io

import orjson
import structlog
from structlog.testing import capture_logs

from aegis import log
from aegis.pipeline import Message, Pipeline
from aegis.store import SqliteStore
from tests.conftest import SAMPLES

SECRETS = ["IGNORE ALL PREVIOUS INSTRUCTIONS", "sk-live-0123456789abcdef", "eyJhbGciOiJIUzI1NiJ9.secret-token"]


def hostile_batch() -> list[Message]:
    envelope = orjson.loads((SAMPLES / "diagnostics" / "01-requestresponse-envelope.json").read_bytes())
    envelope["records"][0]["properties"] = {"prompt": SECRETS[0], "apiKey": SECRETS[1]}
    envelope["records"][1]["time"] = SECRETS[2]  # a malformed field whose value is a secret
    alert = orjson.loads((SAMPLES / "defender" / "01-jailbreak-arm.json").read_bytes())
    alert["properties"]["extendedProperties"]["Suspicious prompt"] = SECRETS[0]
    return [
        Message(orjson.dumps(envelope), hub="ai-diagnostics", partition="0", sequence_number=1),
        Message(orjson.dumps(alert), hub="defender-alerts", partition="0", sequence_number=2),
        Message(SECRETS[1].encode() + b"{", hub="defender-alerts", partition="0", sequence_number=3),
        Message(orjson.dumps({"records": [{"time": "x", "resourceId": SECRETS[2], "category": "Audit"}]}), hub="h"),
    ]


def test_no_payload_reaches_the_rendered_logs():
    buf = io.StringIO()
    log.configure(json=True, level="DEBUG", stream=buf)
    try:
        with structlog.contextvars.bound_contextvars(hub="ai-diagnostics", partition="0"):
            counts = Pipeline(SqliteStore(":memory:")).process(hostile_batch())
    finally:
        log.configure(json=True, level="ERROR")
    assert counts.dead_letters >= 3
    lines = [orjson.loads(line) for line in buf.getvalue().splitlines()]
    assert len(lines) == counts.dead_letters  # one structured line per dead letter, nothing per event
    assert all(
        line["event"] == "dead_lettered" and line["hub"] == "ai-diagnostics" and "reason" in line for line in lines
    )
    text = buf.getvalue()
    for secret in SECRETS:
        assert secret not in text
        assert secret[:12] not in text


def test_captured_log_events_name_ids_and_reasons_only():
    log.configure(json=True, level="DEBUG")
    try:
        with capture_logs() as logs:
            Pipeline(SqliteStore(":memory:")).process(hostile_batch())
    finally:
        log.configure(json=True, level="ERROR")
    assert logs
    for entry in logs:
        assert set(entry) <= {"event", "log_level", "reason", "pointer", "message", "normalizer"}
        assert all(s not in str(entry) for s in SECRETS)


def test_redact_masks_sensitive_keys_whatever_the_caller_passes():
    buf = io.StringIO()
    log.configure(json=True, level="INFO", stream=buf)
    try:
        structlog.get_logger("aegis.test").info(
            "call", api_key="k-123", access_token="t-456", body=b"raw", prompt="p", count=3
        )
    finally:
        log.configure(json=True, level="ERROR")
    line = orjson.loads(buf.getvalue())
    assert line["api_key"] == line["access_token"] == line["body"] == line["prompt"] == log.REDACTED
    assert line["count"] == 3
    assert line["level"] == "info"
    assert "timestamp" in line


def test_console_format_is_readable_locally():
    buf = io.StringIO()
    log.configure(json=False, level="INFO", stream=buf)
    try:
        structlog.get_logger("aegis.test").info("batch_processed", messages=3)
    finally:
        log.configure(json=True, level="ERROR")
    assert "batch_processed" in buf.getvalue()
    assert "messages=3" in buf.getvalue()
    assert not buf.getvalue().startswith("{")
