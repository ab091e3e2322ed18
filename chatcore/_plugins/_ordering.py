"""Load order: every plugin after the plugins it depends on.

A topological sort that keeps the configured order among equals; a cycle or a
missing dependency takes the plugins concerned out of the order with a reason
a person can act on ("dependency cycle: a -> b -> a"), and the rest load.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = ["topological_order"]


def topological_order(
    nodes: Sequence[str], dependencies: Mapping[str, Iterable[str]]
) -> tuple[list[str], dict[str, str]]:
    """Order ``nodes`` so every node comes after what it depends on.

    Ties keep the order of ``nodes``. Returns ``(order, errors)``: nodes on a
    dependency cycle, with a missing dependency, or depending on such a node
    are left out of ``order`` and get a reason in ``errors``.
    """
    position = {name: i for i, name in enumerate(nodes)}
    deps = {name: list(dict.fromkeys(dependencies.get(name, ()))) for name in nodes}
    errors: dict[str, str] = {}
    for name in nodes:
        missing = [d for d in deps[name] if d not in position]
        if missing:
            errors[name] = "missing dependency: " + ", ".join(repr(m) for m in missing)

    for component in _cycles(nodes, deps, position):
        members = set(component)
        for name in sorted(component, key=position.__getitem__):
            cycle = _shortest_cycle(name, deps, members)
            # Start where the config starts, so one cycle reads the same for each member.
            first = cycle.index(min(cycle, key=position.__getitem__))
            cycle = cycle[first:] + cycle[:first]
            text = " -> ".join([*cycle, cycle[0]])
            errors.setdefault(name, f"dependency cycle: {text}")

    dependents: dict[str, list[str]] = {name: [] for name in nodes}
    indegree = {name: 0 for name in nodes}
    for name in nodes:
        for dep in deps[name]:
            if dep in position:
                dependents[dep].append(name)
                indegree[name] += 1
    ready = [(position[n], n) for n in nodes if indegree[n] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        if name in errors:
            continue
        order.append(name)
        for nxt in dependents[name]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(ready, (position[nxt], nxt))
    # Whatever is left depends, directly or not, on a failed node: name the first one.
    placed = set(order)
    for name in nodes:
        if name not in placed and name not in errors:
            errors[name] = _blocked_reason(name, deps, errors, placed)
    return order, errors


def _blocked_reason(
    name: str, deps: Mapping[str, list[str]], errors: Mapping[str, str], placed: set[str]
) -> str:
    seen = {name}
    stack = list(deps[name])
    while stack:
        dep = stack.pop(0)
        if dep in errors:
            return f"depends on {dep!r}, which failed ({errors[dep]})"
        if dep not in seen and dep not in placed and dep in deps:
            seen.add(dep)
            stack.extend(deps[dep])
    return "unresolvable dependencies"


def _cycles(
    nodes: Sequence[str], deps: Mapping[str, list[str]], position: Mapping[str, int]
) -> list[list[str]]:
    """Strongly connected components that contain a cycle (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:
        nonlocal counter
        # Iterative DFS: plugin graphs are small, but recursion limits are not ours to spend.
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = [d for d in deps[node] if d in position]
            if i < len(children):
                work.append((node, i + 1))
                child = children[i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in deps[node]:
                    found.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])

    for name in nodes:
        if name not in index:
            visit(name)
    return found


def _shortest_cycle(start: str, deps: Mapping[str, list[str]], members: set[str]) -> list[str]:
    """The shortest dependency cycle through ``start`` inside its component (BFS)."""
    parent: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for dep in deps[node]:
                if dep == start:
                    path = [node]
                    while (up := parent[path[-1]]) is not None:
                        path.append(up)
                    return path[::-1]
                if dep in members and dep not in parent:
                    parent[dep] = node
                    following.append(dep)
        frontier = following
    return [start]
