"""Where replication keeps things in Redis, and the script that applies a batch there.

Layout (``P`` is ``[replication] key_prefix``; ``{conv:ID}`` is a hash tag, so every key
of one conversation lives in one Redis Cluster slot):

- ``P:{conv:ID}:meta`` hash: the conversation's fields (``title``, ``created_at``,
  ``backend``, ``model``, ``system``, ``metadata`` as JSON), each of the five merged
  ones with the stamp that wrote it (``title:hlc``, …; last-writer-wins per field),
  the newest stamp (``hlc``, ``device``), and ``deleted_hlc``/``deleted_at`` once deleted;
- ``P:{conv:ID}:msgs`` hash: message id → message JSON;
- ``P:{conv:ID}:mhlc`` hash: message id → the stamp of the stored version;
- ``P:{conv:ID}:applied`` set: ids of the changes applied already (the dedupe marker);
- ``P:changes`` stream: one entry (fields ``device``, ``change``) per change that
  altered Redis, read by the other devices.

The conversation keys are built by the script (``apply.lua``, next to this module)
from the prefix; Python names only the stream, and the local cursor into it.
"""

from __future__ import annotations

from importlib import resources

from ._client import database_of, describe_target

APPLY_SCRIPT = resources.files(__package__).joinpath("apply.lua").read_text(encoding="utf-8")
"""The Lua source of the apply script (``apply.lua``, shipped as package data)."""

_CURSOR_KEY = "replication.cursor"


def stream_key(prefix: str) -> str:
    """The change stream every device appends to and reads."""
    return f"{prefix}:changes"


def cursor_key(redis_url: str, prefix: str) -> str:
    """The ``sync_state`` key of how far this device has read the stream.

    The cursor belongs to one stream on one server: another URL, database or prefix
    starts afresh.
    """
    return f"{_CURSOR_KEY}:{describe_target(redis_url)}/{database_of(redis_url)}/{prefix}"
