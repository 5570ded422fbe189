"""One duration syntax everywhere: `15m`, `1h30m`, ISO 8601 `PT15M`, or seconds; an example in every error."""

from datetime import timedelta

import pytest

from aegis import durations, settings
from aegis.errors import ConfigurationError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500ms", timedelta(milliseconds=500)), ("15m", timedelta(minutes=15)), ("1h30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)), ("PT15M", timedelta(minutes=15)), ("PT1H30M", timedelta(minutes=90)),
        ("P2D", timedelta(days=2)), ("P1DT2H", timedelta(hours=26)), ("pt30s", timedelta(seconds=30)),
        ("90", timedelta(seconds=90)), (" 15m ", timedelta(minutes=15)),
    ],
)  # fmt: skip
def test_both_syntaxes_read_the_same(text, value):
    assert durations.parse(text) == value


@pytest.mark.parametrize("text", ["banana", "15 minutes", "P", "PT", "1h 30m", "-5m", "15x", ""])
def test_anything_else_is_an_error_with_an_example(text):
    with pytest.raises(ValueError, match=r"is not a duration: write it as 15m, 1h, 2d or 1h30m \(or in ISO 8601"):
        durations.parse(text)


def test_settings_take_either_syntax_and_say_how_to_write_one(monkeypatch):
    monkeypatch.setenv("AEGIS_LATENESS", "45m")
    assert settings.load().lateness == timedelta(minutes=45)
    monkeypatch.setenv("AEGIS_LATENESS", "PT2H")
    assert settings.load().lateness == timedelta(hours=2)
    monkeypatch.setenv("AEGIS_LATENESS", "banana")
    with pytest.raises(ConfigurationError, match=r"AEGIS_LATENESS: 'banana' is not a duration: write it as 15m"):
        settings.load()
