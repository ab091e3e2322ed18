"""Replication to Redis: the replicator actor, the Redis layout and its idempotent apply.

The local SQLite file is the source of truth; the replicator pushes its outbox to
Redis in batches (one script call each) and pulls other devices' changes from a
stream. ``docs/replication.md`` tells the whole story.

The modules behind this one are private; import from ``chatcore.replication``.
"""

from __future__ import annotations

from ..errors import ReplicationError as ReplicationError
from ..errors import ReplicationOff as ReplicationOff
from ..errors import ReplicationUnavailable as ReplicationUnavailable
from ._client import describe_target as describe_target
from ._client import open_redis as open_redis
from ._connectivity import ConnectivityChange as ConnectivityChange
from ._connectivity import ConnectivityState as ConnectivityState
from ._connectivity import SyncStatus as SyncStatus
from ._replicator import HEARTBEAT_SECONDS as HEARTBEAT_SECONDS
from ._replicator import PUSH_POLL_SECONDS as PUSH_POLL_SECONDS
from ._replicator import Replicator as Replicator
from ._sync import sync_pull as sync_pull
from ._sync import sync_push as sync_push
from ._sync import sync_status as sync_status

__all__ = [
    "HEARTBEAT_SECONDS",
    "PUSH_POLL_SECONDS",
    "ConnectivityChange",
    "ConnectivityState",
    "ReplicationError",
    "ReplicationOff",
    "ReplicationUnavailable",
    "Replicator",
    "SyncStatus",
    "describe_target",
    "open_redis",
    "sync_pull",
    "sync_push",
    "sync_status",
]
