"""Exact accounting of oracle calls, shared by every algorithm in a campaign."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


class OracleBudgetExceeded(RuntimeError):
    """Raised before a batch that would spend more real oracle calls than the budget allows."""


@dataclass
class OracleLedger:
    """Counts real oracle calls (one per design per oracle), cache hits and failures.

    budget: the most real calls allowed in total, or None for no limit. A batch that would
    go over raises OracleBudgetExceeded before any call is made.
    """

    budget: int | None = None
    calls: Counter = field(default_factory=Counter)
    cache_hits: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.total_calls

    def check(self, n: int) -> None:
        """Raise if n more real calls would exceed the budget."""
        if self.budget is not None and self.total_calls + n > self.budget:
            raise OracleBudgetExceeded(
                f"oracle budget exhausted: {self.total_calls} of {self.budget} calls spent, "
                f"a batch needs {n} more"
            )

    def record(self, oracle: str, calls: int, cache_hits: int = 0, failures: int = 0) -> None:
        self.calls[oracle] += calls
        self.cache_hits[oracle] += cache_hits
        self.failures[oracle] += failures

    def state_dict(self) -> dict:
        return {"budget": self.budget, "calls": dict(self.calls),
                "cache_hits": dict(self.cache_hits), "failures": dict(self.failures)}

    def load_state_dict(self, state: dict) -> None:
        self.budget = state["budget"]
        self.calls = Counter(state["calls"])
        self.cache_hits = Counter(state["cache_hits"])
        self.failures = Counter(state["failures"])
