"""The ``logging`` middleware: one JSON line per turn, and one per plugin failure.

A turn's line says when (``ts``), which conversation, backend and model, how
long the turn took from this middleware's point of view (``latency_ms``:
everything downstream of it, storing the reply included), the tokens, the
reply's status, what plugins did to it (``outcomes``: ``answered_by``,
``cached``, ``fallback_from``, ``rate_limited``) and the error, if any.

Message text is left out unless ``log_content = true``, and then it is written
with secrets and personal data replaced (see ``_redact``). Secret values from
the environment are removed from every field, text or not.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TextIO

import trio
from pydantic import BaseModel, ConfigDict, Field, model_validator

from chatcore.errors import PluginError
from chatcore.hooks import HookType
from chatcore.plugin import LOCAL_METADATA, BaseMiddleware, PluginMetadata, SharedRecord, hook

from ._redact import Redactor

if TYPE_CHECKING:
    from chatcore.hooks import HookFailure
    from chatcore.messages import ChatContext, Message
    from chatcore.plugin import CallNext

__all__ = ["DEFAULT_LOG_FILE", "LoggingMiddleware", "LoggingSettings", "RotatingFile"]

DEFAULT_LOG_FILE = Path("logs") / "chatcore.jsonl"
"""Below the data dir."""
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUP_COUNT = 3
OUTCOME_KEYS = ("answered_by", "cached", "fallback_from", "rate_limited")
"""Reply metadata that says what a plugin did with the turn."""


class LoggingSettings(BaseModel):
    """The ``[plugins.config]`` table of ``logging``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    path: str | None = None
    """Log file; relative paths are below the data dir (default logs/chatcore.jsonl)."""
    stream: Literal["stderr"] | None = None
    """Write to standard error instead of a file."""
    log_content: bool = False
    """Also log the user's message and the reply, with secrets and personal data redacted."""
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=1024)
    """Size at which the log file is rotated (chatcore.jsonl → chatcore.jsonl.1 …)."""
    backup_count: int = Field(default=DEFAULT_BACKUP_COUNT, ge=0)
    """Rotated files kept; 0 keeps none."""

    @model_validator(mode="after")
    def _one_target(self) -> LoggingSettings:
        if self.path is not None and self.stream is not None:
            raise ValueError("set either path (a file) or stream, not both")
        return self


