"""One conversation as Markdown (for people) or JSON (for tools).

The one exporter behind ``chatcore history export``, ``Conversation.export()`` and the
chat app's "Export to Markdown". Both formats carry the same facts: the title and id,
the backend and model, the system prompt, and every message with its role, time and
status, the error note of a failed reply and the citations of a reply that has them.

Markdown (a line is left out when what it shows is unknown)::

    # <title>

    Conversation `<id>` · backend `<backend>` · model `<model>`

    **System prompt**

    <system prompt>

    **User** · 2024-05-02 09:30:00 UTC

    <content>

    **Assistant** · 2024-05-02 09:30:01 UTC · `<model, when not the conversation's>` *(partial)*

    <content>

    > <why the reply failed or stopped>

    **Sources**

    - [1] guide.md > Install (chunk 3, score 0.42)

A ``complete`` message has no status mark; ``partial`` and ``error`` are marked and
quote the reason the engine stored (a failed reply with no text shows only that).

JSON (UTF-8, indented, one trailing newline)::

    {
      "conversation": {"id", "title", "created_at", "updated_at", "message_count",
                       "backend", "model", "system"},
      "messages": [{"id", "role", "content", "status", "created_at", "model",
                    "tokens_in", "tokens_out", "metadata"}, ...]
    }

Times are ISO 8601 in UTC; ``metadata`` is the message's stored metadata as is (a
failed reply's ``error``, a RAG reply's ``citations`` list, the plugin that answered
as ``answered_by``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from .errors import ConversationNotFound
from .messages import MessageStatus, citation_lines

if TYPE_CHECKING:
    from .messages import Message
    from .store import ConversationSummary, Store

__all__ = ["EXPORT_FORMATS", "ExportFormat", "Transcript", "export_format", "read_transcript"]

ExportFormat = Literal["markdown", "json"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
_ALIASES: dict[str, ExportFormat] = {"md": "markdown"}
_ROLE_HEADINGS = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def export_format(name: str) -> ExportFormat:
    """The export format ``name`` stands for (``md`` is short for ``markdown``).

    Raises:
        ValueError: ``name`` is not a known format.
    """
    wanted = _ALIASES.get(name, name)
    for known in EXPORT_FORMATS:
        if known == wanted:
            return known
    raise ValueError(f"unknown export format {name!r}: expected one of {', '.join(EXPORT_FORMATS)}")


@dataclass(frozen=True, slots=True)
class Transcript:
    """What an export holds: the stored summary, the system prompt and the messages."""

    summary: ConversationSummary
    messages: tuple[Message, ...]
    system: str | None = None

    def render(self, format: ExportFormat = "markdown") -> str:
        """The transcript as ``markdown`` or ``json`` text (see the module docstring)."""
        if format == "json":
            return self.to_json()
        return self.to_markdown()

    def to_markdown(self) -> str:
        summary = self.summary
        about = f"Conversation `{summary.id}`"
        if summary.backend:
            about += f" · backend `{summary.backend}`"
        if summary.model:
            about += f" · model `{summary.model}`"
        lines = [f"# {summary.title}", "", about]
        if self.system and self.system.strip():
            lines += ["", "**System prompt**", "", self.system.strip()]
        for message in self.messages:
            lines += ["", self._heading(message)]
            body = message.content.rstrip()
            if body:
                lines += ["", body]
            note = message.metadata.get("error")
            # A failed reply's text is its reason (older ones have none): quote it only once.
            if note and message.status is not MessageStatus.COMPLETE and str(note).strip() != body:
                lines += ["", *(f"> {line}".rstrip() for line in str(note).split("\n"))]
            sources = citation_lines(message.metadata.get("citations"))
            if sources:
                lines += ["", "**Sources**", "", *(f"- {source}" for source in sources)]
        return "\n".join(lines) + "\n"

    def _heading(self, message: Message) -> str:
        role = str(message.role)
        heading = (
            f"**{_ROLE_HEADINGS.get(role, role)}** · {message.created_at.strftime(_TIME_FORMAT)}"
        )
        if message.model and message.model != self.summary.model:
            heading += f" · `{message.model}`"
        if message.status is not MessageStatus.COMPLETE:
            heading += f" *({message.status})*"
        return heading

    def to_json(self) -> str:
        document = {
            "conversation": {**self.summary.as_dict(), "system": self.system},
            "messages": [
                {
                    "id": m.id,
                    "role": str(m.role),
                    "content": m.content,
                    "status": str(m.status),
                    "created_at": m.created_at.isoformat(),
                    "model": m.model,
                    "tokens_in": m.tokens_in,
                    "tokens_out": m.tokens_out,
                    "metadata": dict(m.metadata),
                }
                for m in self.messages
            ],
        }
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def read_transcript(store: Store, conversation_id: str) -> Transcript:
    """Read a stored conversation for export (blocking: call it from a worker thread).

    Raises:
        ConversationNotFound: no stored conversation has this id.
    """
    summary = store.get_conversation(conversation_id)
    if summary is None:
        raise ConversationNotFound(conversation_id)
    messages = tuple(store.get_messages(conversation_id))
    return Transcript(summary, messages, store.conversation_system(conversation_id))
