"""One registry abstraction for every plugin kind, with the behaviour attached."""

from __future__ import annotations

import pytest

from aegis.registry import Registry, UnknownName


def test_a_name_is_registered_once_and_an_unknown_one_says_what_there_is():
    r: Registry[int] = Registry("widget")
    r.add("a", 1)
    r.add("b", 2)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        r.add("a", 3)
    with pytest.raises(UnknownName, match=r"no widget 'c' \(there are a, b\)"):
        r["c"]
    with pytest.raises(UnknownName, match=r"no widget c, d \(there are a, b\)"):
        r.require(["a", "c", "d"])
    assert r.require(["b", "a"]) == ["b", "a"]
    assert "c" not in r
    assert r.get("c") is None  # a mapping: get, in, items work as on a dict
    assert dict(r.items()) == {"a": 1, "b": 2}
    with pytest.raises(UnknownName):
        r.replace("c", 4)


def test_every_plugin_kind_is_one_registry_and_every_action_has_its_run():
    from aegis.correlate.kinds import KINDS
    from aegis.deliver.run import DELIVERERS
    from aegis.enrich import corroborate, defender, graph, local, log_analytics  # noqa: F401 - they register
    from aegis.enrich.base import ENRICHERS
    from aegis.normalize.registry import REGISTRY as NORMALIZERS
    from aegis.respond import execute  # noqa: F401 - importing it attaches, and checks, every action's run
    from aegis.respond.actions import ACTIONS

    kinds = {r.kind: r for r in (KINDS, DELIVERERS, ENRICHERS, NORMALIZERS, ACTIONS, corroborate.SOURCES)}
    assert set(kinds) == {"rule kind", "deliverer", "enricher", "normalizer", "action", "corroboration source"}
    assert all(isinstance(r, Registry) and len(r) > 0 for r in kinds.values())
    assert [name for name, spec in ACTIONS.items() if spec.run is None] == []
    assert ACTIONS["disable_user"].run is not ACTIONS["revoke_sessions"].run


def test_an_unknown_plugin_in_the_settings_is_a_configuration_error_naming_the_choices():
    from aegis import settings
    from aegis.enrich.run import Enrichers
    from aegis.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"AEGIS_ENRICHERS: no enricher nope \(there are .*local"):
        Enrichers.from_settings(settings.load(enrichers=["local", "nope"]), None)
