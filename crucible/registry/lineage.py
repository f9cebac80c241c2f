"""The lineage graph: node ids, which stored edges are visible, walks up and down, and cycle detection.

Nodes are ids like ``model:tiny-gpt/v3``, ``dataset:gsm8k@v5``, ``feedback:2026-11-01..2026-11-07``,
``run:<id>``, ``base:<hub id or path>`` (a base model from outside the registry) and
``checkpoint:<uri>``. Every edge points downstream: its ``source`` is what its ``target`` was made from.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

NODE_PATTERNS = {
    "model": re.compile(r"^model:(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)/v(?P<version>[1-9][0-9]*)$"),
    "dataset": re.compile(r"^dataset:(?P<name>[^@\s]+)@v(?P<version>[0-9]+)$"),
    "feedback": re.compile(r"^feedback:(?P<start>\d{4}-\d{2}-\d{2})\.\.(?P<end>\d{4}-\d{2}-\d{2})$"),
    "run": re.compile(r"^run:\S+$"),
    "base": re.compile(r"^base:\S+$"),
    "checkpoint": re.compile(r"^checkpoint:\S+$"),
}


class LineageCycleError(ValueError):
    """An edge that would close a cycle; ``path`` is the cycle it would make, first node repeated last."""

    def __init__(self, source: str, target: str, relation: str, path: list[str]):
        self.path = path
        super().__init__(f"edge {source} -[{relation}]-> {target} would close the cycle {' -> '.join(path)}; "
                         f"lineage edges must point from an input to what was made from it")


def model_node(model_name: str, version: int) -> str:
    return f"model:{model_name}/v{int(version)}"


def dataset_node(dataset: str, table_version: int) -> str:
    return f"dataset:{dataset}@v{int(table_version)}"


def feedback_node(start: dt.date, end: dt.date) -> str:
    """A feedback window, both days included."""
    return f"feedback:{start.isoformat()}..{end.isoformat()}"


def run_node(run_id: str) -> str:
    return f"run:{run_id}"


def check_node(node: str) -> str:
    """``node`` when it is a well-formed node id, else a ValueError listing the forms."""
    kind = node.split(":", 1)[0]
    pattern = NODE_PATTERNS.get(kind)
    if pattern is None or not pattern.match(node):
        raise ValueError(f"lineage node {node!r} is not a node id; expected one of model:<name>/v<N>, "
                         f"dataset:<name>@v<table version>, feedback:<YYYY-MM-DD>..<YYYY-MM-DD>, run:<id>, "
                         f"base:<model id>, checkpoint:<uri>")
    if kind == "feedback":
        match = pattern.match(node)
        start, end = dt.date.fromisoformat(match["start"]), dt.date.fromisoformat(match["end"])
        if end < start:
            raise ValueError(f"lineage node {node!r}: the feedback window ends before it starts")
    return node


def parse_model_node(node: str) -> tuple[str, int] | None:
    """(model name, version) of a ``model:`` node, None for other kinds."""
    match = NODE_PATTERNS["model"].match(node)
    return (match["name"], int(match["version"])) if match else None


def visible_edges(edges: pd.DataFrame, committed_registrations: Iterable[str]) -> pd.DataFrame:
    """Edges added on their own (no registration id) and those of committed registrations, once each."""
    committed = set(committed_registrations)
    registration = edges["registration_id"]
    keep = registration.isna() | registration.isin(committed)
    return (edges.loc[keep, ["source", "target", "relation"]]
            .drop_duplicates().sort_values(["source", "target", "relation"]).reset_index(drop=True))


@dataclass(frozen=True)
class LineageHop:
    """One edge met by a walk, ``depth`` edges away from where the walk started (1 = adjacent)."""

    depth: int
    source: str
    target: str
    relation: str


def walk(edges: pd.DataFrame, start: str, direction: str, depth: int | None = None) -> list[LineageHop]:
    """Every edge reachable from ``start`` upstream (``ancestors``) or downstream (``descendants``).

    Breadth first, so each node is expanded at its shortest distance; ``depth`` bounds the distance.
    """
    if direction not in ("ancestors", "descendants"):
        raise ValueError(f"direction {direction!r}: expected 'ancestors' or 'descendants'")
    here, there = ("target", "source") if direction == "ancestors" else ("source", "target")
    adjacent: dict[str, list[tuple[str, str, str]]] = {}
    for source, target, relation in edges[["source", "target", "relation"]].itertuples(index=False):
        node = target if here == "target" else source
        adjacent.setdefault(node, []).append((source, target, relation))
    hops: list[LineageHop] = []
    seen = {start}
    queue = deque([(start, 0)])
    while queue:
        node, distance = queue.popleft()
        if depth is not None and distance >= depth:
            continue
        for source, target, relation in sorted(adjacent.get(node, [])):
            hops.append(LineageHop(distance + 1, source, target, relation))
            following = source if there == "source" else target
            if following not in seen:
                seen.add(following)
                queue.append((following, distance + 1))
    return hops


def path_between(edges: pd.DataFrame, start: str, goal: str) -> list[str] | None:
    """The shortest downstream path of nodes from ``start`` to ``goal``, None when there is none."""
    children: dict[str, list[str]] = {}
    for source, target in edges[["source", "target"]].itertuples(index=False):
        children.setdefault(source, []).append(target)
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while previous[path[-1]] is not None:
                path.append(previous[path[-1]])
            return path[::-1]
        for child in sorted(children.get(node, [])):
            if child not in previous:
                previous[child] = node
                queue.append(child)
    return None


def check_acyclic(edges: pd.DataFrame, source: str, target: str, relation: str) -> None:
    """Raise :class:`LineageCycleError` when adding ``source -> target`` to ``edges`` makes a cycle."""
    back = [source] if source == target else path_between(edges, target, source)
    if back is not None:
        raise LineageCycleError(source, target, relation, [source, *back])
