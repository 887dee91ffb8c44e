# cython: annotation_typing=False
"""round_robin and weighted_round_robin.

Both walk a precomputed sequence: one entry per candidate for round robin, one *cycle* of
nginx's smooth weighted round robin for weighted round robin, so ``pick()`` is an index and
an increment. Each cycle gives every endpoint exactly its weight's share (weights reduced by
their gcd), spread out rather than in bursts: after any prefix of ``t`` picks of the cycle
an endpoint of weight ``w`` out of ``W`` has about ``t*w/W`` of them, within one pick and a
little (measured at most 1.05 over thousands of random weight sets of up to 16 endpoints).

When a cycle would be too long to precompute (``n * sum(weights) > TABLE_LIMIT``) or weights
are fractional (slow start ramping), the sequence is generated live by earliest-deadline-first
over a heap (O(log n) per pick): each endpoint's next deadline is ``1/weight`` after its last
one, the first starting half a step in. A weight change keeps each endpoint's progress.
"""

from __future__ import annotations

import heapq
import math
import random as _random
from collections.abc import Sequence
from typing import Any, Final

from backhaul.balance.balancer import Balancer, E
from backhaul.balance.settings import BalanceSettings

__all__ = ["TABLE_LIMIT", "RoundRobin", "WeightedRoundRobin", "smooth_weighted_cycle"]

TABLE_LIMIT: Final = 1 << 17
"""Largest ``n * sum(weights)`` (the cost of building a cycle) precomputed into a table."""


def smooth_weighted_cycle(weights: Sequence[int]) -> list[int]:
    """One cycle of nginx's smooth weighted round robin: indexes into ``weights``,
    ``sum(weights)`` long, index ``i`` appearing ``weights[i]`` times.

    Each step adds every weight to its running score, takes the highest score (the first on
    a tie) and takes the total off the winner's score.
    """
    total = sum(weights)
    n = len(weights)
    score = [0] * n
    out: list[int] = []
    indexes = range(n)
    for _ in range(total):
        best = 0
        top = score[0] = score[0] + weights[0]
        for i in indexes[1:]:
            s = score[i] = score[i] + weights[i]
            if s > top:
                top = s
                best = i
        score[best] = top - total
        out.append(best)
    return out


class RoundRobin(Balancer):
    """Each candidate in turn; endpoint weights are ignored (slow start still ramps)."""

    policy = "round_robin"
    uses_weights = False

    # Its fields are declared in rotation.pxd (a C type once compiled).

    def __init__(
        self,
        endpoints: Sequence[E],
        settings: BalanceSettings | None = None,
        *,
        name: str = "",
        now: float = 0.0,
        rng: _random.Random | None = None,
    ) -> None:
        self._seq: list[E] = []
        self._n = 0
        self._next = 0
        self._heap: list[list[Any]] = []
        self._vtime = 0.0
        super().__init__(endpoints, settings, name=name, now=now, rng=rng)
        if self._n:
            # Workers start at different places, so they do not all hit the first endpoint.
            self._next = int(self._random() * self._n)

    def pick(self, key: bytes | None = None) -> E | None:
        i = self._next
        if i < self._n:
            self._next = i + 1
            return self._seq[i]
        if self._n and not self._heap:  # the end of the sequence: start over
            self._next = 1
            return self._seq[0]
        return self._pick_slow()

    def _pick_slow(self) -> E | None:
        heap = self._heap
        if heap:
            top = heap[0]
            self._vtime = top[0]
            top[0] += top[3]
            heapq.heapreplace(heap, top)
            ep: E = top[2]
            return ep
        if self._n:
            self._next = 1
            return self._seq[0]
        return None

    def _candidates_changed(self) -> None:
        cands = self.candidates
        weights = [ep.effective_weight for ep in cands]
        seq: list[E] | None = None
        if not cands or all(w == weights[0] for w in weights):
            seq = list(cands)
        elif all(w.is_integer() for w in weights):
            ints = [int(w) for w in weights]
            g = math.gcd(*ints)
            ints = [w // g for w in ints]
            if len(ints) * sum(ints) <= TABLE_LIMIT:
                seq = [cands[i] for i in smooth_weighted_cycle(ints)]
        if seq is not None:
            self._seq = seq
            self._n = len(seq)
            self._next = self._next % self._n if self._n else 0
            self._heap = []
            return
        self._seq = []
        self._n = 0
        self._next = 0
        self._build_heap(cands, weights)

    def _build_heap(self, cands: list[E], weights: list[float]) -> None:
        previous = {id(entry[2]): entry for entry in self._heap}
        vtime = self._vtime
        heap: list[list[Any]] = []
        for order, (ep, weight) in enumerate(zip(cands, weights, strict=True)):
            step = 1.0 / weight
            prev = previous.get(id(ep))
            if prev is not None:
                # Keep progress: the share of its step still to wait stays the same.
                deadline = max(prev[0] - vtime, 0.0) * step / prev[3]
            else:
                deadline = step / 2.0
            heap.append([deadline, order, ep, step])
        heapq.heapify(heap)
        self._heap = heap
        self._vtime = 0.0


class WeightedRoundRobin(RoundRobin):
    """Smooth weighted round robin (nginx's): exact shares per cycle, no bursts."""

    policy = "weighted_round_robin"
    uses_weights = True

    # A C type once compiled (rotation.pxd).
