"""How oracle batches are run. The in-process evaluator here is the simplest; the oracle
runtime (executors, cache, timeouts) implements the same `OracleEvaluator` interface."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

from vardbio.reward.ledger import OracleLedger
from vardbio.reward.oracle import Oracle, OracleResult


class OracleEvaluator(ABC):
    """Runs an oracle on a batch of designs and records the calls in a ledger."""

    def __init__(self, ledger: OracleLedger | None = None):
        self.ledger = ledger if ledger is not None else OracleLedger()

    @abstractmethod
    def evaluate(self, oracle: Oracle, designs: Sequence[Any]) -> OracleResult:
        """Scores of `designs` by `oracle`: NaN plus a reason where a design failed."""


class InProcessEvaluator(OracleEvaluator):
    """Calls the oracle directly in this process; an exception fails the whole batch."""

    def evaluate(self, oracle: Oracle, designs: Sequence[Any]) -> OracleResult:
        designs = list(designs)
        self.ledger.check(len(designs))
        try:
            result = oracle.score(designs)
        except Exception as err:  # noqa: BLE001 - a crashing oracle becomes NaN plus reason
            result = OracleResult.failed(len(designs), f"{type(err).__name__}: {err}")
        if len(result.values) != len(designs):
            result = OracleResult.failed(
                len(designs),
                f"oracle {oracle.name} returned {len(result.values)} scores for {len(designs)} designs",
            )
        self.ledger.record(oracle.name, calls=len(designs), failures=result.n_failed)
        return result
