"""How the replicator stands with Redis, and what it reports about it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ._client import scrub

if TYPE_CHECKING:
    from collections.abc import Sequence


class ConnectivityState(StrEnum):
    """How the replicator stands with Redis."""

    OFFLINE = "offline"
    """Redis can't be reached (refused, timed out, TLS failed)."""
    CONNECTING = "connecting"
    """A connection attempt is under way."""
    ONLINE = "online"
    """Redis answers and accepts writes."""
    DEGRADED = "degraded"
    """Redis answers but refuses the work (out of memory, read-only, loading, auth)."""


@dataclass(frozen=True, slots=True)
class ConnectivityChange:
    """The payload of ``ON_CONNECTIVITY_CHANGE``."""

    previous: ConnectivityState
    state: ConnectivityState
    error: str | None
    target: str
    """Where Redis is, without any password (``redis://host:port``)."""


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """Replication at a glance; ``last_push``/``last_pull`` are ISO 8601 UTC or None."""

    state: str
    pending: int
    last_error: str | None
    device_id: str
    last_push: str | None
    last_pull: str | None

    def as_dict(self) -> dict[str, Any]:
        """Exactly ``{"state","pending","last_error","device_id","last_push","last_pull"}``."""
        return {
            "state": self.state,
            "pending": self.pending,
            "last_error": self.last_error,
            "device_id": self.device_id,
            "last_push": self.last_push,
            "last_pull": self.last_pull,
        }


def classify(
    exc: BaseException, target: str, secrets: Sequence[str]
) -> tuple[ConnectivityState, str]:
    """The state a failed Redis call puts the replicator in, and why (password masked).

    OFFLINE when Redis cannot be reached; DEGRADED when it answers but refuses the
    work (out of memory, read-only, loading, auth) or fails in an unexpected way.
    """
    from redis import exceptions as rx

    text = scrub(str(exc) or type(exc).__name__, secrets)
    degraded = (rx.AuthenticationError, rx.BusyLoadingError, rx.ResponseError)
    if isinstance(exc, degraded) or not isinstance(
        exc, rx.ConnectionError | rx.TimeoutError | OSError
    ):
        # redis-py drops the error code (OOM, READONLY...); its class name keeps it.
        return ConnectivityState.DEGRADED, f"{type(exc).__name__}: {text}"
    # A plain Redis never answers a TLS hello: it waits, so that shows as a timeout.
    tls_trouble = "SSL" in text or "TLS" in text or isinstance(exc, rx.TimeoutError)
    if target.startswith("rediss://") and tls_trouble:
        text = f"TLS handshake failed ({text}); is the server speaking TLS on that port?"
    return ConnectivityState.OFFLINE, text
