"""Best-of-N: draw N reference samples per final design, score them all, keep the best.

No training: every candidate costs one oracle call, so N · (number of final designs)
calls in all; under an oracle budget it returns as many designs as the budget pays for
(at most the number asked). The KL of the best-of-N distribution to the reference is at most
log N - (N - 1)/N (Beirami et al. 2024); that bound is what it reports. It changes no weights,
so like SVDD and guidance it reports what one design cost to sample (`inference`): N chains
of K denoiser calls and N oracle calls per oracle term.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vardbio.algorithms.base import (
    Algorithm, AlgorithmContext, FinalSamples, affordable_designs, rollout_in_chunks, score_trajectory,
)


@dataclass
class BestOfNConfig:
    """n: candidates per final design. rollout_chunk: chains per rollout call."""

    n: int = 8
    rollout_chunk: int = 256

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"best-of-N needs n >= 1, got {self.n}")
        if self.rollout_chunk < 1:
            raise ValueError(f"rollout_chunk must be >= 1, got {self.rollout_chunk}")


class BestOfN(Algorithm):
    name = "best_of_n"
    config_class = BestOfNConfig

    def iteration(self, index: int) -> dict[str, float]:
        return {}

    def finished(self) -> bool:
        return True

    def min_designs(self) -> int:
        return self.config.n  # one best-of-n design

    def affordable_designs(self, wanted: int) -> int:
        """How many best-of-N designs the remaining oracle budget pays for (at most wanted)."""
        count = affordable_designs(self.ctx.reward, wanted * self.config.n) // self.config.n
        if count < 1:
            remaining = self.ctx.reward.ledger.remaining
            raise ValueError(f"the oracle budget ({remaining} calls left) cannot pay for one "
                             f"best-of-{self.config.n} design")
        return count

    def final_samples(self, n: int, generator: torch.Generator) -> FinalSamples:
        per = self.config.n
        n = self.ctx.collective.shard(self.affordable_designs(n))
        ref = self.ctx.reference
        traj = rollout_in_chunks(ref, n * per, self.config.rollout_chunk, generator)
        calls_before = self.ctx.reward.ledger.total_calls
        scores = score_trajectory(ref, traj, self.ctx.reward).values.reshape(n, per)
        calls = self.ctx.reward.ledger.total_calls - calls_before
        ranked = np.where(np.isnan(scores), -np.inf, scores)
        best = torch.as_tensor(np.arange(n) * per + ranked.argmax(axis=1))
        chosen = traj.select(best)
        bound = math.log(per) - (per - 1) / per
        note = f"analytic upper bound log N - (N-1)/N with N = {per}"
        k = ref.num_steps
        inference = {"denoiser_calls_per_design": k * per, "candidates_per_design": per, "sampling_steps": k,
                     "plain_sampling_denoiser_calls": k, "oracle_calls_per_design": calls / n,
                     "kl_mean": bound, "kl_how": note,
                     "note": "every candidate is scored by the oracles; those calls count against the budget "
                             "(repeats the oracle cache answers are free)"}
        return FinalSamples(chosen.final, chosen.mask, torch.full((n,), bound), note, inference)
