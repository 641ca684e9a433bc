"""Image families: which image is baked on which (pure, no I/O).

An environment's images form a forest: an image may name a parent image of the same
environment (`images.<name>.parent`). This module answers the questions the bake, the
listing and revoke ask of that forest, from plain mappings:

- `find_cycle`, `lineage`, `order`, `descendants`: the settings' graph of image names;
- `Schedule`: which images of a `bake --all` may start now, which wait, which are blocked
  because an ancestor failed;
- `outdated`, `built_on`: the registered images' graph (each image records the id of the
  parent image it was built on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Parents = Mapping[str, str | None]  # image name -> parent image name (None: on the base)


def find_cycle(parents: Parents) -> list[str]:
    """A cycle of parents as a path that ends where it starts (`a -> b -> a`); [] if none."""
    for start in sorted(parents):
        seen: list[str] = []
        node: str | None = start
        while node is not None and node in parents:
            if node in seen:
                return [*seen[seen.index(node):], node]
            seen.append(node)
            node = parents[node]
    return []


def lineage(parents: Parents, name: str) -> list[str]:
    """`name`'s ancestors, the root first, then `name` itself."""
    chain = [name]
    while parents.get(chain[-1]) is not None:
        parent = parents[chain[-1]]
        assert parent is not None
        if parent in chain:
            raise ValueError(f"a parent cycle through {parent}")
        chain.append(parent)
    return chain[::-1]


def order(parents: Parents, names: Iterable[str] | None = None) -> list[str]:
    """`names` (default: every image) with their ancestors, parents before children, and
    otherwise by name: the order a sequential `bake --all` takes."""
    wanted = sorted(parents) if names is None else sorted(set(names))
    closure = {n for name in wanted for n in lineage(parents, name)}
    depth = {n: len(lineage(parents, n)) for n in closure}
    return sorted(closure, key=lambda n: (depth[n], n))


def descendants(parents: Parents, name: str) -> list[str]:
    """Every image name baked (directly or not) on `name`, parents before children."""
    return [n for n in order(parents) if n != name and name in lineage(parents, n)]


@dataclass
class Schedule:
    """The state of a `bake --all`: each image waits for its parent, runs, then is done
    (built or skipped), failed, or blocked (an ancestor failed: never started)."""

    parents: Parents
    names: list[str]  # in `order`
    done: dict[str, str] = field(default_factory=dict)  # name -> image id it produced
    failed: set[str] = field(default_factory=set)
    blocked: dict[str, str] = field(default_factory=dict)  # name -> the failed ancestor
    running: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, parents: Parents, names: Iterable[str] | None = None) -> Schedule:
        return cls(parents, order(parents, names))

    def ready(self) -> list[str]:
        """Images that may start now: not started, and their parent (if any) is done."""
        settled = set(self.done) | self.failed | set(self.blocked) | self.running
        out = []
        for n in self.names:
            parent = self.parents.get(n)
            if n not in settled and (parent is None or parent in self.done or parent not in self.names):
                out.append(n)
        return out

    def waiting(self) -> list[str]:
        settled = set(self.done) | self.failed | set(self.blocked) | self.running
        return [n for n in self.names if n not in settled]

    def start(self, name: str) -> None:
        self.running.add(name)

    def finish(self, name: str, image_id: str) -> None:
        self.running.discard(name)
        self.done[name] = image_id

    def fail(self, name: str) -> list[str]:
        """`name` failed: its descendants are blocked (returned), the others go on."""
        self.running.discard(name)
        self.failed.add(name)
        stopped = [d for d in descendants(self.parents, name) if d in self.names and d not in self.blocked]
        for d in stopped:
            self.blocked[d] = name
        return stopped

    def finished(self) -> bool:
        return not self.running and not self.waiting()


# -- registered images --------------------------------------------------------------------
def built_on(records: Iterable[Mapping[str, Any]], image_id: str) -> list[str]:
    """Ids of the images built (directly or not) on `image_id`, parents before children.
    `records` are image summaries; an image's `parent` entry holds the id it was built on."""
    by_parent: dict[str, list[str]] = {}
    for r in records:
        p = (r.get("parent") or {}).get("id")
        if p:
            by_parent.setdefault(p, []).append(r["id"])
    out: list[str] = []
    frontier = [image_id]
    while frontier:
        children = sorted(c for p in frontier for c in by_parent.get(p, []) if c not in out)
        out += children
        frontier = children
    return out


def parent_uses(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(parent id, child id) for every registered image built on another: a parent with a
    child still registered is in use (gc never collects it before the child)."""
    return sorted((str(r["parent"]["id"]), str(r["id"])) for r in records
                  if isinstance(r.get("parent"), Mapping) and r["parent"].get("id"))


def current_parent(parent: Mapping[str, Any], records: Iterable[Mapping[str, Any]],
                   channels: Mapping[str, Mapping[str, str | None]]) -> str | None:
    """The parent image a child would be built on now: the image the parent's channel points
    at, or else the parent name's newest validated image."""
    name, channel = parent.get("name"), parent.get("channel")
    if channel:
        return channels.get(str(name), {}).get(channel)
    valid = [r for r in records if r.get("name") == name and r.get("status") == "validated"
             and r.get("stage") != "disabled"]
    return max(valid, key=lambda r: (r["created"], r["id"]))["id"] if valid else None


def outdated(records: Sequence[Mapping[str, Any]],
             channels: Mapping[str, Mapping[str, str | None]]) -> dict[str, str]:
    """Image id -> why it is outdated: the parent it was built on is no longer the parent's
    current image (`current_parent`)."""
    out: dict[str, str] = {}
    for r in records:
        parent = r.get("parent")
        if not parent or r.get("status") != "validated":
            continue
        now = current_parent(parent, records, channels)
        if now is not None and now != parent.get("id"):
            where = f"{parent['name']}/{parent['channel']}" if parent.get("channel") else str(parent["name"])
            out[r["id"]] = f"outdated: parent {where} is now {now} (built on {parent.get('id')})"
    return out


def tree(parents: Parents) -> list[tuple[int, str]]:
    """The image names as a tree: (depth, name), each parent followed by its children."""
    out: list[tuple[int, str]] = []

    def walk(name: str, depth: int) -> None:
        out.append((depth, name))
        for child in sorted(n for n, p in parents.items() if p == name):
            walk(child, depth + 1)

    for root in sorted(n for n, p in parents.items() if p is None or p not in parents):
        walk(root, 0)
    return out
