"""SQLite persistence: the local source of truth for conversations.

One writer connection, used from one worker thread at a time and committing turns
in groups (``StoreWriter``), and a separate reader connection, so reads never wait
behind a batch and never see half of one. Schema changes are named migration sets:
the store's own (``CORE_MIGRATIONS``) and one per feature or plugin that keeps
tables in the file (``MigrationSet``).

The modules behind this one are private; import from ``chatcore.store``.
"""

from __future__ import annotations

from ..errors import MessageConflict as MessageConflict
from ..errors import MigrationError as MigrationError
from ..errors import StoreError as StoreError
from ._actor import STORE_MAX_BATCH as STORE_MAX_BATCH
from ._actor import STORE_QUEUE_CAPACITY as STORE_QUEUE_CAPACITY
from ._actor import StoreStatistics as StoreStatistics
from ._actor import StoreWriter as StoreWriter
from ._changes import Change as Change
from ._changes import ChangeKind as ChangeKind
from ._changes import OutboxEntry as OutboxEntry
from ._connection import CHECKPOINT_EVERY_COMMITS as CHECKPOINT_EVERY_COMMITS
from ._kv import KVNamespace as KVNamespace
from ._migrations import Migration as Migration
from ._migrations import MigrationSet as MigrationSet
from ._readers import SEARCH_LIMIT as SEARCH_LIMIT
from ._readers import ConversationSummary as ConversationSummary
from ._readers import SearchHit as SearchHit
from ._readers import search_query as search_query
from ._schema import CORE_MIGRATIONS as CORE_MIGRATIONS
from ._sqlite import DB_FILENAME as DB_FILENAME
from ._sqlite import connect as connect
from ._sqlite import write_transaction as write_transaction
from ._store import Store as Store
from ._writers import DEFAULT_TITLE as DEFAULT_TITLE
from ._writers import TITLE_MAX_CHARS as TITLE_MAX_CHARS
from ._writers import TurnRecord as TurnRecord
from ._writers import make_title as make_title

__all__ = [
    "CHECKPOINT_EVERY_COMMITS",
    "CORE_MIGRATIONS",
    "DB_FILENAME",
    "DEFAULT_TITLE",
    "SEARCH_LIMIT",
    "STORE_MAX_BATCH",
    "STORE_QUEUE_CAPACITY",
    "TITLE_MAX_CHARS",
    "Change",
    "ChangeKind",
    "ConversationSummary",
    "KVNamespace",
    "MessageConflict",
    "Migration",
    "MigrationError",
    "MigrationSet",
    "OutboxEntry",
    "SearchHit",
    "Store",
    "StoreError",
    "StoreStatistics",
    "StoreWriter",
    "TurnRecord",
    "connect",
    "make_title",
    "search_query",
    "write_transaction",
]
