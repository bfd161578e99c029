"""The step graph: order, ancestry and cycles over ``needs`` edges.

It works on a plain ``{step_id: needs}`` mapping, so validation can use it on
a file that is not a valid runbook yet, and the conductor on a built one.
Order is deterministic: ties are broken by the order steps appear in the file,
so plans, drawings and rehearsals read the same every time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Graph:
    """A DAG of step ids. ``needs[x]`` are the steps x waits for (its parents)."""

    order_in_file: tuple[str, ...]
    needs: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_needs(
        cls, needs: Mapping[str, Sequence[str]] | Iterable[tuple[str, Sequence[str]]]
    ) -> Graph:
        items = list(needs.items()) if isinstance(needs, Mapping) else list(needs)
        return cls(
            order_in_file=tuple(step_id for step_id, _ in items),
            needs={step_id: tuple(parents) for step_id, parents in items},
        )

    @classmethod
    def of(cls, runbook: object) -> Graph:
        """The graph of a built ``model.Runbook`` (duck-typed to keep layers clean)."""
        steps = runbook.steps  # type: ignore[attr-defined]
        return cls.from_needs([(s.id, s.needs) for s in steps])

    @cached_property
    def children(self) -> Mapping[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {s: [] for s in self.order_in_file}
        for step_id in self.order_in_file:
            for parent in self.needs[step_id]:
                if parent in out:
                    out[parent].append(step_id)
        return {k: tuple(v) for k, v in out.items()}

    def find_cycle(self) -> list[str] | None:
        """One cycle as ``[a, b, c, a]``, or None; unknown needs are ignored."""
        white, grey, black = 0, 1, 2
        colour = dict.fromkeys(self.order_in_file, white)
        for start in self.order_in_file:
            if colour[start] != white:
                continue
            path: list[str] = []
            stack: list[tuple[str, Iterable[str]]] = [(start, iter(self.needs[start]))]
            colour[start] = grey
            path.append(start)
            while stack:
                node, parents = stack[-1]
                advanced = False
                for parent in parents:
                    if parent not in colour:
                        continue
                    if colour[parent] == grey:
                        cycle = [*path[path.index(parent) :], parent]
                        cycle.reverse()  # read it in execution order: a -> b means b needs a
                        return cycle
                    if colour[parent] == white:
                        colour[parent] = grey
                        path.append(parent)
                        stack.append((parent, iter(self.needs[parent])))
                        advanced = True
                        break
                if not advanced:
                    colour[node] = black
                    path.pop()
                    stack.pop()
        return None

    @cached_property
    def topological(self) -> tuple[str, ...]:
        """Kahn's order, ties by file order. Raises ValueError on a cycle."""
        position = {s: i for i, s in enumerate(self.order_in_file)}
        indegree = {s: sum(1 for p in self.needs[s] if p in position) for s in self.order_in_file}
        ready = [s for s in self.order_in_file if indegree[s] == 0]
        out: list[str] = []
        while ready:
            ready.sort(key=position.__getitem__)
            node = ready.pop(0)
            out.append(node)
            for child in self.children[node]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if len(out) != len(self.order_in_file):
            cycle = self.find_cycle() or []
            raise ValueError("cycle: " + " -> ".join(cycle))
        return tuple(out)

    @cached_property
    def _ancestors(self) -> Mapping[str, frozenset[str]]:
        memo: dict[str, frozenset[str]] = {}
        for step_id in self.topological:
            acc: set[str] = set()
            for parent in self.needs[step_id]:
                if parent in memo:
                    acc.add(parent)
                    acc |= memo[parent]
            memo[step_id] = frozenset(acc)
        return memo

    def ancestors(self, step_id: str) -> frozenset[str]:
        """Every step that must have finished before ``step_id`` can start."""
        return self._ancestors[step_id]

    def descendants(self, step_id: str) -> frozenset[str]:
        """Every step that (transitively) needs ``step_id``: what a guard on it prunes."""
        seen: set[str] = set()
        todo = list(self.children[step_id])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(self.children[node])
        return frozenset(seen)

    def roots(self) -> tuple[str, ...]:
        return tuple(s for s in self.order_in_file if not self.needs[s])

    def as_dict(self) -> dict[str, list[str]]:
        return {s: list(self.needs[s]) for s in self.order_in_file}
