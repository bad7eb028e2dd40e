"""Build a Reward (and the runtime that evaluates it) from plain config.

    reward = build_reward(
        [{"oracle": "qed", "weight": 1.0},
         {"oracle": "vina_docking", "params": {"exhaustiveness": 4}, "weight": 2.0,
          "transform": {"type": "linear", "low": -4.0, "high": -12.0}}],
        evaluator=build_runtime({"executor": "process", "cache": "runs/oracle_cache.sqlite"}),
        aggregation="sum", nan_policy="drop")

Oracle names resolve through `vardbio.registry.load("oracle", name)`; `params` go to the
registered class (or factory). A term may also be a dataclass with the same fields.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from vardbio import registry
from vardbio.reward.evaluator import OracleEvaluator
from vardbio.reward.ledger import OracleLedger
from vardbio.reward.oracle import Oracle
from vardbio.reward.reward import Reward, RewardTerm
from vardbio.reward.runtime import OracleRuntime
from vardbio.reward.transforms import build_transform


@dataclass
class RewardTermConfig:
    """One reward term: a registered oracle name, its constructor params, a weight, an
    optional transform ({"type": ..., ...}; empty or null: none, the raw score) and an
    optional component name.

    The transform defaults to an empty mapping rather than null so that a command-line
    override can set one on a term that has none (`campaign.reward.0.transform={type: clip,
    low: -2}`): OmegaConf cannot merge a mapping into a typed node that holds null."""

    oracle: str = "???"
    params: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    transform: dict[str, Any] | None = field(default_factory=dict)
    name: str | None = None


@dataclass
class RuntimeConfig:
    """Settings of the OracleRuntime (see its docstring); cache is a SQLite path or None."""

    executor: str = "auto"
    max_workers: int | None = None
    timeout: float | None = None
    retries: int = 0
    cache: str | None = None
    chunk_size: int = 1
    progress: int | None = 64
    cache_failures: bool = True
    start_method: str = "spawn"
    worker_threads: int | None = 1


_TERM_FIELDS = {f.name for f in dataclasses.fields(RewardTermConfig)}


def _as_dict(obj: Any, what: str) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise ValueError(f"{what} must be a mapping or a dataclass, got {type(obj).__name__}")


def build_oracle(name: str, params: Mapping[str, Any] | None = None) -> Oracle:
    """The registered oracle `name` constructed with `params`."""
    factory = registry.load("oracle", name)
    try:
        oracle = factory(**dict(params or {}))
    except TypeError as err:
        raise ValueError(f"bad params for oracle '{name}': {err}") from err
    if not isinstance(oracle, Oracle):
        raise ValueError(f"oracle plugin '{name}' built a {type(oracle).__name__}, not an Oracle")
    return oracle


def build_term(cfg: Mapping[str, Any] | Any, index: int = 0) -> RewardTerm:
    """A RewardTerm from a mapping/dataclass with oracle, params, weight, transform, name."""
    d = _as_dict(cfg, f"reward term {index}")
    unknown = set(d) - _TERM_FIELDS
    if unknown:
        raise ValueError(f"reward term {index} has unknown keys {sorted(unknown)}; "
                         f"expected {sorted(_TERM_FIELDS)}")
    oracle = d.get("oracle")
    if isinstance(oracle, Oracle):
        if d.get("params"):
            raise ValueError(f"reward term {index}: params are for an oracle given by name")
    elif isinstance(oracle, str) and oracle not in ("", "???"):
        oracle = build_oracle(oracle, d.get("params"))
    else:
        raise ValueError(f"reward term {index} needs an oracle name, got {oracle!r}")
    try:
        weight = float(d.get("weight", 1.0))
    except (TypeError, ValueError) as err:
        raise ValueError(f"reward term {index}: weight must be a number") from err
    spec = d.get("transform") or None  # an empty mapping, like null, is no transform
    try:
        transform = None if spec is None else build_transform(spec)
    except ValueError as err:
        raise ValueError(f"reward term {index} ({oracle.name}): {err}") from err
    return RewardTerm(oracle, weight, transform, d.get("name"))


def build_runtime(cfg: Mapping[str, Any] | RuntimeConfig | None = None,
                  ledger: OracleLedger | None = None) -> OracleRuntime:
    """An OracleRuntime from a RuntimeConfig or mapping of its fields."""
    d = _as_dict(cfg, "runtime config") if cfg is not None else {}
    known = {f.name for f in dataclasses.fields(RuntimeConfig)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"runtime config has unknown keys {sorted(unknown)}; expected {sorted(known)}")
    return OracleRuntime(**d, ledger=ledger)


def build_reward(terms: Sequence[Mapping[str, Any] | Any],
                 evaluator: OracleEvaluator | None = None, aggregation: str = "sum",
                 nan_policy: str = "drop", nan_penalty: float | None = None) -> Reward:
    """A Reward from a list of term configs (mappings or dataclasses).

    evaluator: what runs the oracles (an OracleRuntime from build_runtime, or None for the
    in-process evaluator). aggregation, nan_policy, nan_penalty: see Reward.
    """
    if isinstance(terms, (str, bytes, Mapping)) or not terms:
        raise ValueError("a reward needs a non-empty list of terms")
    built = [build_term(t, i) for i, t in enumerate(terms)]
    return Reward(built, evaluator, aggregation=aggregation, nan_policy=nan_policy,
                  nan_penalty=nan_penalty)
