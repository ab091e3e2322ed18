"""The ``normalizer`` processor: tidy the user's message before anything else reads it.

Line ends become ``\\n``; control characters other than newline and tab go;
the text is put in Unicode NFC (so "é" typed two ways compares equal); runs of
blank lines shrink to one; leading and trailing whitespace is trimmed. The
message metadata lists what changed.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

from chatcore.plugin import BaseMessageProcessor, PluginMetadata
from chatcore.result import PluginResult

if TYPE_CHECKING:
    from chatcore.messages import ChatContext, Message

__all__ = ["CHANGES", "Normalizer", "NormalizerSettings", "normalize"]

CHANGES = ("nfc", "control_chars", "blank_lines", "trimmed")
"""The change names, in the order they are applied and listed."""
METADATA_KEY = "normalizer"

_NEWLINES_RE = re.compile(r"\r\n?")
# C0 and C1 controls and DEL, except tab and newline.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Three or more line ends with only spaces or tabs between them: two or more blank lines.
_BLANK_RUN_RE = re.compile(r"\n(?:[ \t]*\n){2,}")


def normalize(text: str) -> tuple[str, list[str]]:
    """Return the normalised text and the names of the changes that applied.

    Controls go before NFC: a control between a letter and its combining mark
    would otherwise keep them from composing until a second pass.
    """
    changes: list[str] = []
    out = _CONTROL_RE.sub("", _NEWLINES_RE.sub("\n", text))
    if out != text:
        changes.append("control_chars")
    if not unicodedata.is_normalized("NFC", out):
        out = unicodedata.normalize("NFC", out)
        changes.append("nfc")
    collapsed = _BLANK_RUN_RE.sub("\n\n", out)
    if collapsed != out:
        changes.append("blank_lines")
        out = collapsed
    trimmed = out.strip()
    if trimmed != out:
        changes.append("trimmed")
        out = trimmed
    changes.sort(key=CHANGES.index)
    return out, changes


class NormalizerSettings(BaseModel):
    """``normalizer`` takes no settings; an unknown key is a config error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Normalizer(BaseMessageProcessor):
    """NFC, no stray control characters, at most one blank line in a row, trimmed."""

    metadata: ClassVar[PluginMetadata] = PluginMetadata(
        name="normalizer",
        version="1.0.0",
        description="Unicode NFC, control characters stripped, blank lines collapsed, trimmed",
        tags=("text",),
    )
    settings_model: ClassVar[type[BaseModel]] = NormalizerSettings

    async def process_message(
        self, message: Message, context: ChatContext
    ) -> PluginResult[Message]:
        """Normalise the user's message; metadata names only the changes that applied."""
        text, changes = normalize(message.content)
        if not changes:
            return PluginResult.ok(message)
        if not text:
            # Nothing but controls and whitespace: an empty message helps nobody, so
            # it goes on as typed and the backend's own validation speaks.
            return PluginResult.ok(message)
        return PluginResult.ok(
            message.replace(content=text).with_metadata(**{METADATA_KEY: {"changes": changes}})
        )
