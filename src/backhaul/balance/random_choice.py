"""random: a uniformly random candidate, or weighted by endpoint weight (O(log n) by
bisection over cumulative weights)."""

from __future__ import annotations

import random as _random
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

from backhaul.balance.balancer import Balancer, E
from backhaul.balance.settings import BalanceSettings

__all__ = ["RandomChoice"]


class RandomChoice(Balancer):
    """A random candidate, in proportion to its (effective) weight."""

    policy = "random"

    __slots__ = ("_cumulative", "_total")

    def __init__(
        self,
        endpoints: Sequence[E],
        settings: BalanceSettings | None = None,
        *,
        name: str = "",
        now: float = 0.0,
        rng: _random.Random | None = None,
    ) -> None:
        self._cumulative: list[float] | None = None
        self._total = 0.0
        super().__init__(endpoints, settings, name=name, now=now, rng=rng)

    def pick(self, key: bytes | None = None) -> E | None:
        cands = self.candidates
        n = len(cands)
        if not n:
            return None
        cumulative = self._cumulative
        if cumulative is None:
            return cands[int(self._random() * n)]
        i = bisect_right(cumulative, self._random() * self._total)
        return cands[i if i < n else n - 1]

    def _candidates_changed(self) -> None:
        weights = [ep.effective_weight for ep in self.candidates]
        if not weights or all(w == weights[0] for w in weights):
            self._cumulative = None
            self._total = 0.0
        else:
            self._cumulative = list(accumulate(weights))
            self._total = self._cumulative[-1]
