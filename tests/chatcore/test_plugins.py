"""Tests for the plugin system: the lifecycle, dependency ordering, discovery and the manager.

Manager tests go through the real interfaces: ``Config``/``PluginEntry``, a
``PluginManager`` on a fresh ``HookRegistry`` and ``await manager.initialize()``.
The plugin classes live in ``tests/support/plugins/sample_plugins.py`` (loaded as
``sample_plugins:Class``) and record what happens to them in its ``EVENTS`` list.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import re
import sys
import textwrap
from collections import deque
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from helpers import PLUGIN_STATUS_KEYS, PLUGINS_DIR
from hypothesis import example, given
from hypothesis import strategies as st

from chatcore._plugins import (
    ALLOWED_TRANSITIONS,
    BasePlugin,
    PluginLifecycle,
    PluginManager,
    topological_order,
)
from chatcore.config import BackendConfig, Config, PluginEntry
from chatcore.errors import InvalidTransition, PluginError, PluginLoadError, UnknownBackend
from chatcore.hooks import HookRegistry, HookType
from chatcore.messages import ChatContext, Message
from chatcore.plugin import PluginState, PluginStatus, PluginType

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence


FIXTURES = PLUGINS_DIR
CTX = ChatContext(conversation_id="conv-1")
S = PluginState

STATUS_KEYS = PLUGIN_STATUS_KEYS


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make ``sample_plugins`` importable and hand out its (emptied) event log."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    log: list[str] = importlib.import_module("sample_plugins").EVENTS
    log.clear()
    return log


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` for throwaway plugin modules, forgotten after the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    # A .pyc written in the same second as an edit could hide the edit from a reload.
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if str(tmp_path) in str(getattr(sys.modules[name], "__file__", "")):
            del sys.modules[name]


def sample(cls: str, **fields: Any) -> PluginEntry:
    """A ``[[plugins]]`` entry for a class of ``sample_plugins``."""
    return PluginEntry(plugin=f"sample_plugins:{cls}", **fields)


async def started(*entries: PluginEntry, **settings: Any) -> PluginManager:
    """A manager over ``Config(plugins=entries, **settings)``, initialised."""
    manager = PluginManager(Config(plugins=list(entries), **settings), HookRegistry())
    await manager.initialize()
    return manager


def status(manager: PluginManager, name: str) -> PluginStatus:
    statuses = manager.get_plugin_status()
    assert name in statuses, f"{name!r} not listed; listed: {sorted(statuses)}"
    return statuses[name]


def states(manager: PluginManager) -> dict[str, str]:
    return {name: s.state for name, s in manager.get_plugin_status().items()}


def error_of(manager: PluginManager, name: str) -> str:
    """The reason plugin ``name`` is in ERROR (fails if it is not)."""
    row = status(manager, name)
    assert row.state == "error", f"{name!r} is {row.state}, not error"
    assert row.last_error is not None
    return row.last_error


def instance(manager: PluginManager, name: str) -> BasePlugin:
    found = [r.instance for r in manager.active(PluginType.MESSAGE_PROCESSOR) if r.name == name]
    assert len(found) == 1 and found[0] is not None, f"no active processor {name!r}"
    return found[0]


async def processed(manager: PluginManager, text: str = "x") -> str:
    """What the active processors make of a user message."""
    outcome = await manager.execute_message_processors(Message.user(text), CTX)
    return outcome.value.content


def registered(manager: PluginManager, hook_type: HookType) -> list[tuple[str, bool]]:
    return [(r.name, r.enabled) for r in manager.hooks.registrations(hook_type)]


def processor_source(*classes: tuple[str, str, str]) -> str:
    """A plugin file defining one processor per ``(class name, plugin name, suffix)``."""
    parts = ["from chatcore.plugin import BaseMessageProcessor, PluginMetadata, PluginResult\n"]
    for cls, name, suffix in classes:
        parts.append(
            textwrap.dedent(f"""

                class {cls}(BaseMessageProcessor):
                    metadata = PluginMetadata(name={name!r})
                    suffix = {suffix!r}

                    async def process_message(self, message, context):
                        content = message.content + self.suffix
                        return PluginResult.ok(message.replace(content=content))
                """)
        )
    return "".join(parts)


def write_processor(path: Path, *classes: tuple[str, str, str]) -> Path:
    path.write_text(processor_source(*classes), encoding="utf-8")
    return path


# --- lifecycle state machine -----------------------------------------------------------------


def path_to(state: PluginState) -> list[PluginState]:
    """A shortest legal sequence of states from UNLOADED to ``state``."""
    paths = {S.UNLOADED: [S.UNLOADED]}
    queue = deque([S.UNLOADED])
    while queue:
        here = queue.popleft()
        for there in sorted(ALLOWED_TRANSITIONS[here]):
            if there not in paths:
                paths[there] = [*paths[here], there]
                queue.append(there)
    return paths[state]


def lifecycle_in(state: PluginState) -> PluginLifecycle:
    """A lifecycle brought to ``state`` through legal transitions only."""
    lifecycle = PluginLifecycle("p")
    for step in path_to(state)[1:]:
        lifecycle.transition(step, "earlier failure" if step is S.ERROR else None)
    return lifecycle


ALL_PAIRS = [(a, b) for a in PluginState for b in PluginState]
ALLOWED_PAIRS = [(a, b) for a, b in ALL_PAIRS if b in ALLOWED_TRANSITIONS[a]]
FORBIDDEN_PAIRS = [(a, b) for a, b in ALL_PAIRS if b not in ALLOWED_TRANSITIONS[a]]


def pair_id(pair: tuple[PluginState, PluginState]) -> str:
    return f"{pair[0]}->{pair[1]}"


async def test_every_state_is_reachable_and_the_documented_path_is_allowed() -> None:
    documented: list[tuple[PluginState, PluginState]] = [
        (S.UNLOADED, S.LOADING),
        (S.LOADING, S.LOADED),
        (S.LOADED, S.INITIALIZING),
        (S.INITIALIZING, S.ACTIVE),
        (S.ACTIVE, S.PAUSED),
        (S.PAUSED, S.ACTIVE),
        (S.ACTIVE, S.UNLOADING),
        (S.PAUSED, S.UNLOADING),
        (S.UNLOADING, S.UNLOADED),
        (S.ERROR, S.INITIALIZING),
        (S.ERROR, S.UNLOADING),
    ]
    failing: list[tuple[PluginState, PluginState]] = [
        (s, S.ERROR) for s in PluginState if s not in (S.UNLOADED, S.ERROR)
    ]
    assert set(documented + failing) <= set(ALLOWED_PAIRS)
    assert set(ALLOWED_TRANSITIONS) == set(PluginState)
    assert all(path_to(s)[-1] is s for s in PluginState)


@pytest.mark.parametrize(("src", "dst"), ALLOWED_PAIRS, ids=map(pair_id, ALLOWED_PAIRS))
async def test_allowed_transition_moves_and_is_recorded(src: PluginState, dst: PluginState) -> None:
    lifecycle = lifecycle_in(src)
    lifecycle.transition(dst, "why")
    assert lifecycle.state is dst
    assert lifecycle.history == [*path_to(src), dst]
    # Only ERROR keeps a reason; leaving ERROR forgets it.
    assert lifecycle.reason == ("why" if dst is S.ERROR else None)


@pytest.mark.parametrize(("src", "dst"), FORBIDDEN_PAIRS, ids=map(pair_id, FORBIDDEN_PAIRS))
async def test_forbidden_transition_raises_naming_both_states(
    src: PluginState, dst: PluginState
) -> None:
    lifecycle = lifecycle_in(src)
    history, reason = list(lifecycle.history), lifecycle.reason
    with pytest.raises(
        InvalidTransition, match=re.escape(f"plugin 'p': cannot go from {src} to {dst}")
    ) as info:
        lifecycle.transition(dst)
    allowed = re.search(r"\(allowed: (.*)\)$", str(info.value))
    assert allowed is not None
    assert set(allowed[1].split(", ")) == {str(s) for s in ALLOWED_TRANSITIONS[src]}
    assert (lifecycle.state, lifecycle.history, lifecycle.reason) == (src, history, reason)


@pytest.mark.parametrize("src", list(PluginState))
async def test_fail_ends_in_error_with_the_reason_along_a_legal_path(src: PluginState) -> None:
    lifecycle = lifecycle_in(src)
    lifecycle.fail("disk on fire")
    assert lifecycle.state is S.ERROR
    assert lifecycle.reason == "disk on fire"
    assert lifecycle.history[-1] is S.ERROR
    assert all(b in ALLOWED_TRANSITIONS[a] for a, b in pairwise(lifecycle.history))


async def test_fail_from_unloaded_passes_through_loading() -> None:
    lifecycle = PluginLifecycle("p")
    lifecycle.fail("not found")
    assert lifecycle.history == [S.UNLOADED, S.LOADING, S.ERROR]


async def test_fail_in_error_replaces_the_reason_without_a_new_step() -> None:
    lifecycle = lifecycle_in(S.ERROR)
    history = list(lifecycle.history)
    lifecycle.fail("second opinion")
    assert lifecycle.reason == "second opinion"
    assert lifecycle.history == history


async def test_history_records_the_whole_path() -> None:
    lifecycle = PluginLifecycle("p")
    tour = [
        S.LOADING,
        S.LOADED,
        S.INITIALIZING,
        S.ERROR,
        S.INITIALIZING,
        S.ACTIVE,
        S.PAUSED,
        S.ACTIVE,
        S.UNLOADING,
        S.UNLOADED,
    ]
    for step in tour:
        lifecycle.transition(step, "init timed out" if step is S.ERROR else None)
    assert lifecycle.history == [S.UNLOADED, *tour]
    assert lifecycle.reason is None


# --- topological_order -----------------------------------------------------------------------

Graph = tuple[list[str], dict[str, list[str]]]


@st.composite
def dags(draw: st.DrawFn, *, min_nodes: int = 0, max_nodes: int = 10) -> Graph:
    """A random DAG: node ``p<i>`` may only depend on lower ``i``; node order shuffled."""
    count = draw(st.integers(min_nodes, max_nodes))
    names = [f"p{i}" for i in range(count)]
    deps = {
        name: draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        for i, name in enumerate(names)
    }
    return list(draw(st.permutations(names))), deps


@st.composite
def graphs_with_cycle(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """A random DAG plus one injected cycle ``c0 -> c1 -> ... -> c0`` (maybe a self-loop)."""
    nodes, deps = draw(dags(min_nodes=1))
    cycle = draw(st.lists(st.sampled_from(nodes), min_size=1, unique=True))
    for here, there in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
        if there not in deps[here]:
            deps[here] = list(draw(st.permutations([*deps[here], there])))
    return nodes, deps, cycle


def reachable(deps: Mapping[str, Sequence[str]], start: str) -> set[str]:
    """Nodes reachable from ``start`` over one or more dependency edges."""
    seen: set[str] = set()
    stack = list(deps.get(start, ()))
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(deps.get(node, ()))
    return seen


def assert_valid_order(
    nodes: Sequence[str], deps: Mapping[str, Sequence[str]], order: Sequence[str]
) -> None:
    """Each node comes after its dependencies; among ready nodes the earliest input goes first."""
    assert len(set(order)) == len(order)
    position = {name: i for i, name in enumerate(nodes)}
    placed: set[str] = set()
    for node in order:
        assert set(deps.get(node, ())) <= placed, f"{node} placed before its dependencies"
        ready = [n for n in order if n not in placed and set(deps.get(n, ())) <= placed]
        assert node == min(ready, key=position.__getitem__), f"{node} jumped the queue"
        placed.add(node)


def named_cycle(reason: str) -> list[str]:
    """The node names of ``dependency cycle: a -> b -> a`` in an error text."""
    match = re.search(r"dependency cycle: (\w+(?: -> \w+)+)", reason)
    assert match is not None, f"no cycle named in {reason!r}"
    return match[1].split(" -> ")


def assert_blocked_reason(
    node: str, reason: str, deps: Mapping[str, Sequence[str]], errors: Mapping[str, str]
) -> None:
    """``node`` is reported as depending on a failed node it really depends on."""
    match = re.fullmatch(r"depends on '(\w+)', which failed \((.+)\)", reason)
    assert match is not None, f"{node}: {reason!r}"
    assert match[1] in reachable(deps, node)
    assert match[2] == errors[match[1]]


@given(dags())
async def test_dag_orders_every_node_after_its_dependencies(graph: Graph) -> None:
    nodes, deps = graph
    order, errors = topological_order(nodes, deps)
    assert errors == {}
    assert sorted(order) == sorted(nodes)
    assert_valid_order(nodes, deps, order)


@given(st.lists(st.text(min_size=1), unique=True))
async def test_without_dependencies_the_input_order_is_kept(nodes: list[str]) -> None:
    assert topological_order(nodes, {}) == (nodes, {})


async def test_ties_keep_input_order() -> None:
    assert topological_order(["a", "b", "c", "d"], {"a": ["c"], "b": ["d", "d"]}) == (
        ["c", "a", "d", "b"],
        {},
    )


@given(graphs_with_cycle())
async def test_cycle_members_fail_and_everything_else_is_still_ordered(
    graph: tuple[list[str], dict[str, list[str]], list[str]],
) -> None:
    nodes, deps, cycle = graph
    order, errors = topological_order(nodes, deps)
    on_cycle = {n for n in nodes if n in reachable(deps, n)}
    blocked = {n for n in nodes if n not in on_cycle and reachable(deps, n) & on_cycle}
    assert set(cycle) <= on_cycle
    assert set(errors) == on_cycle | blocked
    assert set(order) == set(nodes) - on_cycle - blocked
    assert_valid_order(nodes, deps, order)
    for node in on_cycle:
        assert "dependency cycle: " in errors[node]
        assert set(named_cycle(errors[node])) <= on_cycle
    for node in blocked:
        assert_blocked_reason(node, errors[node], deps, errors)


@given(graphs_with_cycle())
# c is on the cycle a -> c -> a, but the walk from a stops at a -> b -> a.
@example(graph=(["a", "b", "c"], {"a": ["b", "c"], "b": ["a"], "c": ["a"]}, ["a", "c"]))
# The walk a -> b -> c ends at c, which does not depend on a.
@example(graph=(["a", "b", "c"], {"a": ["b"], "b": ["c", "a"], "c": ["b"]}, ["b", "c"]))
async def test_each_node_on_a_cycle_is_reported_with_a_real_cycle_through_it(
    graph: tuple[list[str], dict[str, list[str]], list[str]],
) -> None:
    nodes, deps, _ = graph
    _, errors = topological_order(nodes, deps)
    for node in (n for n in nodes if n in reachable(deps, n)):
        assert errors[node].startswith("dependency cycle: "), f"{node}: {errors[node]!r}"
        path = named_cycle(errors[node])
        assert node in path and path[0] == path[-1]
        for here, there in pairwise(path):
            assert there in deps[here], f"{errors[node]!r}: {here} does not depend on {there}"


@given(dags(min_nodes=1), st.data())
async def test_missing_dependency_is_named_and_blocks_only_its_dependents(
    graph: Graph, data: st.DataObject
) -> None:
    nodes, deps = graph
    needy = data.draw(st.sampled_from(nodes))
    deps[needy] = [*deps[needy], "ghost"]
    order, errors = topological_order(nodes, deps)
    blocked = {n for n in nodes if needy in reachable(deps, n)}
    assert errors[needy] == "missing dependency: 'ghost'"
    assert set(errors) == {needy} | blocked
    for node in blocked:
        assert_blocked_reason(node, errors[node], deps, errors)
    assert set(order) == set(nodes) - set(errors)
    assert_valid_order(nodes, deps, order)


async def test_failure_reasons_read_well() -> None:
    order, errors = topological_order(
        ["solo", "loop", "needy", "child", "fine"],
        {"loop": ["loop"], "needy": ["g1", "g2"], "child": ["needy"]},
    )
    assert order == ["solo", "fine"]
    assert errors == {
        "loop": "dependency cycle: loop -> loop",
        "needy": "missing dependency: 'g1', 'g2'",
        "child": "depends on 'needy', which failed (missing dependency: 'g1', 'g2')",
    }


async def test_two_cycles_are_each_named() -> None:
    _, errors = topological_order(
        ["a", "b", "c", "d"], {"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c"]}
    )
    assert errors == {
        "a": "dependency cycle: a -> b -> a",
        "b": "dependency cycle: a -> b -> a",
        "c": "dependency cycle: c -> d -> c",
        "d": "dependency cycle: c -> d -> c",
    }


# --- manager: loading from config entries ----------------------------------------------------


async def test_processor_is_active_with_its_config_and_instance_name(events: list[str]) -> None:
    manager = await started(sample("Tagger", name="tag1", priority=7, config={"tag": "T"}))
    row = status(manager, "tag1")
    assert (row.state, row.type, row.priority) == ("active", "processor", 7)
    assert (row.plugin, row.version, row.description) == (
        "sample_plugins:Tagger",
        "2.1.0",
        "tags messages",
    )
    plugin = instance(manager, "tag1")
    assert plugin.name == "tag1"
    assert dict(plugin.config) == {"tag": "T"}
    assert events == ["init:tag1"]
    assert await processed(manager) == "x|T"


async def test_unnamed_entry_is_known_by_the_plugin_name() -> None:
    manager = await started(sample("RequestWatcher"), sample("Base", name="custom"))
    assert states(manager) == {"echo": "active", "request_watcher": "active", "custom": "active"}


async def test_two_instances_of_one_class_are_independent() -> None:
    manager = await started(
        sample("Tagger", name="left", config={"tag": "L"}),
        sample("Tagger", name="right", config={"tag": "R"}),
    )
    assert states(manager) == {"echo": "active", "left": "active", "right": "active"}
    assert instance(manager, "left") is not instance(manager, "right")
    assert await processed(manager) == "x|L|R"


async def test_dependency_cycle_fails_both_plugins_and_spares_the_rest(events: list[str]) -> None:
    # Instance names differ from the metadata names the dependencies use.
    manager = await started(
        sample("CycleA", name="first"), sample("CycleB", name="second"), sample("Tagger")
    )
    for name in ("first", "second"):
        reason = error_of(manager, name)
        assert "dependency cycle" in reason
        assert "first" in reason and "second" in reason
    assert status(manager, "tagger").state == "active"
    assert events == ["init:tagger"]
    assert await processed(manager) == "x|tagger"


async def test_missing_dependency_names_the_missing_plugin() -> None:
    manager = await started(sample("NeedsGhost"), sample("Tagger"))
    assert error_of(manager, "needs_ghost") == "missing dependency: 'ghost'"
    assert status(manager, "tagger").state == "active"


async def test_initialize_failure_is_isolated_and_fails_its_dependents(events: list[str]) -> None:
    manager = await started(sample("NeedsBroken"), sample("Broken"), sample("Tagger"))
    assert error_of(manager, "broken") == "initialize failed: RuntimeError('boom')"
    assert error_of(manager, "needs_broken") == (
        "depends on 'broken', which failed (initialize failed: RuntimeError('boom'))"
    )
    assert status(manager, "tagger").state == "active"
    assert events == ["init:broken", "init:tagger"]
    assert registered(manager, HookType.BEFORE_MESSAGE) == [("tagger", True)]


async def test_plugins_initialize_in_dependency_order(events: list[str]) -> None:
    await started(sample("Top"), sample("Tagger"), sample("Mid"), sample("Base"))
    # tagger is ready before base (earlier in the config), top only after mid.
    assert events == ["init:tagger", "init:base", "init:mid", "init:top"]


async def test_dependency_may_be_an_already_active_plugin() -> None:
    manager = await started(sample("Base"))
    row = await manager.load_plugin("sample_plugins:Mid")
    assert row.state == "active"


async def test_dependency_on_a_failed_plugin_outside_the_batch_is_refused() -> None:
    manager = await started(sample("Broken"))
    with pytest.raises(
        PluginLoadError, match=r"depends on 'broken', which is error: initialize failed"
    ):
        await manager.load_plugin("sample_plugins:NeedsBroken")
    assert status(manager, "needs_broken").state == "error"


async def test_disabled_entry_is_listed_but_never_loaded(events: list[str]) -> None:
    manager = await started(sample("Tagger", enabled=False), sample("Base"))
    assert states(manager) == {"echo": "active", "tagger": "unloaded", "base": "active"}
    assert events == ["init:base"]
    assert await processed(manager) == "x|base"


async def test_unknown_plugin_name_lists_the_installed_plugins() -> None:
    manager = await started(PluginEntry(plugin="nope"), sample("Tagger"))
    reason = error_of(manager, "nope")
    assert reason.startswith("plugin 'nope' not found: not an installed plugin name (installed: ")
    assert re.search(r"\(installed: [^)]*\becho\b[^)]*\)", reason)
    assert "use 'module:Class' or a path to a .py file" in reason
    assert status(manager, "tagger").state == "active"


async def test_bad_module_and_attribute_are_named() -> None:
    manager = await started(
        PluginEntry(plugin="no_such_module_here:Thing"), sample("Missing", name="missing")
    )
    assert "cannot import 'no_such_module_here'" in error_of(manager, "thing")
    assert "module 'sample_plugins' has no attribute 'Missing'" in error_of(manager, "missing")


async def test_load_plugin_by_spec_string() -> None:
    manager = await started()
    row = await manager.load_plugin("sample_plugins:Tagger", name="late", config={"tag": "L"})
    assert (row.name, row.state) == ("late", "active")
    assert await processed(manager) == "x|L"
    with pytest.raises(PluginLoadError, match=r"plugin 'late' is already loaded"):
        await manager.load_plugin("sample_plugins:Tagger", name="late")
    with pytest.raises(PluginLoadError, match=r"plugin 'nope': plugin 'nope' not found"):
        await manager.load_plugin("nope")
    assert status(manager, "nope").state == "error"


async def test_a_plugin_name_clash_keeps_the_running_plugin_listed(
    tmp_path: Path, events: list[str]
) -> None:
    # Unnamed entries take the plugin's own name, so two specs can clash after import.
    impostor = write_processor(tmp_path / "impostor.py", ("Impostor", "tagger", "|impostor"))
    manager = await started(sample("Tagger"), PluginEntry(plugin=str(impostor)))
    assert await processed(manager) == "x|tagger"
    assert status(manager, "tagger").state == "active"
    await manager.unload_plugin("tagger")
    assert events[-1] == "shutdown:tagger"


# --- manager: files and directories ----------------------------------------------------------


async def test_plugin_from_a_py_file_path(tmp_path: Path) -> None:
    path = write_processor(tmp_path / "filed.py", ("Filed", "filed", "|file"))
    manager = await started(PluginEntry(plugin=str(path)))
    assert status(manager, "filed").state == "active"
    assert await processed(manager) == "x|file"


@pytest.mark.parametrize("spec", ["dirplug.py", "dirplug"])
async def test_plugin_found_in_plugin_dirs(tmp_path: Path, spec: str) -> None:
    write_processor(tmp_path / "dirplug.py", ("DirPlug", "dirplug", "|dir"))
    manager = await started(PluginEntry(plugin=spec, name="dirplug"), plugin_dirs=[tmp_path])
    assert status(manager, "dirplug").state == "active"
    assert await processed(manager) == "x|dir"


async def test_file_with_two_plugins_needs_one_named(tmp_path: Path) -> None:
    path = write_processor(
        tmp_path / "two.py", ("First", "first", "|1"), ("Second", "second", "|2")
    )
    manager = await started(PluginEntry(plugin=str(path)))
    assert "defines 2 plugin classes" in error_of(manager, "two")


async def test_one_plugin_of_a_file_is_named_as_path_colon_class(tmp_path: Path) -> None:
    path = write_processor(
        tmp_path / "two.py", ("First", "first", "|1"), ("Second", "second", "|2")
    )
    manager = await started(
        PluginEntry(plugin=f"{path}:Second", name="second"),
        PluginEntry(plugin=f"{path}:Third", name="third"),
    )
    assert status(manager, "second").state == "active"
    assert await processed(manager) == "x|2"
    assert error_of(manager, "third") == (
        f"plugin '{path}:Third': '{path}' defines no plugin 'Third'"
    )


async def test_directory_loads_good_files_and_reports_broken_ones(tmp_path: Path) -> None:
    write_processor(tmp_path / "good.py", ("Good", "good", "|good"))
    (tmp_path / "broken.py").write_text("def oops(:\n", encoding="utf-8")
    write_processor(tmp_path / "_private.py", ("Private", "private", "|private"))
    manager = await started()
    rows = {row.name: row for row in await manager.load_plugins_from_directory(tmp_path)}
    assert {name: row.state for name, row in rows.items()} == {"broken": "error", "good": "active"}
    reason = error_of(manager, "broken")
    assert "broken.py" in reason and "failed to import: SyntaxError" in reason
    assert status(manager, "good").state == "active"
    assert await processed(manager) == "x|good"


async def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    manager = await started()
    with pytest.raises(PluginLoadError, match=r"plugin directory .*nowhere.* does not exist"):
        await manager.load_plugins_from_directory(tmp_path / "nowhere")


async def test_loading_a_directory_twice_does_not_run_its_plugins_twice(tmp_path: Path) -> None:
    write_processor(tmp_path / "good.py", ("Good", "good", "|good"))
    manager = await started()
    await manager.load_plugins_from_directory(tmp_path)
    with contextlib.suppress(PluginLoadError):
        await manager.load_plugins_from_directory(tmp_path)
    assert await processed(manager) == "x|good"


# --- manager: pause, unload, reload, shutdown ------------------------------------------------


async def test_pause_and_resume_toggle_state_and_hooks() -> None:
    manager = await started(sample("Tagger", name="a"), sample("Tagger", name="b"))
    await manager.pause("a")
    assert status(manager, "a").state == "paused"
    assert registered(manager, HookType.BEFORE_MESSAGE) == [("a", False), ("b", True)]
    assert await processed(manager) == "x|b"
    assert status(manager, "a").calls == 0
    with pytest.raises(InvalidTransition, match=r"cannot go from paused to paused"):
        await manager.pause("a")
    await manager.resume("a")
    assert status(manager, "a").state == "active"
    assert await processed(manager) == "x|a|b"
    with pytest.raises(PluginError, match=r"no plugin named 'zzz' \(loaded: a, b, echo\)"):
        await manager.pause("zzz")


async def test_unload_runs_shutdown_and_forgets_the_plugin(events: list[str]) -> None:
    manager = await started(sample("Tagger", name="a"), sample("Tagger", name="b"))
    await manager.unload_plugin("a")
    assert events[-1] == "shutdown:a"
    assert "a" not in manager.get_plugin_status()
    assert registered(manager, HookType.BEFORE_MESSAGE) == [("b", True)]
    assert await processed(manager) == "x|b"


async def test_unload_refuses_while_a_dependent_is_active(events: list[str]) -> None:
    manager = await started(sample("Base"), sample("Mid"))
    with pytest.raises(PluginError, match=r"plugin 'base' is needed by 'mid'; unload those first"):
        await manager.unload_plugin("base")
    assert status(manager, "base").state == "active"
    await manager.unload_plugin("mid")
    await manager.unload_plugin("base")
    assert events[-2:] == ["shutdown:mid", "shutdown:base"]


async def test_reload_reimports_a_module_plugin(module_dir: Path) -> None:
    source = write_processor(module_dir / "hotplug.py", ("Hot", "hot", "|v1"))
    manager = await started(PluginEntry(plugin="hotplug:Hot"))
    assert await processed(manager) == "x|v1"
    write_processor(source, ("Hot", "hot", "|v2"))
    row = await manager.reload("hot")
    assert (row.name, row.state) == ("hot", "active")
    assert await processed(manager) == "x|v2"
    assert registered(manager, HookType.BEFORE_MESSAGE) == [("hot", True)]


async def test_reload_of_a_broken_edit_keeps_the_old_version(module_dir: Path) -> None:
    source = write_processor(module_dir / "hotplug.py", ("Hot", "hot", "|v1"))
    manager = await started(PluginEntry(plugin="hotplug:Hot"))
    source.write_text("def oops(:\n", encoding="utf-8")
    with pytest.raises(PluginLoadError, match="SyntaxError"):
        await manager.reload("hot")
    row = status(manager, "hot")
    assert row.state == "active" and "SyntaxError" in (row.last_error or "")
    assert await processed(manager) == "x|v1"


async def test_reload_of_a_plugin_loaded_from_a_directory(tmp_path: Path) -> None:
    source = write_processor(tmp_path / "good.py", ("Good", "good", "|v1"))
    manager = await started()
    await manager.load_plugins_from_directory(tmp_path)
    write_processor(source, ("Good", "good", "|v2"))
    row = await manager.reload("good")
    assert row.state == "active"
    assert await processed(manager) == "x|v2"


async def test_shutdown_unloads_every_plugin_and_backend(events: list[str]) -> None:
    manager = await started(sample("Tagger"), sample("Base"))
    await manager.shutdown()
    assert states(manager) == {"echo": "unloaded", "tagger": "unloaded", "base": "unloaded"}
    assert sorted(e for e in events if e.startswith("shutdown:")) == [
        "shutdown:base",
        "shutdown:tagger",
    ]
    assert manager.hooks.registrations() == []


async def test_shutdown_stops_dependents_before_their_dependencies(events: list[str]) -> None:
    manager = await started(sample("Top"), sample("Mid"), sample("Base"))
    events.clear()
    await manager.shutdown()
    assert events == ["shutdown:top", "shutdown:mid", "shutdown:base"]


# --- manager: backends, status, hooks --------------------------------------------------------


async def test_default_backend_is_the_echo_provider() -> None:
    manager = await started()
    backend = manager.get_backend_provider()
    assert backend is manager.get_backend_provider("echo")
    assert backend.metadata.name == "echo"
    reply = await backend.chat(CTX.with_message(Message.user("hi")))
    assert reply.content == "echo: hi"
    with pytest.raises(
        UnknownBackend, match=r"^unknown backend 'nope'; configured backends: echo$"
    ):
        manager.get_backend_provider("nope")


async def test_a_non_backend_plugin_cannot_be_a_backend() -> None:
    backends = {
        "echo": BackendConfig(plugin="echo"),
        "odd": BackendConfig(plugin="sample_plugins:Tagger"),
    }
    manager = await started(backends=backends)
    await manager.ensure_backend("odd")
    with pytest.raises(
        PluginError,
        match=r"backend 'odd' is not available: backends\.odd\.plugin: "
        r"'sample_plugins:Tagger' is a processor plugin, not a backend",
    ):
        manager.get_backend_provider("odd")


async def test_backends_other_than_the_default_load_on_first_use() -> None:
    backends = {"echo": BackendConfig(plugin="echo"), "spare": BackendConfig(plugin="echo")}
    manager = await started(backends=backends)
    assert manager.get_plugin_status()["spare"].state == "unloaded"
    with pytest.raises(PluginError, match="backend 'spare' is not available: unloaded"):
        manager.get_backend_provider("spare")
    record = await manager.ensure_backend("spare")
    assert record.lifecycle.state is PluginState.ACTIVE
    assert manager.get_backend_provider("spare") is record.instance
    with pytest.raises(UnknownBackend):
        await manager.ensure_backend("nope")


async def test_plugin_status_rows() -> None:
    manager = await started(sample("Tagger", priority=7))
    statuses = manager.get_plugin_status()
    assert list(statuses) == ["echo", "tagger"]
    row = statuses["tagger"].as_dict()
    assert set(row) >= STATUS_KEYS
    assert set(row) == {f.name for f in dataclasses.fields(PluginStatus)}
    assert {k: row[k] for k in STATUS_KEYS} == {
        "name": "tagger",
        "type": "processor",
        "state": "active",
        "priority": 7,
        "calls": 0,
        "failures": 0,
        "timeouts": 0,
        "circuit": "closed",
        "last_error": None,
        "p50_ms": None,
        "p95_ms": None,
    }
    assert statuses["echo"].type == "backend"
    await processed(manager)
    row = status(manager, "tagger").as_dict()
    assert row["calls"] == 1
    assert row["p50_ms"] is not None and row["p95_ms"] is not None


async def test_message_processors_run_in_priority_order() -> None:
    manager = await started(
        sample("Tagger", name="late", priority=90),
        sample("Tagger", name="early", priority=10),
        sample("Tagger", name="middle"),
    )
    assert await processed(manager) == "x|early|middle|late"


async def test_hook_decorated_methods_are_registered(events: list[str]) -> None:
    manager = await started(sample("RequestWatcher"))
    assert registered(manager, HookType.ON_REQUEST_START) == [("request_watcher", True)]
    await manager.hooks.run(HookType.ON_REQUEST_START, Message.user("hi"), CTX)
    assert events == ["request:conv-1:hi"]


async def test_process_reply_is_wired_only_when_overridden() -> None:
    manager = await started(sample("Tagger"), sample("Replier"))
    assert registered(manager, HookType.BEFORE_MESSAGE) == [("tagger", True), ("replier", True)]
    assert registered(manager, HookType.AFTER_MESSAGE) == [("replier", True)]
    assert registered(manager, HookType.ON_STREAM_CHUNK) == []
    outcome = await manager.hooks.run(HookType.AFTER_MESSAGE, Message.assistant("ok"), CTX)
    assert outcome.value.content == "ok (seen)"


async def test_plugin_load_hooks_see_plugins_loaded_after_them(events: list[str]) -> None:
    manager = await started(
        sample("Tagger", name="early"), sample("LoadWatcher"), sample("Tagger", name="late")
    )
    await manager.load_plugin("sample_plugins:Replier")
    seen = [e for e in events if e.startswith("loaded:") and e != "loaded:load_watcher"]
    assert seen == ["loaded:late", "loaded:replier"]


# --- the README example ----------------------------------------------------------------------


# It imports the deprecated alias on purpose; test_plugin_api.py checks the warning.
@pytest.mark.filterwarnings("ignore:chatcore.plugins is deprecated:DeprecationWarning")
async def test_readme_shout_processor_works_as_written() -> None:
    # The 0.1 README's example, written the old way, still works.
    manager = await started(PluginEntry(plugin="oldstyle:Shout"))
    row = status(manager, "shout")
    assert (row.state, row.type, row.version) == ("active", "processor", "1.0.0")
    assert await processed(manager, "hello there") == "HELLO THERE"


async def test_the_new_readme_shout_processor_works_as_written() -> None:
    manager = await started(PluginEntry(plugin="yourmodule:Shout"))
    row = status(manager, "shout")
    assert (row.state, row.type, row.version) == ("active", "processor", "0.0.0")
    assert await processed(manager, "hello there") == "HELLO THERE"
