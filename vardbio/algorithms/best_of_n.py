"""Best-of-N: draw N reference samples per final design, score them all, keep the best.

No training: every candidate costs one oracle call, so N · (number of final designs)
calls in all. The KL of the best-of-N distribution to the reference is at most
log N - (N - 1)/N (Beirami et al. 2024); that bound is what it reports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vardbio.algorithms.base import (
    Algorithm, AlgorithmContext, FinalSamples, rollout_in_chunks, score_trajectory,
)


@dataclass
class BestOfNConfig:
    """n: candidates per final design; 0 takes as many as the oracle budget allows.
    rollout_chunk: chains per rollout call."""

    n: int = 0
    rollout_chunk: int = 256

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"best-of-N needs n >= 0, got {self.n}")


class BestOfN(Algorithm):
    name = "best_of_n"
    config_class = BestOfNConfig

    def iteration(self, index: int) -> dict[str, float]:
        return {}

    def finished(self) -> bool:
        return True

    def candidates_per_design(self, n_designs: int) -> int:
        if self.config.n:
            return self.config.n
        remaining = self.ctx.reward.ledger.remaining
        if remaining is None:
            raise ValueError("best-of-N with n = 0 needs an oracle budget to size N; set n or oracle_budget")
        return max(1, remaining // n_designs)

    def final_samples(self, n: int, generator: torch.Generator) -> FinalSamples:
        per = self.candidates_per_design(n)
        ref = self.ctx.reference
        traj = rollout_in_chunks(ref, n * per, self.config.rollout_chunk, generator)
        scores = score_trajectory(ref, traj, self.ctx.reward).values.reshape(n, per)
        ranked = np.where(np.isnan(scores), -np.inf, scores)
        best = torch.as_tensor(np.arange(n) * per + ranked.argmax(axis=1))
        chosen = traj.select(best)
        bound = math.log(per) - (per - 1) / per
        return FinalSamples(chosen.final, chosen.mask, torch.full((n,), bound),
                            f"analytic upper bound log N - (N-1)/N with N = {per}")