class RotatingFile:
    """An append-only, owner-only text file that is rotated when it would pass ``max_bytes``."""

    def __init__(self, path: Path, *, max_bytes: int, backup_count: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._open()
        self._size = self.path.stat().st_size

    def _open(self) -> TextIO:
        # Owner-only like the database: even redacted, a log tells who talked about what.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, "a", encoding="utf-8")

    def write_line(self, line: str) -> None:
        data = line + "\n"
        size = len(data.encode("utf-8"))
        if self._size and self._size + size > self.max_bytes:
            self._rotate()
        self._file.write(data)
        self._file.flush()
        self._size += size

    def _rotate(self) -> None:
        self._file.close()
        if self.backup_count == 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self.backup_count - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = self._open()
        self._size = 0

    def close(self) -> None:
        self._file.close()


class LoggingMiddleware(BaseMiddleware):
    """Writes a structured JSON line for every turn and every plugin failure."""

    metadata: ClassVar[PluginMetadata] = PluginMetadata(
        name="logging",
        version="1.0.0",
        description="Structured JSON-lines log of turns and plugin failures (no secrets)",
        tags=("observability",),
        permissions=("filesystem",),
    )
    settings_model: ClassVar[type[BaseModel]] = LoggingSettings
    settings: LoggingSettings

    def __init__(self) -> None:
        super().__init__()
        self.settings = LoggingSettings()
        self._file: RotatingFile | None = None
        self._redactor = Redactor({})
        self.lines_written = 0

    async def _do_initialize(self) -> None:
        # Read at start: a secret exported later is not in this process's environment anyway.
        self._redactor = Redactor()
        if self.settings.stream is not None:
            return
        if self.settings.path is not None:
            path = Path(self.settings.path).expanduser()
        elif self.host is None:
            raise PluginError("logging: outside an engine there is no data dir; set path or stream")
        else:
            path = DEFAULT_LOG_FILE
        if not path.is_absolute():
            if self.host is None:
                raise PluginError(f"logging: relative path {str(path)!r} needs an engine data dir")
            path = self.host.data_dir / path
        self._file = RotatingFile(
            path, max_bytes=self.settings.max_bytes, backup_count=self.settings.backup_count
        )

    async def _do_shutdown(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def health(self) -> Mapping[str, Any]:
        target = "stderr" if self._file is None else str(self._file.path)
        return {"ok": True, "target": target, "lines_written": self.lines_written}

    @property
    def log_path(self) -> Path | None:
        """The file being written, or None when logging to a stream."""
        return None if self._file is None else self._file.path

    # -- the turn --

    async def handle(self, context: ChatContext, call_next: CallNext) -> Message:
        started = trio.current_time()
        try:
            reply = await call_next(context)
        except Exception as exc:
            await self._log_turn(context, None, started, error=f"{type(exc).__name__}: {exc}")
            raise
        await self._log_turn(context, reply, started, error=reply.metadata.get("error"))
        return reply

    @hook(HookType.ON_ERROR)
    async def log_failure(self, failure: HookFailure, context: ChatContext) -> None:
        """One line per plugin failure, as the hook registry reports it."""
        self._write(
            {
                "ts": _now(),
                "event": "plugin_error",
                "conversation_id": context.conversation_id or None,
                "plugin": failure.name,
                "hook": str(failure.hook_type),
                "timed_out": failure.timed_out,
                "error": failure.error,
            }
        )

    async def _log_turn(
        self, context: ChatContext, reply: Message | None, started: float, *, error: Any
    ) -> None:
        record: dict[str, Any] = {
            "ts": _now(),
            "event": "turn",
            "conversation_id": context.conversation_id,
            "backend": context.backend,
            "model": context.model,
            "latency_ms": round((trio.current_time() - started) * 1000.0, 3),
            "tokens": None,
            "status": "error",
            "outcomes": {},
            "error": None if error is None else str(error),
        }
        if reply is not None:
            record["backend"] = reply.metadata.get("backend") or context.backend
            record["model"] = reply.model or context.model
            record["tokens"] = {"in": reply.tokens_in, "out": reply.tokens_out}
            record["status"] = str(reply.status)
            record["outcomes"] = {k: reply.metadata[k] for k in OUTCOME_KEYS if k in reply.metadata}
        if self.settings.log_content:
            sources = [*context.messages, *([reply] if reply is not None else [])]
            user = context.last_user_message
            record["user"] = None if user is None else await self._text(context, user, sources)
            record["reply"] = None if reply is None else await self._text(context, reply, sources)
        self._write(record)

    async def _text(self, context: ChatContext, message: Message, sources: list[Message]) -> str:
        """A message's text as it may be logged: after the plugins' BEFORE_SHARE hooks
        (given what every message of the turn keeps locally), then this module's patterns."""
        text = message.content
        if self.host is not None:
            shared = await self.host.share(
                SharedRecord(
                    context.conversation_id,
                    {"content": text},
                    tuple(_local(m) for m in sources),
                    destination="log",
                )
            )
            text = shared.texts.get("content", text)
        return self._redactor.redact(text)

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(_scrub(record, self._redactor), ensure_ascii=False, default=str)
        if self._file is not None:
            self._file.write_line(line)
        else:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        self.lines_written += 1


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _local(message: Message) -> Mapping[str, Any]:
    kept = message.metadata.get(LOCAL_METADATA)
    return kept if isinstance(kept, Mapping) else {}


def _scrub(value: Any, redactor: Redactor) -> Any:
    """Every string in ``value`` without the environment's secret values."""
    if isinstance(value, str):
        return redactor.secrets_only(value)
    if isinstance(value, dict):
        return {k: _scrub(v, redactor) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, redactor) for v in value]
    return value
