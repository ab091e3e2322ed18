"""One small error hierarchy per concern, each message something a person can act on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from ._plugins._scan import ScanFinding
    from .replication import ConnectivityState

__all__ = [
    "AmbiguousConversationId",
    "BackendAuthError",
    "BackendBadRequest",
    "BackendError",
    "BackendRateLimited",
    "BackendTimeout",
    "BackendUnavailable",
    "ChatcoreError",
    "ConfigError",
    "ConversationNotFound",
    "EngineClosed",
    "EngineError",
    "EngineStopped",
    "HookFailed",
    "InvalidInput",
    "InvalidTransition",
    "MessageConflict",
    "MigrationError",
    "ModelNotFound",
    "PluginError",
    "PluginLoadError",
    "PluginProcessError",
    "PluginRefused",
    "ReplicationError",
    "ReplicationOff",
    "ReplicationUnavailable",
    "ScaffoldError",
    "StoreError",
    "StoreFull",
    "UnknownBackend",
    "describe_error",
]


def describe_error(exc: BaseException) -> str:
    """``TypeName: message`` (just ``TypeName`` when the message is empty), for status and logs."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ChatcoreError(Exception):
    """Base of every error chatcore raises on purpose.

    The message says what is wrong and what to fix in terms that hold everywhere
    (a config key, a URL, an environment variable, an API call). ``cli_hint`` is
    what only the command line can offer (a flag, a ``chatcore`` command): the CLI
    appends it to its error line; the Python API and the chat app leave it alone.
    """

    exit_code: int = 1
    cli_hint: str | None = None
    """Advice for the command line; one written in parentheses follows the message
    after a space, any other after ``"; "``."""


class ConfigError(ChatcoreError):
    """A configuration file (or override) is invalid.

    The message names the file, the dotted key and what was expected, e.g.
    ``config.toml: backends.openai.timeout_seconds: expected a number, got 'abc'``.
    """

    exit_code = 2

    def __init__(self, path: Path | str | None, key: str, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.key = key
        self.problem = problem
        where = f"{self.path}: " if self.path else ""
        keypart = f"{key}: " if key else ""
        super().__init__(f"{where}{keypart}{problem}")


class UnknownBackend(ChatcoreError):
    """A backend name was asked for that the configuration does not define."""

    exit_code = 2

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        choices = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown backend {name!r}; configured backends: {choices}")


class InvalidInput(ChatcoreError):
    """A prompt was rejected before anything was written (empty, too long, NUL bytes)."""

    exit_code = 2


class ConversationNotFound(ChatcoreError):
    exit_code = 2
    cli_hint = "(see `chatcore history list`)"

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"no conversation {conversation_id!r}")


class AmbiguousConversationId(ConversationNotFound):
    """A typed id (a prefix) starts more than one conversation's id or short id."""

    MAX_LISTED = 5
    cli_hint = "`chatcore history list` shows ids that are unique"

    def __init__(self, conversation_id: str, matches: Mapping[str, str]) -> None:
        """``matches``: id → title of the conversations it could mean."""
        super().__init__(conversation_id)
        self.matches = dict(matches)
        listed = [
            f"{cid} ({title})" for cid, title in list(self.matches.items())[: self.MAX_LISTED]
        ]
        more = len(self.matches) - len(listed)
        if more > 0:
            listed.append(f"{more} more")
        self.args = (
            f"conversation id {conversation_id!r} is ambiguous: it matches {', '.join(listed)}; "
            "type more of it",
        )


class PluginError(ChatcoreError):
    """Base of plugin problems."""


class PluginLoadError(PluginError):
    """A plugin could not be found, imported, ordered or initialised."""

    exit_code = 2


class PluginRefused(PluginLoadError):
    """The source scan found denied imports or calls in an untrusted plugin."""

    def __init__(self, findings: Sequence[ScanFinding]) -> None:
        self.findings = list(findings)
        first = str(self.findings[0])
        more = len(self.findings) - 1
        super().__init__(first + (f"; and {more} more" if more else ""))


class PluginProcessError(PluginError):
    """A call to a process-isolated plugin failed because of its process (down, killed, garbled)."""


class ScaffoldError(ChatcoreError):
    """``chatcore plugins new`` cannot write the skeleton (bad name, folder already used)."""

    exit_code = 2


class InvalidTransition(PluginError):
    """A lifecycle transition that the state machine does not allow."""


