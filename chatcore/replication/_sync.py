"""What ``chatcore sync push|pull|status`` do: one push, one pull, or one probe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from ..errors import ReplicationOff
from ._connectivity import SyncStatus
from ._replicator import SYNC_LAST_PULL, SYNC_LAST_PUSH, Replicator

if TYPE_CHECKING:
    from ..config import Config


async def _run(config: Config, action: str) -> Any:
    """One push, pull or probe, with the configured plugins loaded.

    Their ``BEFORE_SHARE`` hooks decide what a change's texts leave as (a PII
    redactor's placeholders), exactly as in the engine, so a push from here sends
    nothing the chat would not have sent.
    """
    from .._plugins import PluginManager
    from ..store import Store

    if not config.replication.redis_url:
        raise ReplicationOff()
    with Store(config.db_path, outbox=True) as store:
        plugins = PluginManager(config, store=store)
        try:
            if action == "push":
                await plugins.initialize()
            replicator = Replicator(store, config.replication, share=plugins.share)
            try:
                if action == "push":
                    return await replicator.push_once()
                if action == "pull":
                    return await replicator.pull_once()
                return await replicator.probe()
            finally:
                replicator.close()
        finally:
            await plugins.shutdown()


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
