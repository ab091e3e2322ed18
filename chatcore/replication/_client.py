"""Reaching Redis: the client, and URLs described without their password."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from ..errors import ReplicationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import redis

    from ..config import ReplicationConfig


def describe_target(url: str) -> str:
    """``scheme://host:port`` (or ``unix://path``) of a Redis URL: never its password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


def database_of(url: str) -> str:
    """The database number a Redis URL selects (path or ``?db=``), as text."""
    parts = urlsplit(url)
    path = parts.path if parts.scheme != "unix" else ""
    db = path.strip("/") or "0"
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if name == "db" and value:
            db = value
    return db


def url_secrets(url: str) -> list[str]:
    """The password of a Redis URL as written and decoded, longest first (to mask)."""
    parts = urlsplit(url)
    found = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def open_redis(settings: ReplicationConfig) -> redis.Redis:
    """A client for ``settings.redis_url`` with the configured timeouts and no retries.

    Retries and backoff are the replicator's (with its connectivity state); the
    client's own would hide an outage behind seconds of silent waiting.

    Raises:
        ReplicationError: the URL can't be used (the password is never shown).
    """
    import redis as redis_lib
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        return redis_lib.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.connect_timeout_seconds,
            socket_timeout=settings.command_timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            health_check_interval=0,
        )
    except (ValueError, TypeError) as exc:
        reason = scrub(str(exc), url_secrets(settings.redis_url))
        target = describe_target(settings.redis_url)
        raise ReplicationError(f"[replication] redis_url {target} is invalid: {reason}") from None
