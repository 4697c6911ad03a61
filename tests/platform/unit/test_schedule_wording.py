"""A periodic deployment's human-readable schedule reads as documented ('At 03:00 AM
(UTC)') whatever locale the control service runs under: cron-descriptor otherwise takes
its language and its 12- or 24-hour clock from it (a container's C locale gave
'At 03:00', a German one 'Um 03:00')."""

from __future__ import annotations

import locale

import pytest

from gristmill_platform.deployments.schedule import human_readable


@pytest.mark.parametrize("system_locale", [("en_US", "UTF-8"), ("C", "UTF-8"),
                                           ("de_DE", "UTF-8"), ("fr_FR", "UTF-8"),
                                           (None, None)])
def test_the_wording_does_not_follow_the_locale(monkeypatch, system_locale) -> None:
    monkeypatch.setattr(locale, "getlocale", lambda *args: system_locale)
    assert human_readable("0 3 * * *") == "At 03:00 AM (UTC)"
    assert human_readable("0 0 * * *") == "At 12:00 AM (UTC)"
    assert human_readable("30 15 * * 1") == "At 03:30 PM, only on Monday (UTC)"
    assert human_readable("*/15 * * * *") == "Every 15 minutes (UTC)"
