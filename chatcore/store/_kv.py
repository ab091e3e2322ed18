"""Plugin key-value rows: each plugin is handed one namespace and reaches no other."""

from __future__ import annotations

import json
from typing import Any

from ..messages import utcnow
from ._codec import dt_to_text, to_json
from ._connection import StoreConnection


class KeyValueStore(StoreConnection):
    """The part of ``Store`` that keeps ``plugin_kv`` (JSON values per namespace and key)."""

    def kv_get(self, namespace: str, key: str) -> Any | None:
        """The JSON value stored under ``key``, or None."""
        rows = self._read(
            "SELECT value FROM plugin_kv WHERE namespace = ? AND key = ?", [namespace, key]
        )
        return json.loads(rows[0][0]) if rows else None

    def kv_set(self, namespace: str, key: str, value: Any) -> None:
        """Store a JSON-serialisable value (TypeError otherwise)."""
        encoded = to_json(value)
        with self._writing() as conn:
            conn.execute(
                "INSERT INTO plugin_kv (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET "
                "value = excluded.value, updated_at = excluded.updated_at",
                [namespace, key, encoded, dt_to_text(utcnow())],
            )

    def kv_delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; return whether it was there."""
        with self._writing() as conn:
            cursor = conn.execute(
                "DELETE FROM plugin_kv WHERE namespace = ? AND key = ?", [namespace, key]
            )
            return cursor.rowcount > 0

    def kv(self, namespace: str) -> KVNamespace:
        """A view bound to one namespace: what a plugin is handed instead of the store."""
        if not namespace:
            raise ValueError("a key-value namespace cannot be empty")
        return KVNamespace(self, namespace)


class KVNamespace:
    """One plugin's key-value namespace; it cannot reach any other."""

    __slots__ = ("_namespace", "_store")

    def __init__(self, store: KeyValueStore, namespace: str) -> None:
        self._store = store
        self._namespace = namespace

    @property
    def namespace(self) -> str:
        return self._namespace

    def get(self, key: str) -> Any | None:
        return self._store.kv_get(self._namespace, key)

    def set(self, key: str, value: Any) -> None:
        self._store.kv_set(self._namespace, key, value)

    def delete(self, key: str) -> bool:
        return self._store.kv_delete(self._namespace, key)
