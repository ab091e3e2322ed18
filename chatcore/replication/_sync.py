"""What ``chatcore sync push|pull|status`` do: one push, one pull, or one probe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from ..errors import ReplicationOff
from ._connectivity import SyncStatus
from ._replicator import SYNC_LAST_PULL, SYNC_LAST_PUSH, Replicator

if TYPE_CHECKING:
    from ..config import Config
    from ..store import Store


def _open(config: Config) -> tuple[Store, Replicator]:
    from ..store import Store

    if not config.replication.redis_url:
        raise ReplicationOff()
    store = Store(config.db_path, outbox=True)
    try:
        return store, Replicator(store, config.replication)
    except BaseException:
        store.close()
        raise


async def _run(config: Config, action: str) -> Any:
    store, replicator = _open(config)
    try:
        if action == "push":
            return await replicator.push_once()
        if action == "pull":
            return await replicator.pull_once()
        return await replicator.probe()
    finally:
        replicator.close()
        store.close()


def sync_push(config: Config) -> int:
    """``chatcore sync push``: drain the outbox once; the number of changes sent.

    Raises:
        ReplicationOff: no ``redis_url``.
        ReplicationUnavailable: Redis is unreachable or refusing writes.
    """
    count: int = trio.run(_run, config, "push")
    return count


def sync_pull(config: Config) -> int:
    """``chatcore sync pull``: merge other devices' changes; how many altered this store."""
    count: int = trio.run(_run, config, "pull")
    return count


def sync_status(config: Config) -> SyncStatus:
    """``chatcore sync status``: the state from one PING, plus the outbox and sync times.

    With replication off, the state is ``"off"``.
    """
    if not config.replication.redis_url:
        from ..store import Store

        with Store(config.db_path) as store:
            return SyncStatus(
                state="off",
                pending=store.outbox_depth(),
                last_error=None,
                device_id=store.device_id,
                last_push=store.sync_get(SYNC_LAST_PUSH),
                last_pull=store.sync_get(SYNC_LAST_PULL),
            )
    status: SyncStatus = trio.run(_run, config, "status")
    return status
