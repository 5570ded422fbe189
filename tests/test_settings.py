import pytest

from aegis import settings
from aegis.errors import ConfigurationError


def test_defaults_run_on_the_embedded_store(monkeypatch):
    for name in ("AEGIS_STORE", "AEGIS_DB", "AEGIS_DEFENDER_HUB"):
        monkeypatch.delenv(name, raising=False)
    cfg = settings.load()
    assert cfg.store == "sqlite"
    assert str(cfg.db) == "aegis.db"
    assert cfg.defender_hub == "defender-alerts"
    assert cfg.limits.max_body_bytes == 1_048_576


def test_table_store_without_endpoints_names_the_missing_settings(monkeypatch):
    monkeypatch.setenv("AEGIS_STORE", "table")
    monkeypatch.delenv("AEGIS_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("AEGIS_BLOB_ENDPOINT", "https://acct.blob.core.windows.net")
    with pytest.raises(ConfigurationError, match="AEGIS_TABLE_ENDPOINT must be set when AEGIS_STORE=table") as info:
        settings.load()
    assert "AEGIS_BLOB_ENDPOINT" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"), [("AEGIS_STORE", "postgres"), ("AEGIS_MAX_DEPTH", "0"), ("AEGIS_MAX_BODY_BYTES", "lots")]
)
def test_invalid_values_name_the_setting(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        settings.load()


def test_the_connection_string_never_shows_in_reprs(monkeypatch):
    monkeypatch.setenv("AEGIS_STORAGE_CONNECTION_STRING", "AccountName=x;AccountKey=c2VjcmV0")
    cfg = settings.load()
    assert "c2VjcmV0" not in repr(cfg)
    assert "c2VjcmV0" not in str(cfg.model_dump())


def test_the_console_time_zone_is_an_iana_name_or_an_error_with_examples(monkeypatch):
    monkeypatch.setenv("AEGIS_DISPLAY_TIMEZONE", "Europe/Paris")
    assert settings.load().display_timezone == "Europe/Paris"
    monkeypatch.setenv("AEGIS_DISPLAY_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ConfigurationError, match=r"AEGIS_DISPLAY_TIMEZONE.*not an IANA time zone \(examples: UTC"):
        settings.load()
