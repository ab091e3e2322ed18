"""Replicated changes: what the outbox holds, what Redis carries, what ``apply_changes`` merges."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..hlc import hlc_key
from ..messages import MessageStatus, Role
from ._codec import to_json

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


class ChangeKind(StrEnum):
    """What a replicated change describes."""

    CONVERSATION = "conversation"
    MESSAGE = "message"
    TOMBSTONE = "tombstone"


_MESSAGE_FIELDS = (
    "id",
    "role",
    "content",
    "status",
    "created_at",
    "model",
    "tokens_in",
    "tokens_out",
    "metadata",
)
MERGED_FIELDS = ("title", "backend", "model", "system", "metadata")
"""The conversation fields merged one by one, each last-writer-wins on its own stamp."""
_CONVERSATION_FIELDS = ("created_at",)
_TOMBSTONE_FIELDS = ("deleted_at",)
_FIELDS = {
    ChangeKind.MESSAGE: _MESSAGE_FIELDS,
    ChangeKind.CONVERSATION: _CONVERSATION_FIELDS,
    ChangeKind.TOMBSTONE: _TOMBSTONE_FIELDS,
}


@dataclass(frozen=True, slots=True)
class Change:
    """One replicated change: what the outbox holds and what ``apply_changes`` merges.

    ``data`` per kind: MESSAGE ``{id, role, content, status, created_at, model,
    tokens_in, tokens_out, metadata}``; CONVERSATION ``created_at`` and the fields
    that changed, at least one of ``title, backend, model, system, metadata``
    (``hlc`` is the stamp of each; a change written before per-field merge carries
    all five); TOMBSTONE ``{deleted_at}``. Construction checks all
    of it and raises ``StoreError`` naming the bad field, so a ``Change`` in hand is
    always well-formed.
    """

    kind: ChangeKind
    conversation_id: str
    hlc: str
    device_id: str
    data: Mapping[str, Any]

    def __post_init__(self) -> None:
        try:
            kind = ChangeKind(self.kind)
        except ValueError:
            choices = ", ".join(k.value for k in ChangeKind)
            raise StoreError(
                f"malformed change: kind: expected one of {choices}, got {self.kind!r}"
            ) from None
        object.__setattr__(self, "kind", kind)
        where = f"malformed {kind.value} change"
        if not isinstance(self.conversation_id, str) or not self.conversation_id:
            raise StoreError(f"{where}: conversation_id: expected non-empty text")
        where = f"{where} of conversation {self.conversation_id!r}"
        try:
            hlc_key(self.hlc)
        except ValueError as exc:
            raise StoreError(f"{where}: hlc: {exc}") from None
        if not isinstance(self.device_id, str) or not self.device_id:
            raise StoreError(f"{where}: device_id: expected non-empty text")
        if not isinstance(self.data, Mapping):
            raise StoreError(f"{where}: data: expected an object, got {type(self.data).__name__}")
        data = dict(self.data)
        _check_data(kind, data, where)
        object.__setattr__(self, "data", MappingProxyType(data))

    @property
    def change_id(self) -> str:
        """A stable id for dedupe: the same change always has the same id."""
        if self.kind is ChangeKind.MESSAGE:
            return f"msg:{self.data['id']}:{self.hlc}"
        return f"{self.kind.value}:{self.conversation_id}:{self.hlc}"

    @property
    def order_key(self) -> tuple[str, str]:
        """``(hlc, device_id)``: the last-writer-wins order (stamps sort as text)."""
        return self.hlc, self.device_id

    def to_json(self) -> str:
        """Compact JSON text; ``Change.from_json(c.to_json()) == c``."""
        return change_json(self.kind, self.conversation_id, self.hlc, self.device_id, self.data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Change:
        """Parse what ``to_json`` wrote.

        Raises:
            StoreError: the text is not JSON, or not a well-formed change.
        """
        try:
            value = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise StoreError(f"malformed change: not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise StoreError(f"malformed change: expected a JSON object, got {value!r:.80}")
        missing = [
            k for k in ("kind", "conversation_id", "hlc", "device_id", "data") if k not in value
        ]
        if missing:
            raise StoreError(f"malformed change: missing {', '.join(missing)}")
        return cls(
            kind=value["kind"],
            conversation_id=value["conversation_id"],
            hlc=value["hlc"],
            device_id=value["device_id"],
            data=value["data"],
        )


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A change waiting to be replicated; ``id`` grows with every row written."""

    id: int
    change: Change