class HookFailed(PluginError):
    """A hook registered with ``fail_fast`` failed, so the turn fails."""


class BackendError(ChatcoreError):
    """Base of errors from a backend provider.

    ``retryable`` errors (unreachable, rate limited, timed out, server errors) are
    retried with backoff and then moved to the next backend of the router; the
    others (auth, bad request, unknown model) are the user's to fix and fail the
    turn at once. ``backend`` names the configured backend, when known.
    """

    retryable: bool = False

    def __init__(
        self, message: str, *, backend: str | None = None, cli_hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.backend = backend
        if cli_hint is not None:
            self.cli_hint = cli_hint


_ANOTHER_BACKEND = "pick another backend with --backend NAME"
"""The command line's way around a backend that cannot serve now."""


class BackendUnavailable(BackendError):
    """The backend could not be reached, or answered with a server error (5xx)."""

    retryable = True
    cli_hint = _ANOTHER_BACKEND


class BackendTimeout(BackendError):
    """The backend did not answer within ``timeout_seconds``."""

    retryable = True
    cli_hint = _ANOTHER_BACKEND


class BackendRateLimited(BackendError):
    """429: too many requests; ``retry_after`` (seconds) is what the server asked for."""

    retryable = True
    cli_hint = _ANOTHER_BACKEND

    def __init__(
        self,
        message: str,
        *,
        backend: str | None = None,
        retry_after: float | None = None,
        cli_hint: str | None = None,
    ) -> None:
        super().__init__(message, backend=backend, cli_hint=cli_hint)
        self.retry_after = retry_after


class BackendAuthError(BackendError):
    """401/403: the API key is missing, wrong or not allowed (the message names its env var)."""

    cli_hint = _ANOTHER_BACKEND


class BackendBadRequest(BackendError):
    """400/422: the backend refused the request as malformed or too large."""


class ModelNotFound(BackendError):
    """The backend does not have the model that was asked for."""

    def __init__(
        self, message: str, *, backend: str | None = None, cli_hint: str | None = None
    ) -> None:
        if cli_hint is None and backend is not None:
            cli_hint = f"see `chatcore backends models {backend}`"
        super().__init__(message, backend=backend, cli_hint=cli_hint)


class EngineError(ChatcoreError):
    """Base of engine lifecycle errors."""


class EngineClosed(EngineError):
    """The engine is not running (closed, or not yet opened)."""


class EngineStopped(EngineError):
    """The supervisor gave up: an actor crashed faster than its restart intensity."""


class StoreError(ChatcoreError):
    """Base of problems with the local database."""


class StoreFull(StoreError):
    """The disk (or the file system's quota) holding the database is full.

    Nothing of the failed write is kept; every earlier write is. ``data_dir`` is the
    folder of the database file.
    """

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = str(data_dir)
        super().__init__(
            f"no space left for {self.data_dir} (database or disk is full): free some space"
        )


class MessageConflict(StoreError):
    """A message id that is already stored belongs to a different conversation."""

    def __init__(self, message_id: str, stored_in: str, written_to: str) -> None:
        self.message_id = message_id
        self.stored_in = stored_in
        self.written_to = written_to
        super().__init__(
            f"message {message_id!r} belongs to conversation {stored_in!r}, "
            f"not {written_to!r}; a message cannot move between conversations"
        )


class MigrationError(StoreError):
    """A database's recorded migrations do not fit the code that opens it.

    It was migrated by a newer release (a migration this code does not know), or a
    migration set's record has a gap. The message names the file and the set.
    """


class ReplicationError(ChatcoreError):
    """Base of replication problems."""


class ReplicationOff(ReplicationError):
    """A sync was asked for but ``[replication] redis_url`` is empty."""

    exit_code = 2

    def __init__(self) -> None:
        super().__init__(
            "replication is off: [replication] redis_url is empty, so history stays on "
            "this machine; set it (e.g. redis://localhost:6379/0) to sync"
        )


class ReplicationUnavailable(ReplicationError):
    """Redis can't be used now: unreachable (``offline``) or refusing work (``degraded``)."""

    def __init__(self, target: str, reason: str, state: ConnectivityState) -> None:
        self.target = target
        self.reason = reason
        self.state = state
        # Compared by value: the state enum lives with the replicator, which imports this.
        if state == "offline":
            text = f"Redis at {target} is unreachable: {reason}; check [replication] redis_url"
        else:
            text = f"Redis at {target} refused the work: {reason}"
        super().__init__(text)
