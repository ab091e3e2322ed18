"""The public surface of ``chatcore.store`` and ``chatcore.replication`` changes only on purpose."""

from __future__ import annotations

import tomllib
from importlib import resources

from helpers import REPO_ROOT

import chatcore.errors
import chatcore.replication
import chatcore.store

STORE_NAMES = [
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

REPLICATION_NAMES = [
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


def test_the_store_exports_exactly_its_public_names() -> None:
    assert chatcore.store.__all__ == STORE_NAMES
    for name in STORE_NAMES:
        assert getattr(chatcore.store, name) is not None
    public = {n for n in vars(chatcore.store) if not n.startswith("_") and n != "annotations"}
    assert public == set(STORE_NAMES)


def test_replication_exports_exactly_its_public_names() -> None:
    assert chatcore.replication.__all__ == REPLICATION_NAMES
    public = {n for n in vars(chatcore.replication) if not n.startswith("_") and n != "annotations"}
    assert public == set(REPLICATION_NAMES)


def test_store_and_replication_errors_are_one_hierarchy_in_errors() -> None:
    errors = chatcore.errors
    for name in (
        "StoreError",
        "MessageConflict",
        "MigrationError",
        "ReplicationError",
        "ReplicationOff",
        "ReplicationUnavailable",
    ):
        assert name in errors.__all__
        cls = getattr(errors, name)
        assert cls.__module__ == "chatcore.errors"
        assert issubclass(cls, errors.ChatcoreError)
    assert chatcore.store.StoreError is errors.StoreError
    assert chatcore.store.MessageConflict is errors.MessageConflict
    assert issubclass(errors.MigrationError, errors.StoreError)
    assert chatcore.replication.ReplicationOff is errors.ReplicationOff
    assert issubclass(errors.ReplicationUnavailable, errors.ReplicationError)
    unavailable = errors.ReplicationUnavailable(
        "redis://h:1", "refused", chatcore.replication.ConnectivityState.OFFLINE
    )
    assert str(unavailable) == (
        "Redis at redis://h:1 is unreachable: refused; check [replication] redis_url"
    )
    degraded = errors.ReplicationUnavailable(
        "redis://h:1", "OOM", chatcore.replication.ConnectivityState.DEGRADED
    )
    assert str(degraded) == "Redis at redis://h:1 refused the work: OOM"


def test_the_packages_and_the_apply_script_are_declared_for_the_wheel() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert {"chatcore.store", "chatcore.replication"} <= set(project["packages"])
    assert project["package-data"]["chatcore.replication"] == ["*.lua"]
    script = resources.files("chatcore.replication").joinpath("apply.lua").read_text()
    assert "redis.call('XADD', stream" in script
    assert script == chatcore.replication._layout.APPLY_SCRIPT


def test_no_module_of_the_data_layer_is_over_600_lines() -> None:
    for package in ("store", "replication"):
        for module in (REPO_ROOT / "chatcore" / package).glob("*.py"):
            lines = module.read_text().count("\n")
            assert lines <= 600, f"{module.relative_to(REPO_ROOT)} has {lines} lines"
