"""A scalar reward built from one or more oracles."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from vardbio.reward.evaluator import InProcessEvaluator, OracleEvaluator
from vardbio.reward.oracle import Oracle


@dataclass
class RewardTerm:
    """One oracle's contribution: weight * oracle score (use a negative weight for scores
    where lower is better, such as a Vina energy)."""

    oracle: Oracle
    weight: float = 1.0


@dataclass
class RewardBatch:
    """Rewards of a batch of designs.

    values:     (n,) float64 reward, NaN where any oracle failed.
    components: oracle name -> (n,) raw oracle scores.
    reasons:    n entries, None where the reward is defined, otherwise why not.
    """

    values: np.ndarray
    components: dict[str, np.ndarray]
    reasons: list[str | None]

    @property
    def valid(self) -> np.ndarray:
        """(n,) bool, True where the reward is defined."""
        return ~np.isnan(self.values)


class Reward:
    """Weighted sum of oracle scores, evaluated through an OracleEvaluator (which counts calls)."""

    def __init__(self, terms: Sequence[RewardTerm], evaluator: OracleEvaluator | None = None):
        if not terms:
            raise ValueError("a reward needs at least one oracle term")
        self.terms = list(terms)
        self.evaluator = evaluator if evaluator is not None else InProcessEvaluator()

    @property
    def ledger(self):
        return self.evaluator.ledger

    def __call__(self, designs: Sequence[Any]) -> RewardBatch:
        designs = list(designs)
        total = np.zeros(len(designs))
        reasons: list[str | None] = [None] * len(designs)
        components = {}
        for term in self.terms:
            result = self.evaluator.evaluate(term.oracle, designs)
            components[term.oracle.name] = result.values
            total = total + term.weight * result.values
            for i, why in enumerate(result.reasons):
                if why and reasons[i] is None:
                    reasons[i] = f"{term.oracle.name}: {why}"
        return RewardBatch(total, components, reasons)
