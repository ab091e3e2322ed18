"""What may leave this machine: changes without plugin-local data, as plugins share them.

A message's plugin-local metadata (``LOCAL_METADATA``) never reaches Redis. A plugin
that must change the text that does (a PII redactor putting its placeholders back in)
does so in a ``BEFORE_SHARE`` hook: the replicator hands it a ``SharedRecord`` of each
message change that has local data, and of each conversation change (its title is
made from the first user message, which keeps what the user typed), with the local
data of the messages concerned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..messages import LOCAL_METADATA, SharedRecord
from ..store import Change, ChangeKind

__all__ = ["SHARED_FIELDS", "local_of", "shared_record", "with_shared", "without_local"]

SHARED_FIELDS: Mapping[ChangeKind, tuple[str, ...]] = {
    ChangeKind.MESSAGE: ("content",),
    ChangeKind.CONVERSATION: ("title", "system"),
}
"""The text fields of a change that ``BEFORE_SHARE`` hooks see and may change."""


def local_of(change: Change) -> Mapping[str, Any]:
    """The plugin-local metadata a message change carries (empty for other changes)."""
    metadata = change.data.get("metadata") if change.kind is ChangeKind.MESSAGE else None
    kept = metadata.get(LOCAL_METADATA) if isinstance(metadata, Mapping) else None
    return kept if isinstance(kept, Mapping) else {}


def without_local(change: Change) -> Change:
    """The change with no plugin-local metadata in it."""
    metadata = change.data.get("metadata")
    if change.kind is not ChangeKind.MESSAGE or not isinstance(metadata, Mapping):
        return change
    if LOCAL_METADATA not in metadata:
        return change
    kept = {k: v for k, v in metadata.items() if k != LOCAL_METADATA}
    return dataclasses.replace(change, data={**change.data, "metadata": kept})


def shared_record(change: Change, local: tuple[Mapping[str, Any], ...]) -> SharedRecord:
    """The texts of ``change`` as the ``BEFORE_SHARE`` hooks see them."""
    texts = {
        name: value
        for name in SHARED_FIELDS.get(change.kind, ())
        if isinstance(value := change.data.get(name), str)
    }
    return SharedRecord(change.conversation_id, texts, local)


def with_shared(change: Change, record: SharedRecord) -> Change:
    """``change`` with the texts the hooks returned (fields it doesn't have are ignored)."""
    updates = {
        name: text
        for name, text in record.texts.items()
        if name in SHARED_FIELDS.get(change.kind, ()) and isinstance(text, str)
    }
    if not updates or all(change.data.get(k) == v for k, v in updates.items()):
        return change
    return dataclasses.replace(change, data={**change.data, **updates})
