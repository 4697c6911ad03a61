"""HTTP dates (Last-Modified) are written in English whatever the locale (strftime's %a and
%b follow LC_TIME), in GMT whatever the datetime's own zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from gristmill_platform.http.dates import http_date


def test_an_http_date_is_the_imf_fixdate_in_gmt() -> None:
    assert http_date(datetime(2026, 12, 7, 3, 0, 9, 999_000, tzinfo=UTC)) == \
        "Mon, 07 Dec 2026 03:00:09 GMT"
    paris = timezone(timedelta(hours=1))
    assert http_date(datetime(2027, 1, 1, 0, 30, tzinfo=paris)) == \
        "Thu, 31 Dec 2026 23:30:00 GMT"
