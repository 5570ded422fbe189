"""`aegis drill`: the test prompt through the real OpenAI SDK for Azure against the local HTTPS
server (answering the documented content-filter shapes), the stages watched in a store, and the
whole drill on the embedded default (`--local`)."""

from __future__ import annotations

import json
import ssl
from datetime import timedelta
from typing import Any

import httpx2
import pytest

from aegis import drill
from aegis.drill import DrillFailed, Report
from tests.test_approvals import ACCOUNT, incident, planned
from tests.test_cli import aegis
from tests.wire import Reply, WireServer

DEPLOYMENT = "gpt-4o-drill"
PATH = f"/openai/deployments/{DEPLOYMENT}/chat/completions"
# the documented 400 of a prompt Prompt Shields blocked (error.code content_filter, the jailbreak result)
BLOCKED = {"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                                "management policy.", "type": None, "param": "prompt", "code": "content_filter",
                     "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation",
                                                   "content_filter_result": {"jailbreak": {"detected": True,
                                                                                           "filtered": True}}}}}  # fmt: skip
ANSWERED = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1764662400, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "DAN is here"}}]}  # fmt: skip


@pytest.fixture
def server(tmp_path):
    with WireServer(tmp_path) as srv:
        yield srv


def prompt(server: WireServer) -> str:
    tokens: list[int] = []

    def token() -> str:
        tokens.append(1)
        return "drill-token"

    with httpx2.Client(verify=ssl.create_default_context(cafile=str(server.ca_file))) as http:
        return drill.send_prompt(server.url, DEPLOYMENT, token, http_client=http)


def test_the_prompt_goes_through_the_openai_sdk_with_an_entra_token_and_prompt_shields_must_block_it(server):
    server.expect("POST", PATH, Reply(400, BLOCKED))
    assert prompt(server) == "blocked by Prompt Shields (jailbreak filtered)"
    (seen,) = server.seen
    assert seen.headers["authorization"] == "Bearer drill-token"  # no key: the caller's Entra identity
    assert seen.query["api-version"] == [drill.API_VERSION]
    assert seen.body["messages"] == [{"role": "user", "content": drill.PROMPT}]
    assert "DRILL" in drill.PROMPT  # it says what it is


def test_a_deployment_that_answers_or_filters_for_another_reason_fails_the_prompt_stage(server):
    server.expect("POST", PATH, Reply(200, ANSWERED))
    with pytest.raises(DrillFailed, match="answered the drill prompt: its content filter does not block jailbreaks"):
        prompt(server)
    hate = json.loads(json.dumps(BLOCKED))
    hate["error"]["innererror"]["content_filter_result"] = {"hate": {"filtered": True, "severity": "high"}}
    server.expect("POST", PATH, Reply(400, hate))
    with pytest.raises(DrillFailed, match="not as a jailbreak"):
        prompt(server)


class Seen:
    """The store as the drill reads it: an incident, its evidence, its steps."""

    def __init__(self, store: Any, incidents: list[Any]) -> None:
        self.store, self._incidents = store, incidents

    def incidents(self) -> list[Any]:
        return self._incidents

    def evidence(self, i: Any) -> list[Any]:
        return []

    def steps(self, **kw: Any) -> list[Any]:
        return self.store.steps(**kw)


def test_every_stage_comes_and_is_timed_from_the_start(tmp_path, sqlite_store):
    _, store, _, _ = planned(tmp_path, sqlite_store)
    waiting = next(s for s in store.steps(status=["awaiting_approval"]))
    store.replace_step(waiting.next(card="19:x;messageid=1|1", card_shows=waiting.status), audit=[])
    started = incident().first_seen - timedelta(seconds=30)
    ticks = iter(range(100))
    report = drill.watch(Report(started), Seen(store, [incident()]), ACCOUNT, wait=lambda: None,
                         clock=lambda: started + timedelta(seconds=10 * next(ticks)), timeout=timedelta(minutes=5),
                         card_expected=True, planned=lambda i: 3)  # fmt: skip
    stages = {s.name: s for s in report.stages}
    assert [stages[n].ok for n in ("alert", "incident", "plan", "card")] == [True, True, True, True]
    assert stages["card"].detail.startswith("card 19:x;messageid=1|1")
    assert stages["plan"].after is not None
    assert report.to_dict()["ok"] is True


def test_a_stage_that_never_comes_fails_the_drill_and_says_what_was_waited_for(tmp_path, sqlite_store):
    _, store, _, _ = planned(tmp_path, sqlite_store)
    started = incident().first_seen + timedelta(hours=1)  # the only incident is older: not the drill's
    ticks = iter(range(100))
    with pytest.raises(DrillFailed, match="the alert stage never came") as failed:
        drill.watch(Report(started), Seen(store, [incident()]), ACCOUNT, wait=lambda: None,
                    clock=lambda: started + timedelta(minutes=next(ticks)), timeout=timedelta(minutes=30),
                    card_expected=True, planned=lambda i: 3)  # fmt: skip
    assert failed.value.report is not None
    assert "Defender plan for AI services" in failed.value.report.stage("alert").detail


def test_the_local_drill_runs_every_stage_on_the_embedded_default(tmp_path):
    done = aegis("drill", "--local", "--json", "--db", str(tmp_path / "drill.db"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    stages = {s["name"]: s for s in report["stages"]}
    assert report["ok"] is True
    assert (stages["alert"]["ok"], stages["incident"]["ok"]) == (True, True)
    assert "Jailbreak" in stages["alert"]["detail"]
    # the shipped plan starts its triggers at high: the drill says so instead of waiting
    assert "triggers no playbook for a medium defender-ai-alert incident" in stages["plan"]["detail"]


def test_the_drill_names_what_it_needs_and_refuses_a_bad_timeout():
    done = aegis("drill")
    assert done.returncode != 0
    assert "AEGIS_DRILL_ACCOUNT" in done.stdout + done.stderr
    done = aegis("drill", "--local", "--timeout", "soon")
    assert done.returncode != 0
    assert "whole minutes" in done.stdout + done.stderr
