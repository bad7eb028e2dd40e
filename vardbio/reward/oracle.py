"""The oracle protocol: a named, versioned black box that scores designs.

An oracle scores a batch of designs (decoded objects: RDKit molecules, sequences, arrays)
and returns one float per design. A design it cannot score gets NaN and a reason; an
oracle never reports a failure as 0. Batching, executors, caching, timeouts and budgets
live in the runtime around the oracle, not in the oracle itself.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np


class OracleError(Exception):
    """Raised inside an oracle for a design it cannot score; becomes NaN plus this reason."""


@dataclass
class OracleResult:
    """Scores of one batch.

    values:     (n,) float64, NaN where the design could not be scored.
    reasons:    n entries, None where scored, otherwise why it failed.
    provenance: filled by the runtime: oracle name, version and params behind every value.
    from_cache: filled by the runtime: (n,) bool, True where the value came from the cache.
    """

    values: np.ndarray
    reasons: list[str | None] = field(default_factory=list)
    provenance: dict[str, Any] | None = None
    from_cache: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        if not self.reasons:
            self.reasons = [None] * len(self.values)
        if len(self.reasons) != len(self.values):
            raise ValueError(
                f"OracleResult has {len(self.values)} values but {len(self.reasons)} reasons"
            )
        for i, (v, why) in enumerate(zip(self.values, self.reasons)):
            if np.isnan(v) and not why:
                self.reasons[i] = "oracle returned NaN without a reason"

    @classmethod
    def failed(cls, n: int, reason: str) -> "OracleResult":
        """All n designs failed for the same reason."""
        return cls(np.full(n, np.nan), [reason] * n)

    @property
    def n_failed(self) -> int:
        return int(np.isnan(self.values).sum())


class Oracle(ABC):
    """Base class of every oracle.

    Subclasses set `name`, `version`, `higher_is_better` and `units`, implement `score`, and
    return from `params()` every setting that changes a score (it is part of the cache key).
    higher_is_better: the preferred direction (None for a score with none, such as logP);
    a Reward warns about a term that pushes against it, and the report marks it (↑/↓).
    units: what a score is measured in, shown beside it in summary.json and the report.
    `cpu_heavy` tells the runtime to use a process pool by default (docking, force fields).
    """

    name: str = "oracle"
    version: str = "1"
    higher_is_better: bool | None = True
    units: str = ""
    cpu_heavy: bool = False

    def provenance(self) -> dict[str, Any]:
        """What produced a score: oracle name, version and parameters."""
        return {"oracle": self.name, "version": self.version, "params": self.params()}

    @abstractmethod
    def score(self, designs: Sequence[Any]) -> OracleResult:
        """Score a batch of designs; NaN plus a reason for each one that fails."""

    def params(self) -> dict[str, Any]:
        """Settings that change the scores (JSON-serialisable)."""
        return {}

    def design_key(self, design: Any) -> str:
        """A canonical key of a design for caching; override for domain canonical forms."""
        if isinstance(design, np.ndarray):
            return "arr:" + hashlib.sha1(np.round(design, 4).tobytes()).hexdigest()
        if hasattr(design, "detach"):  # a torch tensor
            return self.design_key(design.detach().cpu().numpy())
        return f"{type(design).__name__}:{design!r}"

    def identity(self) -> str:
        """Name, version and parameters as one string: what makes two oracles the same."""
        return f"{self.name}@{self.version}:{json.dumps(self.params(), sort_keys=True, default=str)}"


class PerDesignOracle(Oracle):
    """An oracle written one design at a time; raise OracleError (or anything) to fail."""

    @abstractmethod
    def score_one(self, design: Any) -> float:
        """Score one design, raising OracleError with the reason when it cannot."""

    def score(self, designs: Sequence[Any]) -> OracleResult:
        values, reasons = [], []
        for design in designs:
            try:
                value = float(self.score_one(design))
                if np.isnan(value):
                    raise OracleError("score is NaN")
                values.append(value)
                reasons.append(None)
            except Exception as err:  # noqa: BLE001 - every failure becomes NaN plus reason
                values.append(np.nan)
                reasons.append(f"{type(err).__name__}: {err}")
        return OracleResult(np.asarray(values), reasons)


class FunctionOracle(PerDesignOracle):
    """Wraps a plain Python function `fn(design) -> float` as an oracle; its direction
    (higher_is_better) and units are unknown unless given."""

    def __init__(self, fn: Callable[[Any], float], name: str | None = None, version: str = "1",
                 higher_is_better: bool | None = None, units: str = ""):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")
        self.version = version
        self.higher_is_better = higher_is_better
        self.units = units

    def score_one(self, design: Any) -> float:
        return self.fn(design)
