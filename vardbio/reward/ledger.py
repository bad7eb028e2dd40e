"""Exact accounting of oracle calls, shared by every algorithm in a campaign."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

COUNTING = ("calls", "unique_valid")


class OracleBudgetExceeded(RuntimeError):
    """Raised before a batch that would spend more real oracle calls than the budget allows."""


@dataclass
class OracleLedger:
    """Counts real oracle calls (one per design per oracle), cache hits and failures, and
    keeps the history of distinct designs scored, in order, with their rewards.

    budget: the most calls allowed in total, or None for no limit. A batch that would go
    over raises OracleBudgetExceeded before any call is made.
    counting: what the budget counts. 'calls': every real oracle call (failures included,
    cache hits not). 'unique_valid' (PMO's rule): each distinct design whose reward is
    finite counts once, however many oracles score it; invalid designs and repeats are free.
    Under it a batch is let through while its designs, all counted, would fit the budget.
    history: (design key, reward) of each distinct design in the order it was first
    scored (NaN where its reward failed); the AUC metrics read it.
    """

    budget: int | None = None
    counting: str = "calls"
    calls: Counter = field(default_factory=Counter)
    cache_hits: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    history: list = field(default_factory=list)
    _seen: set = field(default_factory=set, repr=False)
    _n_valid: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.counting not in COUNTING:
            raise ValueError(f"unknown budget counting '{self.counting}'; expected one of {COUNTING}")
        if self.budget is not None and self.budget < 0:
            raise ValueError(f"oracle budget must be >= 0, got {self.budget}")

    @property
    def total_calls(self) -> int:
        """Real oracle calls, summed over oracles."""
        return sum(self.calls.values())

    @property
    def unique_valid(self) -> int:
        """Distinct designs scored with a finite reward."""
        return self._n_valid

    @property
    def spent(self) -> int:
        """What the budget has counted so far (see `counting`)."""
        return self.total_calls if self.counting == "calls" else self.unique_valid

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.spent

    def check(self, n: int) -> None:
        """Raise if n more real calls would exceed a budget that counts calls."""
        if self.counting == "calls" and self.budget is not None and self.spent + n > self.budget:
            raise OracleBudgetExceeded(
                f"oracle budget exhausted: {self.spent} of {self.budget} calls spent, "
                f"a batch needs {n} more"
            )

    def check_designs(self, keys: Sequence[str]) -> None:
        """Raise if the distinct unseen designs among `keys`, all counted, would exceed a
        budget that counts unique valid designs."""
        if self.counting != "unique_valid" or self.budget is None:
            return
        new = len(set(keys) - self._seen)
        if self.spent + new > self.budget:
            raise OracleBudgetExceeded(
                f"oracle budget exhausted: {self.spent} of {self.budget} unique valid designs "
                f"spent, a batch brings {new} new ones"
            )

    def record_designs(self, keys: Sequence[str], rewards: Sequence[float]) -> None:
        """Append the designs not seen before to the history, in order."""
        for key, reward in zip(keys, rewards):
            if key not in self._seen:
                self._seen.add(key)
                self.history.append((key, float(reward)))
                self._n_valid += not math.isnan(reward)

    def valid_history_rewards(self) -> list[float]:
        """The finite rewards of the history, in order: PMO's calls."""
        return [r for _, r in self.history if not math.isnan(r)]

    def record(self, oracle: str, calls: int, cache_hits: int = 0, failures: int = 0) -> None:
        self.calls[oracle] += calls
        self.cache_hits[oracle] += cache_hits
        self.failures[oracle] += failures

    def state_dict(self) -> dict:
        return {"budget": self.budget, "counting": self.counting, "calls": dict(self.calls),
                "cache_hits": dict(self.cache_hits), "failures": dict(self.failures),
                "history": [list(item) for item in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.budget = state["budget"]
        self.calls = Counter(state["calls"])
        self.cache_hits = Counter(state["cache_hits"])
        self.failures = Counter(state["failures"])
        self.counting = state.get("counting", "calls")
        self.history = [(key, float(r)) for key, r in state.get("history", [])]
        self._seen = {key for key, _ in self.history}
        self._n_valid = sum(1 for _, r in self.history if not math.isnan(r))
