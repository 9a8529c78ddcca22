"""The one way this project reads the wall clock and formats timestamps.

Every timestamp we persist or put on the wire is UTC RFC 3339 with milliseconds
(``2026-11-21T08:24:56.123Z``): sortable as text, which SQLite indexes rely on.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime (freezegun-friendly)."""
    return datetime.now(UTC)


def format_ts(moment: datetime) -> str:
    """Format an aware datetime as UTC RFC 3339 with milliseconds and a ``Z`` suffix."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_ts() -> str:
    """Return :func:`utc_now` formatted with :func:`format_ts`."""
    moment = utc_now()
    # The event log stamps every event: reuse the formatted second, add the milliseconds.
    global _second_cache  # noqa: PLW0603 - one (second, prefix) tuple, swapped atomically
    second = int(moment.timestamp())
    cached_second, prefix = _second_cache
    if cached_second != second:
        prefix = moment.strftime("%Y-%m-%dT%H:%M:%S.")
        _second_cache = (second, prefix)
    return f"{prefix}{moment.microsecond // 1000:03d}Z"


_second_cache: tuple[int, str] = (-1, "")


def parse_ts(text: str) -> datetime:
    """Parse a timestamp written by :func:`format_ts` (any RFC 3339 offset is accepted)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
