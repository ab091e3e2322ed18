"""What may leave this machine: redacted PII stays redacted in what is replicated."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from ..store import Change, ChangeKind


def pii_of(metadata: Any) -> dict[str, str]:
    """The ``{placeholder: original}`` mapping under a message metadata's ``"pii"`` key."""
    pii = metadata.get("pii") if isinstance(metadata, Mapping) else None
    if not isinstance(pii, Mapping):
        return {}
    return {str(p): str(o) for p, o in pii.items() if o}


def redact_text(text: str, pii: Mapping[str, str]) -> str:
    """Replace each original by its placeholder, longest first, in one pass.

    One pass: a placeholder put in is never searched again, so an original that
    happens to occur inside a placeholder ("EMAIL" in "<EMAIL_1>") can't mangle it.
    """
    if not pii or not text:
        return text
    by_original = {original: placeholder for placeholder, original in pii.items()}
    ordered = sorted(by_original, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(original) for original in ordered))
    return pattern.sub(lambda match: by_original[match.group()], text)


def redact_change(change: Change, pii: Mapping[str, str] | None = None) -> Change:
    """The change as it may leave this machine: redacted PII stays redacted.

    A message whose metadata has ``"pii"`` (``{placeholder: original}``) is sent with
    each original replaced by its placeholder in its content, and without the
    ``"pii"`` key. A conversation change has its title and system prompt redacted
    with ``pii`` (the mappings of its messages: the title is made from the first
    user message, which keeps what the user typed).
    """
    if change.kind is ChangeKind.CONVERSATION:
        if not pii:
            return change
        data = dict(change.data)
        for name in ("title", "system"):
            if isinstance(data.get(name), str):
                data[name] = redact_text(data[name], pii)
        return dataclasses.replace(change, data=data)
    if change.kind is not ChangeKind.MESSAGE:
        return change
    metadata = change.data.get("metadata")
    if not isinstance(metadata, Mapping) or "pii" not in metadata:
        return change
    content = redact_text(str(change.data.get("content") or ""), pii_of(metadata))
    kept = {k: v for k, v in metadata.items() if k != "pii"}
    return dataclasses.replace(change, data={**change.data, "content": content, "metadata": kept})
