"""A scalar reward built from one or more oracles."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from vardbio.reward.evaluator import InProcessEvaluator, OracleEvaluator
from vardbio.reward.oracle import Oracle
from vardbio.reward.transforms import Transform


AGGREGATIONS = ("sum", "geometric")
NAN_POLICIES = ("drop", "penalty")


@dataclass
class RewardTerm:
    """One oracle's contribution: weight * transform(oracle score).

    With no transform the raw score is used: give a negative weight for scores where lower
    is better (a Vina energy), or a transform that maps them onto higher-is-better. A Reward
    warns about a term that pushes an oracle against its `higher_is_better`.
    name: the component's name in RewardBatch (default: the oracle's name).
    """

    oracle: Oracle
    weight: float = 1.0
    transform: Transform | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.oracle.name

    @property
    def direction(self) -> int:
        """1 if the reward rises with the raw oracle score, -1 if it falls, 0 if neither
        (a window transform, or a zero weight): the sign of the weight times the
        transform's direction."""
        return int(np.sign(self.weight)) * (self.transform.direction if self.transform is not None else 1)

    def check_direction(self) -> None:
        """Warn when the term pushes its oracle against the oracle's `higher_is_better`
        (an SA score rewarded upwards, say); nothing when either has no direction."""
        preferred = self.oracle.higher_is_better
        if preferred is None or self.direction == 0 or (self.direction > 0) == preferred:
            return
        units = f" ({self.oracle.units})" if self.oracle.units else ""
        warnings.warn(f"reward term '{self.label}' rewards {'higher' if self.direction > 0 else 'lower'} "
                      f"{self.oracle.name} scores{units}, but for that oracle {'higher' if preferred else 'lower'} "
                      f"is better; flip the weight's sign or the transform if that is not what you want",
                      stacklevel=3)


@dataclass
class RewardBatch:
    """Rewards of a batch of designs.

    values:      (n,) float64 reward; NaN where a component failed under the "drop" policy,
                 the stated penalty under the "penalty" policy.
    components:  term name -> (n,) raw oracle scores.
    reasons:     n entries, None where every component is defined, otherwise why not.
    transformed: term name -> (n,) scores after the term's transform.
    failed:      (n,) bool, True where some component failed (dropped or penalised).
    provenance:  term name -> oracle name, version, params, real calls and cache hits.
    """

    values: np.ndarray
    components: dict[str, np.ndarray]
    reasons: list[str | None]
    transformed: dict[str, np.ndarray] = field(default_factory=dict)
    failed: np.ndarray | None = None
    provenance: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.failed is None:
            self.failed = np.isnan(self.values)

    @property
    def valid(self) -> np.ndarray:
        """(n,) bool, True where the reward is defined."""
        return ~np.isnan(self.values)

    @property
    def n_failed(self) -> int:
        """Designs with at least one failed component (dropped or penalised)."""
        return int(self.failed.sum())


class Reward:
    """Oracle scores, transformed and weighted, aggregated into one scalar per design.

    terms:       the RewardTerms (distinct names).
    evaluator:   runs the oracles and counts calls (InProcessEvaluator if None; pass an
                 OracleRuntime for executors, caching, timeouts).
    aggregation: "sum" (sum of weight * transformed score) or "geometric" (weighted geometric
                 mean prod(t_i ** w_i) ** (1 / sum(w_i)); needs positive weights and
                 transformed scores >= 0, e.g. in [0, 1]).
    nan_policy:  "drop" (the reward is NaN where any component failed: the algorithm drops
                 and counts it) or "penalty" (the reward is `nan_penalty` there).
    """

    def __init__(self, terms: Sequence[RewardTerm], evaluator: OracleEvaluator | None = None,
                 aggregation: str = "sum", nan_policy: str = "drop",
                 nan_penalty: float | None = None):
        if not terms:
            raise ValueError("a reward needs at least one oracle term")
        self.terms = list(terms)
        for term in self.terms:
            term.check_direction()
        labels = [t.label for t in self.terms]
        if len(set(labels)) != len(labels):
            raise ValueError(f"reward terms need distinct names, got {labels}; set `name` on "
                             "terms that use the same oracle")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation '{aggregation}'; expected one of {AGGREGATIONS}")
        if aggregation == "geometric" and any(t.weight <= 0 for t in self.terms):
            raise ValueError("a geometric-mean reward needs positive weights")
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"unknown nan_policy '{nan_policy}'; expected one of {NAN_POLICIES}")
        if nan_policy == "penalty" and (nan_penalty is None or not np.isfinite(nan_penalty)):
            raise ValueError("nan_policy 'penalty' needs a finite nan_penalty")
        if nan_policy == "drop" and nan_penalty is not None:
            raise ValueError("nan_penalty is only used with nan_policy 'penalty'")
        self.aggregation = aggregation
        self.nan_policy = nan_policy
        self.nan_penalty = nan_penalty
        self.evaluator = evaluator if evaluator is not None else InProcessEvaluator()

    @property
    def ledger(self):
        return self.evaluator.ledger

    def __call__(self, designs: Sequence[Any]) -> RewardBatch:
        designs = list(designs)
        n = len(designs)
        keys = [self.terms[0].oracle.design_key(d) for d in designs]
        self.ledger.check_designs(keys)
        reasons: list[str | None] = [None] * n
        components, transformed, provenance = {}, {}, {}
        for term in self.terms:
            result = self.evaluator.evaluate(term.oracle, designs)
            components[term.label] = result.values
            t = term.transform(result.values) if term.transform is not None else result.values
            transformed[term.label] = t
            provenance[term.label] = result.provenance or term.oracle.provenance()
            for i, why in enumerate(result.reasons):
                if why and reasons[i] is None:
                    reasons[i] = f"{term.label}: {why}"
        if self.aggregation == "sum":
            total = np.zeros(n)
            for term in self.terms:
                total = total + term.weight * transformed[term.label]
        else:
            log_sum = np.zeros(n)
            for term in self.terms:
                t = transformed[term.label]
                negative = t < 0
                for i in np.flatnonzero(negative):
                    if reasons[i] is None:
                        reasons[i] = (f"{term.label}: transformed score {t[i]:g} < 0 cannot enter "
                                      "a geometric mean; use a transform into [0, 1]")
                with np.errstate(divide="ignore", invalid="ignore"):
                    log_sum = log_sum + term.weight * np.where(negative, np.nan, np.log(t))
            total = np.exp(log_sum / sum(t.weight for t in self.terms))
        failed = np.isnan(total)
        for i in np.flatnonzero(failed):
            if reasons[i] is None:
                reasons[i] = "reward is NaN"
        self.ledger.record_designs(keys, total)
        if self.nan_policy == "penalty":
            total = np.where(failed, float(self.nan_penalty), total)
        return RewardBatch(total, components, reasons, transformed, failed, provenance)
