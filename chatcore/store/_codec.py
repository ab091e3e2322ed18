"""How times and JSON are written to the database (and into changes sent elsewhere)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime


def dt_to_text(value: datetime) -> str:
    """UTC ISO 8601 with microseconds: fixed width, so text order is time order.

    Naive datetimes are taken as UTC (the domain model only makes aware ones).
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def dt_from_text(text: str) -> datetime:
    """An aware UTC datetime from stored text (a naive one is taken as UTC)."""
    if text.endswith("+00:00"):
        return datetime.fromisoformat(text)  # what dt_to_text writes: UTC already
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def canonical_time(text: str) -> str:
    """Re-encode a remote time so equal instants are equal text on every device."""
    return dt_to_text(dt_from_text(text))


def _json_default(value: object) -> object:
    # Message metadata is a read-only mapping, possibly with nested ones.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON: {value!r}")


def to_json(value: object) -> str:
    """Compact JSON text, non-ASCII kept as is; read-only mappings become objects.

    Raises:
        TypeError: ``value`` holds something JSON cannot represent.
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)
