"""The directory: one entity per real principal, learned from every source that pairs its names,
careful with what the stream says (the first pairing stands, a contradiction is a conflict, an
application teaches nothing, Graph settles), on both stores."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from aegis.correlate import detections
from aegis.correlate.engine import Correlator
from aegis.directory import RECHECK, Directory
from aegis.enrich import graph
from aegis.events import Origin, ServicePrincipal, User
from aegis.pipeline import Message, Pipeline
from aegis.records import Principal
from aegis.respond import playbooks
from aegis.respond.planner import plan
from aegis.store import SqliteStore, Store
from tests.conftest import SAMPLES

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MALLORY, MALLORY_OID = "mallory@contoso.com", "7d3e9a61-2c4b-4f1e-8a5d-6b9c0e1f2a3b"
VICTIM_OID = "99999999-aaaa-4bbb-8ccc-dddddddddddd"
SP_OID, SP_APP = "5e5e5e5e-1111-4222-8333-444444444444", "a0a0a0a0-1111-4222-8333-444444444444"
SIGNINS = orjson.loads((SAMPLES / "diagnostics" / "05-signin.json").read_bytes())
AI_LOGS = orjson.loads((SAMPLES / "diagnostics" / "01-requestresponse-envelope.json").read_bytes())
ARM_ALERT = orjson.loads((SAMPLES / "defender" / "01-jailbreak-arm.json").read_bytes())


def signin(upn: str, oid: str) -> dict[str, Any]:
    r = copy.deepcopy(SIGNINS["records"][0])
    r["properties"] |= {"userPrincipalName": upn, "userId": oid, "id": f"{upn}-{oid}"}
    return r


def sp_signin(oid: str = SP_OID, *, managed: bool = False) -> dict[str, Any]:
    r = copy.deepcopy(SIGNINS["records"][0])
    r["category"] = "ManagedIdentitySignInLogs" if managed else "ServicePrincipalSignInLogs"
    p = r["properties"]
    for k in ("userPrincipalName", "userId", "userDisplayName"):
        p.pop(k, None)
    p |= {"servicePrincipalId": oid, "appId": SP_APP, "servicePrincipalName": "nightly-embedder"}
    return r


def ai_log(oid: str, n: int = 0) -> dict[str, Any]:
    r = copy.deepcopy(AI_LOGS["records"][0])
    r["properties"]["objectId"] = oid
    r["correlationId"] = f"00000000-0000-0000-0000-{n:012d}"
    return r


def alert(n: int, *, upn: str | None = None, oid: str | None = None) -> dict[str, Any]:
    """The sample jailbreak alert as the n-th of a campaign, naming its user by UPN or object id."""
    a = copy.deepcopy(ARM_ALERT)
    p = a["properties"]
    sysid = f"25168615229999{n:05d}_a1b2c3d4-0001-4e5f-8a9b-0c1d2e3f4a5b"
    a["name"] = p["systemAlertId"] = sysid
    a["id"] = a["id"].rsplit("/", 1)[0] + "/" + sysid
    account: dict[str, Any] = {"type": "account"}
    if upn:
        account |= {"name": upn.split("@")[0], "upnSuffix": upn.split("@")[1]}
    if oid:
        account["aadUserId"] = oid
    p["entities"] = [{"address": f"198.51.100.{n + 1}", "type": "ip"}, account]
    p["extendedProperties"] = {}
    p["startTimeUtc"] = p["timeGeneratedUtc"] = (NOW + timedelta(minutes=2 * n)).isoformat()
    return a


def pipeline(store: Store) -> Pipeline:
    return Pipeline(store, correlator=Correlator(detections.load().detections, store),
                    clock=lambda: NOW + timedelta(hours=1))  # fmt: skip


def send(p: Pipeline, *items: dict[str, Any], hub: str = "test") -> None:
    p.process([Message(orjson.dumps(i), hub=hub) for i in items])


def test_entries_round_trip_on_both_stores_under_keys_a_table_row_key_may_not_hold(store: Store):
    guest = "mallory_fabrikam.com#EXT#@contoso.onmicrosoft.com"
    entries = {f"oid:{i:08d}-0000-0000-0000-000000000000": Principal("user", f"{i:08d}-0000-0000-0000-000000000000")
               for i in range(40)}  # fmt: skip
    entries[f"upn:{guest.lower()}"] = Principal("user", MALLORY_OID, guest.lower(), "Mallory", source="signin_log")
    store.save_principals(entries)
    wanted = [*entries, "oid:not-there"]
    assert store.principals(wanted) == entries  # more than a filter's 14 row keys, and a '#'
    store.save_principals({f"upn:{guest.lower()}": Principal("user", MALLORY_OID, guest.lower(), conflict=True)})
    assert store.principals([f"upn:{guest.lower()}"])[f"upn:{guest.lower()}"].conflict


def test_a_user_named_by_upn_in_one_alert_and_by_object_id_in_another_is_one_user_and_one_incident(store: Store):
    p = pipeline(store)
    send(p, signin(MALLORY, MALLORY_OID), hub="ai-diagnostics")
    send(p, alert(0, upn=MALLORY), alert(1, oid=MALLORY_OID), alert(2, upn=MALLORY), hub="defender-alerts")
    (campaign,) = [i for i in store.incidents() if i.detection == "ai-prompt-attack-campaign-by-user"]
    assert campaign.event_count == 3
    (user,) = [e for e in campaign.entities if isinstance(e, User)]
    assert (user.upn, user.object_id) == (MALLORY, MALLORY_OID)


def test_without_the_directory_the_same_alerts_are_two_users_and_no_campaign():
    store = SqliteStore(":memory:")
    p = pipeline(store)
    p.directory.apply = list  # type: ignore[method-assign]  # nothing learned, nothing completed
    send(p, signin(MALLORY, MALLORY_OID), hub="ai-diagnostics")
    send(p, alert(0, upn=MALLORY), alert(1, oid=MALLORY_OID), alert(2, upn=MALLORY), hub="defender-alerts")
    assert not [i for i in store.incidents() if i.detection == "ai-prompt-attack-campaign-by-user"]


def test_an_object_id_a_sign_in_shows_to_be_a_service_principal_is_one_and_is_never_disabled_as_a_user():
    store = SqliteStore(":memory:")
    p = pipeline(store)
    send(p, sp_signin(), hub="ai-diagnostics")
    completed = p.directory.apply([_normalized(ai_log(SP_OID, 1))])[0]
    (sp,) = [e for e in completed.entities if isinstance(e, ServicePrincipal)]
    assert (sp.object_id, sp.app_id, sp.name, sp.kind) == (SP_OID, SP_APP, "nightly-embedder", "application")
    assert not [e for e in completed.entities if isinstance(e, User)]
    # and a managed identity is told apart from an application
    send(p, sp_signin(VICTIM_OID, managed=True), hub="ai-diagnostics")
    (mi,) = [e for e in p.directory.apply([_normalized(ai_log(VICTIM_OID, 2))])[0].entities
             if isinstance(e, ServicePrincipal)]  # fmt: skip
    assert mi.kind == "managed_identity"


def test_a_service_principals_incident_plans_no_user_step(tmp_path):
    """Key guessing then access by a service principal's object id: the plan signs out and blocks
    users, and a service principal is none."""
    store = SqliteStore(":memory:")
    p = pipeline(store)
    send(p, sp_signin(), hub="ai-diagnostics")
    send(p, *[ai_log(SP_OID, n) | {"time": (NOW + timedelta(seconds=n)).isoformat(),
                                   "resultSignature": "401" if n < 8 else "200"} for n in range(10)],
         hub="ai-diagnostics")  # fmt: skip
    incidents = store.incidents()
    assert incidents
    for incident in incidents:
        assert not [e for e in incident.entities if isinstance(e, User)]
        assert not [s for s in plan(incident, playbooks.load()) if s.action in ("disable_user", "revoke_sessions")]


def test_an_alerts_account_stays_a_user_whatever_the_directory_says():
    store = SqliteStore(":memory:")
    d = Directory(store, clock=lambda: NOW)
    d.learn([Principal("service_principal", MALLORY_OID, source="signin_log")])
    (event,) = d.apply([_normalized(alert(0, upn=MALLORY, oid=MALLORY_OID))])
    assert [e for e in event.entities if isinstance(e, User)]


def test_a_forged_pairing_after_the_real_one_is_a_conflict_and_moves_no_name_onto_another_object_id():
    store = SqliteStore(":memory:")
    p = pipeline(store)
    send(p, signin(MALLORY, MALLORY_OID), hub="ai-diagnostics")
    # someone with the hub's Send key pairs Mallory's UPN with another person's object id
    send(p, signin(MALLORY, VICTIM_OID), hub="ai-diagnostics")
    (event,) = p.directory.apply([_normalized(alert(0, upn=MALLORY))])
    (user,) = [e for e in event.entities if isinstance(e, User)]
    assert user.object_id is None  # neither object id is put on her UPN now
    keys = store.principals([f"upn:{MALLORY}", f"oid:{MALLORY_OID}", f"oid:{VICTIM_OID}"])
    assert len(keys) == 3
    assert all(e.conflict for e in keys.values())
    # Graph settles it: its word replaces the stream's
    Directory(store, clock=lambda: NOW).learn(
        graph.principals_of({"users": [{"id": MALLORY_OID, "upn": MALLORY, "name": "Mallory"}]})
    )
    fresh = Directory(store, clock=lambda: NOW)
    (event,) = fresh.apply([_normalized(alert(0, upn=MALLORY))])
    (user,) = [e for e in event.entities if isinstance(e, User)]
    assert user.object_id == MALLORY_OID
    # and the stream cannot overrule Graph afterwards
    fresh.learn([Principal("user", VICTIM_OID, MALLORY, source="signin_log")])
    assert not Directory(store).store.principals([f"upn:{MALLORY}"])[f"upn:{MALLORY}"].conflict


def test_an_applications_word_teaches_nothing():
    store = SqliteStore(":memory:")
    d = Directory(store, clock=lambda: NOW)
    event = _normalized(alert(0, upn=MALLORY, oid=MALLORY_OID))
    app = replace(event, entities=tuple(replace(e, origin=Origin.APP) for e in event.entities))
    d.apply([app])
    assert store.principals([f"upn:{MALLORY}"]) == {}


def test_a_key_unknown_to_the_store_is_asked_again_later_so_other_workers_learnings_arrive():
    store = SqliteStore(":memory:")
    now = [NOW]
    mine = Directory(store, clock=lambda: now[0])
    (event,) = mine.apply([_normalized(alert(0, upn=MALLORY))])
    assert [e.object_id for e in event.entities if isinstance(e, User)] == [None]
    Directory(store, clock=lambda: now[0]).learn([Principal("user", MALLORY_OID, MALLORY, source="signin_log")])
    assert [e.object_id for e in mine.apply([event])[0].entities if isinstance(e, User)] == [None]  # cached
    now[0] += RECHECK
    assert [e.object_id for e in mine.apply([event])[0].entities if isinstance(e, User)] == [MALLORY_OID]


def _normalized(item: dict[str, Any]) -> Any:
    from tests.helpers import normalize_one

    return normalize_one(item)[1][0]
