"""The interface every fine-tuning algorithm implements, and what the campaign gives it."""
from __future__ import annotations

import contextlib

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch

from vardbio.model.diffusion import DiffusionModel, Trajectory, path_kl
from vardbio.reward.reward import Reward, RewardBatch
from vardbio.value.heads import ValueHead


class Collective:
    """How the processes of a run share work. This default is one process: every design is
    local, so each method returns its input. The campaign passes a multi-process one
    (vardbio.campaign.distributed) when launched under `accelerate launch`.
    """

    rank: int = 0
    world_size: int = 1

    def shard(self, n: int) -> int:
        """How many of n chains this process samples (the shares sum to n)."""
        return n

    def gather_scored(self, traj: Trajectory, rewards: np.ndarray) -> tuple[Trajectory, np.ndarray]:
        """Every process's chains and (B,) rewards, joined in rank order, on every process."""
        return traj, rewards

    @contextlib.contextmanager
    def accumulating(self, model: DiffusionModel, last: bool) -> Iterator[None]:
        """Backward passes inside the block accumulate gradients locally; only the one with
        `last` set synchronises them across processes (one exchange per update)."""
        yield

    def all_values(self, values: np.ndarray) -> np.ndarray:
        """Every process's (B,) values joined in rank order, on every process."""
        return values

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Copy process 0's parameters and buffers of `module` to every process."""


@dataclass
class AlgorithmContext:
    """Everything an algorithm works with.

    model: the model being fine-tuned (trainable); reference: the frozen pretrained copy;
    reward: scores designs and counts every real oracle call in `reward.ledger`;
    make_value_head: builds a fresh domain value head; generator: the campaign's RNG (one per
    process); collective: how processes share chains (one process unless launched with several).
    """

    model: DiffusionModel
    reference: DiffusionModel
    reward: Reward
    make_value_head: Callable[[], ValueHead]
    generator: torch.Generator
    collective: Collective = field(default_factory=Collective)


@dataclass
class FinalSamples:
    """The designs an algorithm ends with, for evaluation.

    states: (B, ...) final states x_0; mask: (B, N) or None;
    kl: (B,) KL to the reference per sample (path KL, or a bound where noted);
    kl_note: how kl was obtained;
    inference: for methods that change no weights (they pay at sampling time instead), what
        sampling one design cost and measured, e.g. denoiser_calls_per_design (None: plain
        sampling); the summary records it as `inference`.
    summary_entries: further summary.json entries the algorithm reports about its result.
    """

    states: torch.Tensor
    mask: torch.Tensor | None
    kl: torch.Tensor
    kl_note: str
    inference: dict[str, Any] | None = None
    summary_entries: dict[str, Any] = field(default_factory=dict)


class Algorithm(ABC):
    """One fine-tuning method. Subclasses set `name` and `config_class` (a dataclass)."""

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any, ctx: AlgorithmContext):
        if not isinstance(config, self.config_class):
            raise TypeError(f"{self.name} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.ctx = ctx

    @property
    def kl_weight(self) -> float | None:
        """β, the weight of the KL to the reference in the objective, if the method has one."""
        return None

    def setup(self) -> dict[str, Any]:
        """Work before the first iteration (e.g. fitting a value head); returns metrics."""
        return {}

    def min_designs(self) -> int:
        """The fewest scored designs the method can do anything with (checked against the
        oracle budget before any call is made)."""
        return 1

    @abstractmethod
    def iteration(self, index: int) -> dict[str, float]:
        """One update of the model; returns scalar metrics for metrics.csv."""

    def finished(self) -> bool:
        """True when the algorithm can make no further useful iteration (e.g. budget spent)."""
        return False

    def final_samples(self, n: int, generator: torch.Generator) -> FinalSamples:
        """n samples of the fine-tuned model with their path KL to the reference (this
        process's share of them when there are several)."""
        traj = self.ctx.model.rollout(self.ctx.collective.shard(n), generator)
        kl = path_kl(self.ctx.model, self.ctx.reference, traj)
        return FinalSamples(traj.final, traj.mask, kl, path_kl_note(self.ctx.model))

    def state_dict(self) -> dict[str, Any]:
        """Everything beyond the model weights needed to resume (optimisers, value heads)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""


def path_kl_note(model: DiffusionModel, what: str = "path KL summed over steps") -> str:
    """How a path KL was summed: `what`, and when the model's final steps are frozen, that
    they add nothing and the sum bounds the designs' KL."""
    if not model.frozen_final_steps:
        return what
    return (f"{what} (the last {model.frozen_final_steps} of {model.num_steps} are the reference's and add "
            f"nothing, so it bounds the KL of the designs)")


def score_trajectory(model: DiffusionModel, traj: Trajectory, reward: Reward) -> RewardBatch:
    """Decode the final states of `traj` and score them (counting the oracle calls)."""
    return reward(model.decode(traj.final, traj.mask))


def rollout_in_chunks(model: DiffusionModel, n: int, chunk: int, generator: torch.Generator,
                      keep_log_probs: bool = False) -> Trajectory:
    """model.rollout(n) done `chunk` chains at a time, to bound memory."""
    parts = [model.rollout(min(chunk, n - start), generator, keep_log_probs)
             for start in range(0, n, chunk)]
    return Trajectory.concat(parts)


def reward_stats(values: np.ndarray) -> dict[str, float]:
    """mean, median and mean of the top decile of the finite values; NaN count beside."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    if len(finite) == 0:
        return {"mean": float("nan"), "median": float("nan"), "top10": float("nan"), "n": 0,
                "n_nan": int(len(values))}
    top = np.sort(finite)[-max(1, int(np.ceil(0.1 * len(finite)))):]
    return {"mean": float(finite.mean()), "median": float(np.median(finite)),
            "top10": float(top.mean()), "n": int(len(finite)), "n_nan": int(len(values) - len(finite))}


def choose_steps(num_steps: int, count: int, generator: torch.Generator) -> list[int]:
    """`count` distinct step indices in [0, num_steps), sorted; all of them when count is 0."""
    if count == 0 or count >= num_steps:
        return list(range(num_steps))
    return sorted(torch.randperm(num_steps, generator=generator)[:count].tolist())


def affordable_designs(reward: Reward, wanted: int) -> int:
    """How many designs (at most `wanted`) the remaining oracle budget can score: each
    design costs one call per oracle term of the reward (cache hits make it cheaper), or
    one unique valid design when the budget counts those (PMO's rule)."""
    remaining = reward.ledger.remaining
    if remaining is None:
        return wanted
    per_design = len(reward.terms) if reward.ledger.counting == "calls" else 1
    return max(0, min(wanted, remaining // per_design))