def change_json(
    kind: ChangeKind, conversation_id: str, hlc: str, device_id: str, data: Mapping[str, Any]
) -> str:
    return to_json(
        {
            "kind": kind.value,
            "conversation_id": conversation_id,
            "hlc": hlc,
            "device_id": device_id,
            "data": data,
        }
    )


def _check_data(kind: ChangeKind, data: dict[str, Any], where: str) -> None:
    missing = [name for name in _FIELDS[kind] if name not in data]
    if missing:
        raise StoreError(f"{where}: data: missing {', '.join(missing)}")

    def expect(name: str, ok: bool, what: str) -> None:
        if not ok:
            raise StoreError(f"{where}: data.{name}: expected {what}, got {data[name]!r:.80}")

    def text(name: str, *, optional: bool = False, non_empty: bool = False) -> None:
        value = data[name]
        if optional and value is None:
            return
        expect(name, isinstance(value, str) and (bool(value) or not non_empty), "text")

    def timestamp(name: str) -> None:
        value = data[name]
        try:
            ok = isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
        except ValueError:
            ok = False
        expect(name, ok, "an ISO 8601 time with a UTC offset")

    def count(name: str) -> None:
        value = data[name]
        ok = value is None or (type(value) is int and value >= 0)
        expect(name, ok, "a non-negative integer or null")

    if kind is ChangeKind.TOMBSTONE:
        timestamp("deleted_at")
        return
    timestamp("created_at")
    if kind is ChangeKind.CONVERSATION:
        if not any(name in data for name in MERGED_FIELDS):
            raise StoreError(f"{where}: data: expected at least one of {', '.join(MERGED_FIELDS)}")
        if "title" in data:
            text("title")
        for name in ("backend", "model", "system"):
            if name in data:
                text(name, optional=True)
        if "metadata" in data:
            expect("metadata", isinstance(data["metadata"], Mapping), "an object")
        return
    expect("metadata", isinstance(data["metadata"], Mapping), "an object")
    text("id", non_empty=True)
    text("content")
    text("model", optional=True)
    expect("role", data["role"] in Role._value2member_map_, "a role (system|user|assistant|tool)")
    expect(
        "status",
        data["status"] in MessageStatus._value2member_map_,
        "a status (complete|partial|error)",
    )
    count("tokens_in")
    count("tokens_out")


STAMP_FIELDS = "UPDATE conversations SET field_hlc = json_patch(field_hlc, ?2) WHERE id = ?1"
"""Stamp the fields named in ``?2`` (a JSON object: field → stamp) of conversation ``?1``."""


def changed_fields(
    conversation_id: str, hlc: str, data: Mapping[str, Any], names: Sequence[str]
) -> tuple[dict[str, Any], tuple[str, str]]:
    """What a local edit of the fields ``names`` replicates, and how it stamps them.

    Returns the CONVERSATION change's data (``created_at`` and those fields only,
    taken from ``data``, the whole record) and the ``STAMP_FIELDS`` parameters.
    Carrying only what changed is what keeps a device that did not pull from
    reverting the other fields elsewhere.
    """
    return (
        {"created_at": data["created_at"], **{name: data[name] for name in names}},
        (conversation_id, to_json(dict.fromkeys(names, hlc))),
    )


MESSAGE_CHANGE_PREFIX = '{"kind":"message",'
"""How the JSON of every MESSAGE change begins (``change_json`` writes keys in a fixed
order), so a reader can tell one without parsing it."""


def parse_outbox_row(path: Path | str, row_id: int, text: str) -> Change:
    """The change stored in outbox row ``row_id`` of the database at ``path``.

    Raises:
        StoreError: the row is not a well-formed change (the file and the row named).
    """
    try:
        return Change.from_json(text)
    except StoreError as exc:
        raise StoreError(f"{path}: outbox row {row_id}: {exc}") from None
