"""Conversation memory: history within a token budget, a running summary, long-term facts.

Every turn, ``Memory.enrich`` keeps the system prompt, the new user message and the
newest earlier messages that fit in ``max_context_tokens - reserve_reply_tokens``
(estimated by ``features._tokens``). What falls out is replaced by a running
summary that the backend writes in the background: a turn never waits for it.
The summary lives in the plugin's key-value namespace and is reused until more
than ``summary_refresh_messages`` dropped messages are not covered by it.

Long-term memory: "remember that …" stores a fact for the user (table
``memories``), "forget that …" removes matching ones, and facts that share words
with the new message are injected as a system message. ``MemoryStore`` is the
blocking Python API behind the plugin and the ``chatcore memory`` command.
"""

from __future__ import annotations

import builtins
import functools
import json
import logging
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import trio
from pydantic import BaseModel, ConfigDict, Field, model_validator

from chatcore.errors import InvalidInput, PluginError
from chatcore.messages import REPLY_METADATA, ChatContext, Message, Role, new_id, utcnow
from chatcore.plugin import BaseFeatureExtension, PluginMetadata, connect_database
from chatcore.result import PluginResult

from ._memory_schema import MEMORY_MIGRATIONS
from ._tokens import (
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMING_TOKENS,
    estimate_tokens,
    truncate_to_tokens,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import click

__all__ = [
    "DEFAULT_MAX_CONTEXT_TOKENS",
    "DEFAULT_RESERVE_REPLY_TOKENS",
    "DEFAULT_USER",
    "FACTS_PREFIX",
    "SUMMARY_PREFIX",
    "SUMMARY_PURPOSE",
    "Memory",
    "MemoryRecord",
    "MemorySettings",
    "MemoryStore",
    "keep_newest",
    "memory_command",
    "parse_command",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONTEXT_TOKENS = 4096
DEFAULT_RESERVE_REPLY_TOKENS = 512
DEFAULT_USER = "default"
DEFAULT_MAX_MEMORIES = 5
DEFAULT_SUMMARY_REFRESH_MESSAGES = 6
DEFAULT_SUMMARY_MAX_TOKENS = 400
DEFAULT_SUMMARY_INPUT_TOKENS = 3000
MAX_MEMORY_CHARS = 2000
MAX_SUMMARY_ROUNDS = 4
"""Backend calls one summary job may make to catch up on a long stretch of dropped turns."""
CACHE_LIMIT = 50_000
"""Token counts kept per message text before the cache is cleared."""
SUMMARY_CACHE_LIMIT = 1024
"""Cut summaries kept (by summary and room) before that cache is cleared."""

SUMMARY_PREFIX = "Summary of the earlier conversation: "
FACTS_PREFIX = "Things the user asked you to remember:"
SUMMARY_PURPOSE = "memory-summary"
"""``ChatContext.metadata["purpose"]`` of the plugin's summary requests to a backend."""
SUMMARY_SYSTEM = (
    "You keep a running summary of a conversation between a user and an assistant. "
    "Merge the previous summary with the new messages into one concise summary of at "
    "most {words} words. Keep names, facts, decisions, open questions and the user's "
    "preferences; leave out small talk. Reply with the summary only."
)
KV_SUMMARY_KEY = "summary:{conversation_id}"


# --- settings --------------------------------------------------------------------------------


class MemorySettings(BaseModel):
    """The ``[plugins.config]`` table of the memory plugin."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_context_tokens: int = Field(default=DEFAULT_MAX_CONTEXT_TOKENS, ge=256)
    """The model's context window, in (estimated) tokens."""
    reserve_reply_tokens: int = Field(default=DEFAULT_RESERVE_REPLY_TOKENS, ge=0)
    """Tokens of the window kept free for the reply."""
    summarize: bool = True
    """Replace turns that fall out of the budget by a summary the backend writes."""
    summary_backend: str | None = None
    """Backend that writes summaries (default: the conversation's backend)."""
    summary_refresh_messages: int = Field(default=DEFAULT_SUMMARY_REFRESH_MESSAGES, ge=1)
    """Dropped messages the summary may miss before it is rewritten."""
    summary_max_tokens: int = Field(default=DEFAULT_SUMMARY_MAX_TOKENS, ge=16)
    """Longest summary kept (a longer answer is cut at a word boundary)."""
    summary_input_tokens: int = Field(default=DEFAULT_SUMMARY_INPUT_TOKENS, ge=64)
    """Most message tokens sent in one summary request."""
    long_term: bool = True
    """Remember facts on request and inject the relevant ones."""
    user: str = Field(default=DEFAULT_USER, min_length=1)
    """Whose facts to use when the turn's metadata names no ``user``."""
    max_memories: int = Field(default=DEFAULT_MAX_MEMORIES, ge=0)
    """Most facts injected into one turn."""
    answer_directly: bool = True
    """Answer "remember that …" / "forget that …" without calling the backend."""

    @model_validator(mode="after")
    def _room_left(self) -> Self:
        if self.reserve_reply_tokens >= self.max_context_tokens:
            raise ValueError(
                f"reserve_reply_tokens ({self.reserve_reply_tokens}) must be less than "
                f"max_context_tokens ({self.max_context_tokens})"
            )
        return self


# --- long-term memories: the blocking API --------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One remembered fact."""

    id: str
    user: str
    content: str
    created_at: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``chatcore memory ... --json``."""
        return {
            "id": self.id,
            "user": self.user,
            "content": self.content,
            "created_at": self.created_at,
        }


_WORD = re.compile(r"[^\W_]+")
_ID_LIKE = re.compile(r"^[0-9a-f][0-9a-f-]{3,35}$")
_STOPWORDS_TEXT = """
a an the and or but if then than so of to in on at by for with about from as into
is are was were be been being am do does did done have has had having can could should
would will shall may might must not no yes i me my mine myself you your yours we us our
he him his she her it its they them their this that these those there here what which
who whom whose when where why how all any some just also very too please remember forget
tell know think like want get got
"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def _keywords(text: str) -> set[str]:
    """Lower-cased content words of ``text``, plurals folded (dogs → dog)."""
    words = set()
    for word in _WORD.findall(text.lower()):
        if len(word) < 2 or word in _STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        words.add(word)
    return words


class MemoryStore:
    """Long-term facts per user in the ``memories`` table of a chatcore database.

    Blocking and thread-safe (one connection behind a lock). Opening a file creates
    it (owner-only) if missing and applies the ``memory`` migration set.

    Raises:
        MigrationError: the file was migrated by a newer release of the feature.
    """

    def __init__(self, db_path: str | Path) -> None:
        self.path = Path(db_path)
        self._lock = threading.Lock()
        self._conn = connect_database(self.path)
        try:
            MEMORY_MIGRATIONS.apply(self._conn)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(
        self, content: str, *, user: str = DEFAULT_USER, metadata: Mapping[str, Any] | None = None
    ) -> MemoryRecord:
        """Remember ``content`` for ``user``; the same fact twice is stored once.

        Raises:
            InvalidInput: empty, binary or overlong content, or an empty user.
        """
        text = " ".join(content.split())
        _check_user(user)
        if not text:
            raise InvalidInput("memory content is empty: give the fact to remember")
        if "\x00" in text:
            raise InvalidInput("memory content contains NUL bytes; give text")
        if len(text) > MAX_MEMORY_CHARS:
            raise InvalidInput(
                f"memory content too long: {len(text):,} characters (max {MAX_MEMORY_CHARS:,})"
            )
        with self._lock:
            row = self._conn.execute(
                "SELECT id, user, content, created_at, metadata FROM memories "
                "WHERE user = ? AND lower(content) = lower(?)",
                [user, text],
            ).fetchone()
            if row is not None:
                return _record(row)
            record = MemoryRecord(
                id=new_id(),
                user=user,
                content=text,
                created_at=utcnow().isoformat(),
                metadata=dict(metadata or {}),
            )
            self._conn.execute(
                "INSERT INTO memories (id, user, content, created_at, metadata) "
                "VALUES (?, ?, ?, ?, ?)",
                [record.id, user, text, record.created_at, json.dumps(dict(record.metadata))],
            )
            return record

    def forget(self, id_or_text: str, *, user: str = DEFAULT_USER) -> builtins.list[MemoryRecord]:
        """Remove the fact with this id (or unique id prefix), else those matching the text.

        A text matches a fact when every content word of it occurs in the fact
        ("forget that my dog" removes "my dog is called Rex"); a text without
        content words must equal the fact (ignoring case).
        """
        _check_user(user)
        query = " ".join(id_or_text.split())
        if not query:
            raise InvalidInput("nothing to forget: give a memory id or the text of the fact")
        facts = self.list(user=user)
        if _ID_LIKE.match(query.lower()):
            by_id = [m for m in facts if m.id.startswith(query.lower())]
            if len(by_id) == 1:
                return self._delete(by_id)
        wanted = _keywords(query)
        if wanted:
            matched = [m for m in facts if wanted <= _keywords(m.content)]
        else:
            matched = [m for m in facts if m.content.lower() == query.lower()]
        return self._delete(matched)

    def search(
        self, query: str, *, user: str = DEFAULT_USER, limit: int = DEFAULT_MAX_MEMORIES
    ) -> builtins.list[MemoryRecord]:
        """The ``limit`` facts sharing most content words with ``query``, best first.

        Scores are shared words over the square root of the fact's words, so a
        short fact that matches beats a long one that mentions the word in passing;
        ties go to the newer fact. Facts sharing no word are never returned.
        """
        wanted = _keywords(query)
        if not wanted or limit <= 0:
            return []
        scored = []
        for memory in self.list(user=user):
            words = _keywords(memory.content)
            shared = len(wanted & words)
            if shared:
                scored.append((shared / math.sqrt(len(words)), memory.created_at, memory))
        scored.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return [memory for _, _, memory in scored[:limit]]

    def list(self, *, user: str | None = DEFAULT_USER) -> builtins.list[MemoryRecord]:
        """The facts of ``user`` (of every user when None), oldest first."""
        sql = "SELECT id, user, content, created_at, metadata FROM memories"
        params: builtins.list[str] = []
        if user is not None:
            _check_user(user)
            sql += " WHERE user = ?"
            params.append(user)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY created_at, id", params).fetchall()
        return [_record(row) for row in rows]

    def _delete(self, records: Sequence[MemoryRecord]) -> builtins.list[MemoryRecord]:
        if records:
            with self._lock:
                self._conn.executemany(
                    "DELETE FROM memories WHERE id = ?", [[m.id] for m in records]
                )
        return builtins.list(records)


def _check_user(user: str) -> None:
    if not user or not user.strip():
        error = InvalidInput("memory user is empty: name one, or pass None for the default user")
        error.cli_hint = "give --user NAME or leave it out"
        raise error


def _record(row: Sequence[Any]) -> MemoryRecord:
    try:
        metadata = json.loads(row[4] or "{}")
    except ValueError:
        metadata = {}
    return MemoryRecord(
        id=row[0], user=row[1], content=row[2], created_at=row[3], metadata=metadata
    )


# --- commands in chat ------------------------------------------------------------------------

_REMEMBER = re.compile(
    r"^\s*(?:please\s*,?\s+)?remember(?:\s+that\b|\s*:)\s*(?P<fact>.+?)[\s.!]*$", re.I | re.S
)
_FORGET = re.compile(
    r"^\s*(?:please\s*,?\s+)?forget(?:\s+that\b|\s+about\b|\s*:)\s*(?P<fact>.+?)[\s.!]*$",
    re.I | re.S,
)


def parse_command(text: str) -> tuple[str, str] | None:
    """``("remember" | "forget", fact)`` for a message that starts so, else None."""
    for verb, pattern in (("remember", _REMEMBER), ("forget", _FORGET)):
        match = pattern.match(text)
        if match is not None and match.group("fact").strip():
            return verb, " ".join(match.group("fact").split())
    return None


# --- fitting the history ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SummaryJob:
    conversation_id: str
    backend: str
    model: str | None
    previous: str | None
    messages: tuple[Message, ...]


# --- the plugin ------------------------------------------------------------------------------


class Memory(BaseFeatureExtension):
    """History within a token budget, a background running summary, and long-term facts."""

    metadata = PluginMetadata(
        name="memory",
        version="1.0.0",
        description="History within a token budget, running summary, long-term memory",
        tags=("memory", "context"),
        permissions=("store",),
    )
    settings_model: ClassVar[type[BaseModel]] = MemorySettings
    settings: MemorySettings

    def __init__(self) -> None:
        super().__init__()
        self._costs: dict[str, int] = {}
        self._summaries: dict[str, dict[str, Any] | None] = {}
        self._jobs: set[str] = set()
        self._cut_summaries: dict[tuple[str, int], str] = {}
        self._store: MemoryStore | None = None

    async def _do_initialize(self) -> None:
        if self.host is not None and self.settings.long_term:
            path = self.host.database_path
            if path is None:
                raise PluginError("long-term memory keeps facts in the database: it needs a store")
            # In a thread: opening may apply the memory set, which waits for the write lock.
            self._store = await trio.to_thread.run_sync(MemoryStore, path)

    async def _do_shutdown(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    async def health(self) -> Mapping[str, Any]:
        return {"ok": True, "summary_jobs": len(self._jobs)}

    # -- the turn --

    async def enrich(self, context: ChatContext) -> PluginResult[ChatContext]:
        """Fit the history into the budget, add the summary and relevant facts."""
        if not context.messages or context.messages[-1].role is not Role.USER:
            return PluginResult.ok(context)
        new = context.messages[-1]
        user = str(context.metadata.get("user") or self.settings.user)
        info: dict[str, Any] = {}
        if self._store is not None:
            command = parse_command(new.content)
            if command is not None:
                reply = await self._run_command(command, user, info)
                if self.settings.answer_directly:
                    result: PluginResult[ChatContext] = PluginResult.short_circuit(
                        Message.assistant(reply, metadata={"memory": info}), data=context
                    )
                    return result
        return PluginResult.ok(self._fit(context, new, user, info))

    async def _run_command(self, command: tuple[str, str], user: str, info: dict[str, Any]) -> str:
        store = self._store
        assert store is not None
        verb, fact = command
        if verb == "remember":
            record = await trio.to_thread.run_sync(
                functools.partial(store.add, fact, user=user, metadata={"source": "chat"})
            )
            info["remembered"] = record.id
            return f"OK, I'll remember that {record.content}."
        removed = await trio.to_thread.run_sync(functools.partial(store.forget, fact, user=user))
        info["forgotten"] = [m.id for m in removed]
        if not removed:
            return f"I had nothing remembered about “{fact}”."
        return "OK, I've forgotten: " + "; ".join(m.content for m in removed) + "."

    def _tokens(self, text: str) -> int:
        """``estimate_tokens``, cached by text: the history is the same strings every turn."""
        cost = self._costs.get(text)
        if cost is None:
            if len(self._costs) >= CACHE_LIMIT:
                self._costs.clear()
            cost = self._costs[text] = estimate_tokens(text)
        return cost

    def _cost(self, message: Message) -> int:
        return self._tokens(message.content) + MESSAGE_OVERHEAD_TOKENS

    def _fit(
        self, context: ChatContext, new: Message, user: str, info: dict[str, Any]
    ) -> ChatContext:
        settings = self.settings
        budget = settings.max_context_tokens - settings.reserve_reply_tokens
        history = context.messages[:-1]
        # System messages other features put in the history (retrieved passages) stay.
        pinned = [m for m in history if m.role is Role.SYSTEM]
        turns = [m for m in history if m.role is not Role.SYSTEM] if pinned else list(history)
        fixed = REPLY_PRIMING_TOKENS + self._cost(new) + sum(self._cost(m) for m in pinned)
        if context.system:
            fixed += self._tokens(context.system) + MESSAGE_OVERHEAD_TOKENS
        room = budget - fixed

        facts_message = self._facts_message(new.content, user, min(room, budget // 4))
        if facts_message is not None:
            room -= self._cost(facts_message)
            info["memories"] = facts_message.content.count("\n- ")

        keep_from = keep_newest(turns, room, self._cost)
        summary_message: Message | None = None
        if keep_from > 0:
            keep_from, summary_message = self._with_summary(context, turns, room, info)
        info["kept"] = len(turns) - keep_from
        info["dropped"] = keep_from
        if room < 0:
            info["over_budget"] = True

        added = [m for m in (summary_message, facts_message) if m is not None]
        if pinned:
            kept_turns = set(map(id, turns[keep_from:]))
            kept = [m for m in history if m.role is Role.SYSTEM or id(m) in kept_turns]
        else:
            # No system messages in the history: the kept turns are its tail, in order.
            kept = turns[keep_from:]
        enriched = context.replace(messages=(*added, *kept, new))
        reply_metadata = {**context.metadata.get(REPLY_METADATA, {}), "memory": info}
        return enriched.with_metadata(memory=info, **{REPLY_METADATA: reply_metadata})

    def _facts_message(self, query: str, user: str, room: int) -> Message | None:
        if self._store is None or self.settings.max_memories == 0 or room <= 0:
            return None
        facts = self._store.search(query, user=user, limit=self.settings.max_memories)
        lines: list[str] = []
        for fact in facts:
            candidate = "\n".join([FACTS_PREFIX, *lines, f"- {fact.content}"])
            if estimate_tokens(candidate) + MESSAGE_OVERHEAD_TOKENS > room:
                break
            lines.append(f"- {fact.content}")
        if not lines:
            return None
        return Message.system("\n".join([FACTS_PREFIX, *lines]))

    def _with_summary(
        self, context: ChatContext, turns: Sequence[Message], room: int, info: dict[str, Any]
    ) -> tuple[int, Message | None]:
        """Where the kept turns start, and the summary message standing in for the rest."""
        settings = self.settings
        state = self._summary_state(context.conversation_id) if settings.summarize else None
        covered = _covered(state, turns)
        message: Message | None = None
        if state is not None and covered:
            limit = min(settings.summary_max_tokens, room // 2) - MESSAGE_OVERHEAD_TOKENS
            text = self._cut_summary(str(state["summary"]), limit - self._tokens(SUMMARY_PREFIX))
            if text:
                message = Message.system(SUMMARY_PREFIX + text)
                room -= self._cost(message)
        keep_from = keep_newest(turns, room, self._cost)
        # Start at a user message: some APIs refuse a history that opens with a reply.
        while keep_from < len(turns) and turns[keep_from].role is Role.ASSISTANT:
            keep_from += 1
        if not settings.summarize:
            status = "off"
        elif covered == 0:
            status = "pending"  # nothing stored yet covers what fell out
        elif message is None:
            status = "no room"
        elif keep_from - covered > settings.summary_refresh_messages:
            status = "stale"
        else:
            status = "used"
        info["summary"] = status
        if covered:
            info["summarized"] = covered
        if status in ("pending", "stale") and keep_from > covered:
            info["summary_job"] = self._schedule(
                context, turns[covered:keep_from], state if covered else None
            )
        return keep_from, message

    def _cut_summary(self, summary: str, limit: int) -> str:
        """``truncate_to_tokens`` of a stored summary, cached: the same summary and room come
        back every turn, and cutting (a binary search of estimates) costs milliseconds."""
        key = (summary, limit)
        text = self._cut_summaries.get(key)
        if text is None:
            if len(self._cut_summaries) >= SUMMARY_CACHE_LIMIT:
                self._cut_summaries.clear()
            text = self._cut_summaries[key] = truncate_to_tokens(summary, limit)
        return text

    # -- the running summary --

    def _summary_state(self, conversation_id: str) -> dict[str, Any] | None:
        if conversation_id not in self._summaries:
            if self.host is None:
                return None
            if len(self._summaries) >= CACHE_LIMIT:
                self._summaries.clear()
            value = self.host.kv.get(KV_SUMMARY_KEY.format(conversation_id=conversation_id))
            self._summaries[conversation_id] = value if isinstance(value, dict) else None
        return self._summaries[conversation_id]

    def _schedule(
        self, context: ChatContext, messages: Sequence[Message], state: Mapping[str, Any] | None
    ) -> str:
        """Start a summary job for ``messages`` unless one runs for this conversation."""
        conversation_id = context.conversation_id
        if self.host is None:
            return "unavailable"
        if conversation_id in self._jobs:
            return "running"
        backend = self.settings.summary_backend or context.backend
        job = _SummaryJob(
            conversation_id=conversation_id,
            backend=backend,
            model=context.model if backend == context.backend else None,
            previous=str(state["summary"]) if state else None,
            messages=tuple(messages),
        )
        self._jobs.add(conversation_id)
        if not self.host.spawn(functools.partial(self._summarise, job)):
            self._jobs.discard(conversation_id)
            return "queue full"
        return "scheduled"

    async def _summarise(self, job: _SummaryJob) -> None:
        """The background job: fold the dropped messages into the stored summary."""
        host = self.host
        assert host is not None
        try:
            provider = await host.backend(job.backend)
            summary = job.previous
            done = 0
            for _ in range(MAX_SUMMARY_ROUNDS):
                if done >= len(job.messages):
                    break
                batch = _take(job.messages[done:], self.settings.summary_input_tokens, self._cost)
                request = self._summary_request(job, summary, batch)
                reply = await provider.chat(request)
                text = truncate_to_tokens(
                    " ".join(reply.content.split()), self.settings.summary_max_tokens
                )
                if not text:
                    raise PluginError(f"backend {job.backend!r} returned an empty summary")
                summary = text
                done += len(batch)
                state = {
                    "summary": summary,
                    "covers_until_message_id": batch[-1].id,
                    "updated_at": utcnow().isoformat(),
                }
                key = KV_SUMMARY_KEY.format(conversation_id=job.conversation_id)
                await trio.to_thread.run_sync(host.kv.set, key, state)
                self._summaries[job.conversation_id] = state
        finally:
            self._jobs.discard(job.conversation_id)

    def _summary_request(
        self, job: _SummaryJob, previous: str | None, batch: Sequence[Message]
    ) -> ChatContext:
        words = max(20, int(self.settings.summary_max_tokens * 0.6))
        lines = [f"Previous summary:\n{previous}\n" if previous else "Previous summary: none\n"]
        lines.append("New messages:")
        lines.extend(f"{m.role}: {m.content}" for m in batch)
        lines.append("\nWrite the updated summary.")
        return ChatContext(
            conversation_id=job.conversation_id,
            messages=(Message.user("\n".join(lines)),),
            backend=job.backend,
            model=job.model,
            max_tokens=self.settings.summary_max_tokens,
            stream=False,
            system=SUMMARY_SYSTEM.format(words=words),
            metadata={"purpose": SUMMARY_PURPOSE},
        )


def keep_newest(messages: Sequence[Message], room: int, cost: Callable[[Message], int]) -> int:
    """Index of the oldest message kept when the newest ones whose costs fit in ``room`` are.

    ``len(messages)`` when none fits. Walks newest first and stops at the first
    message that doesn't fit, so a long history costs only what is kept.
    """
    total = 0
    index = len(messages)
    while index > 0:
        step = cost(messages[index - 1])
        if total + step > room:
            break
        total += step
        index -= 1
    return index


def _covered(state: Mapping[str, Any] | None, turns: Sequence[Message]) -> int:
    """How many of the oldest ``turns`` the stored summary covers (0 if it matches none)."""
    if not state:
        return 0
    until = state.get("covers_until_message_id")
    for index in range(len(turns) - 1, -1, -1):
        if turns[index].id == until:
            return index + 1
    return 0


def _take(
    messages: Sequence[Message], limit: int, cost: Callable[[Message], int]
) -> Sequence[Message]:
    """The oldest messages whose costs fit in ``limit`` (at least one)."""
    total = 0
    for index, message in enumerate(messages):
        total += cost(message)
        if total > limit and index > 0:
            return messages[:index]
    return messages


# --- chatcore memory ---------------------------------------------------------------------------


class MemoryNotFound(InvalidInput):
    """``chatcore memory forget`` matched nothing."""


def memory_command() -> click.Group:
    """Long-term memories the chat remembers about you.

    The ``chatcore.commands`` entry point ``memory`` (see pyproject.toml): add, list
    and forget long-term facts.
    """
    return _memory_group()


def _memory_group() -> click.Group:
    import click

    from chatcore.plugin import (
        config_option,
        json_option,
        load_command_config,
        print_json,
        run_guarded,
    )

    user_option = click.option(
        "--user",
        default=None,
        help="Whose memories (default: the memory plugin's `user` setting, else 'default').",
    )

    def open_store(config_path: Path | None, user: str | None) -> tuple[MemoryStore, str]:
        config = load_command_config(config_path)
        store: MemoryStore = run_guarded(lambda: MemoryStore(config.db_path))
        return store, user if user is not None else _configured_user(config)

    @click.group(name="memory")
    def group() -> None:
        """Long-term memories the chat remembers about you: add, list, forget.

        In a chat, "remember that …" and "forget that …" do the same.
        """

    @group.command("add")
    @click.argument("text")
    @user_option
    @config_option
    @json_option
    def add(text: str, user: str | None, config_path: Path | None, as_json: bool) -> None:
        """Remember TEXT (a fact about you) from now on."""
        store, who = open_store(config_path, user)
        with store:
            record: MemoryRecord = run_guarded(lambda: store.add(text, user=who))
        if as_json:
            print_json(record.as_dict())
        else:
            click.echo(f"remembered {record.id}: {record.content}")

    @group.command("list")
    @user_option
    @click.option("--all-users", is_flag=True, help="List the memories of every user.")
    @config_option
    @json_option
    def list_(user: str | None, all_users: bool, config_path: Path | None, as_json: bool) -> None:
        """List remembered facts, oldest first."""
        store, who = open_store(config_path, user)
        with store:
            records: builtins.list[MemoryRecord] = run_guarded(
                lambda: store.list(user=None if all_users else who)
            )
        if as_json:
            print_json([r.as_dict() for r in records])
            return
        if not records:
            click.echo(f"no memories for user {who!r}" if not all_users else "no memories")
        for r in records:
            owner = f" [{r.user}]" if all_users else ""
            click.echo(f"{r.id}  {r.created_at[:19]}{owner}  {r.content}")

    @group.command("forget")
    @click.argument("id_or_text")
    @user_option
    @config_option
    @json_option
    def forget(id_or_text: str, user: str | None, config_path: Path | None, as_json: bool) -> None:
        """Forget the memory with this id (or unique prefix), or those matching the text."""
        store, who = open_store(config_path, user)

        def run() -> builtins.list[MemoryRecord]:
            removed = store.forget(id_or_text, user=who)
            if not removed:
                raise MemoryNotFound(f"no memory of user {who!r} matches {id_or_text!r}")
            return removed

        with store:
            removed: builtins.list[MemoryRecord] = run_guarded(run)
        if as_json:
            print_json({"forgotten": [r.as_dict() for r in removed]})
        else:
            for r in removed:
                click.echo(f"forgot {r.id}: {r.content}")

    return group


def _configured_user(config: Any) -> str:
    """The ``user`` of the config's memory plugin entry, so CLI and chat agree on whose facts."""
    for entry in getattr(config, "plugins", ()):
        if entry.plugin == "memory" or entry.name == "memory":
            user = entry.config.get("user")
            if isinstance(user, str) and user.strip():
                return user
    return DEFAULT_USER
