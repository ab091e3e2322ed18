"""``Store``: the conversation database, put together from its parts."""

from __future__ import annotations

from ._kv import KeyValueStore
from ._merge import ChangeMerger
from ._outbox import OutboxAccess
from ._readers import ConversationReader
from ._writers import ConversationWriter


class Store(ConversationWriter, ChangeMerger, OutboxAccess, ConversationReader, KeyValueStore):
    """The conversation database: blocking calls, safe to use from worker threads.

    ``Store(path, outbox=False)`` opens (creating and migrating as needed) the file.
    Writer-side methods share one connection behind a lock, so a transaction is
    never interleaved with another thread's statements; reader-side methods use
    their own connection and see only committed data. Each part (writing turns,
    merging remote changes, the outbox, reading, plugin key-value rows) lives in
    its own module on top of ``StoreConnection``, which owns the connections.
    """
