"""Optimisation metrics over the history of oracle calls, domain-free.

PMO's sample-efficiency measure (Gao et al., "Sample Efficiency Matters: A Benchmark for
Practical Molecular Optimization", NeurIPS 2022): every `interval` calls, take the mean of
the k best rewards found so far; the area under that curve against the number of calls
(trapezoid rule, starting from 0 at 0 calls, the last segment ending at the last call), held
flat from the last call to the budget when the run stopped early, divided by the budget.
A run that finds the best possible reward (1 for the PMO tasks) at its first call scores
about 1.
"""
from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np


def top_k_curve(rewards: Sequence[float], k: int, interval: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(calls, mean of the top k so far) at every `interval` calls and at the last call.

    rewards: the rewards of unique valid designs in the order they were first scored
    (NaN is not allowed: under PMO's rule an invalid design is not a call)."""
    values = np.asarray(rewards, dtype=float)
    if k < 1 or interval < 1:
        raise ValueError(f"k and interval must be >= 1, got k={k}, interval={interval}")
    if np.isnan(values).any():
        raise ValueError("the call history holds NaN rewards; only valid designs count as calls")
    best: list[float] = []  # a min-heap of the k best so far
    calls, means = [], []
    for i, value in enumerate(values, 1):
        if len(best) < k:
            heapq.heappush(best, value)
        elif value > best[0]:
            heapq.heapreplace(best, value)
        if i % interval == 0 or i == len(values):
            calls.append(i)
            means.append(float(np.mean(best)))
    return np.asarray(calls), np.asarray(means)


def top_k_auc(rewards: Sequence[float], k: int, budget: int, interval: int = 100,
              finish: bool = True) -> float:
    """PMO's AUC of the running top-k mean, divided by `budget` (see the module docstring).

    Calls beyond the budget are ignored; `finish` holds the curve flat from the last call to
    the budget (PMO's convention for a run that stops early)."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    values = np.asarray(rewards, dtype=float)[:budget]
    if len(values) == 0:
        return 0.0
    calls, means = top_k_curve(values, k, interval)
    xs = np.concatenate([[0.0], calls])
    ys = np.concatenate([[0.0], means])
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))
    if finish and len(values) < budget:
        area += (budget - len(values)) * means[-1]
    return area / budget
