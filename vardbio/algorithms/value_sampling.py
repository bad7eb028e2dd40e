"""What the methods that steer sampling with a value head share (SVDD, value-gradient guidance).

They change no weights: a value head V(x_t, t) is fitted exactly as in VARD's phase 1
(vardbio.algorithms.vard.fit_value_on_rollouts, on `value_samples` scored reference
rollouts: the only oracle calls they make), and every final design then pays at sampling
time. Each subclass draws one chunk of chains (`sample_chunk`) and says what a design cost.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from vardbio.algorithms.base import Algorithm, AlgorithmContext, FinalSamples, affordable_designs
from vardbio.algorithms.vard import fit_value_on_rollouts
from vardbio.model.diffusion import Trajectory
from vardbio.processes.gaussian import GaussianProcess
from vardbio.value.fitting import ValueFitConfig


@dataclass
class ValueSamplingConfig:
    """Settings every value-steered sampler has.

    value_samples: reference rollouts scored by the oracles to fit the value head (capped by
        the oracle budget). value: how it is fitted (as VARD's `value`; the soft target uses
        the method's KL weight). rollout_chunk: chains sampled together (value fitting and
        final sampling).
    """

    value_samples: int = 512
    value: ValueFitConfig = field(default_factory=ValueFitConfig)
    rollout_chunk: int = 64

    def __post_init__(self) -> None:
        if self.value_samples < 2 or self.rollout_chunk < 1:
            raise ValueError("value_samples must be >= 2 and rollout_chunk >= 1")


class ValueSampling(Algorithm):
    """A sampler steered by a value head fitted on scored reference rollouts."""

    def __init__(self, config: ValueSamplingConfig, ctx: AlgorithmContext):
        super().__init__(config, ctx)
        process = ctx.model.process
        if isinstance(process, GaussianProcess) and process.config.eta == 0:
            raise ValueError(f"{self.name} needs stochastic steps: eta = 0 (deterministic DDIM) leaves "
                             "nothing to select or tilt and no KL to the reference; set eta > 0")
        if config.value.target == "soft" and self.kl_weight is None:
            raise ValueError(f"{self.name}: the soft value target needs a KL weight (alpha > 0 / strength > 0)")
        self.value_head = ctx.make_value_head()
        self.value_head.requires_grad_(False)
        self.times = [process.time(k) for k in range(process.num_steps + 1)]

    def setup(self) -> dict[str, Any]:
        cfg = self.config
        n = affordable_designs(self.ctx.reward, cfg.value_samples)
        report = fit_value_on_rollouts(self.ctx, self.value_head, self.ctx.reference, n, cfg.value,
                                       self.kl_weight, cfg.rollout_chunk)
        return {"value_fit": report.as_dict()}

    def iteration(self, index: int) -> dict[str, float]:
        return {}

    def min_designs(self) -> int:
        return 2  # a value head needs two scored designs

    def finished(self) -> bool:
        return True  # nothing to train: every design pays at sampling time

    def time_tensor(self, k: int, batch: int, like: torch.Tensor) -> torch.Tensor:
        """The noise level of sampler state k as a (batch,) tensor for the value head."""
        return torch.full((batch,), self.times[k], dtype=like.dtype, device=like.device)

    @abstractmethod
    def sample_chunk(self, b: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                          torch.Tensor]:
        """b steered chains: (final states (b, ...), mask (b, N) or None, (b,) KL to the reference)."""

    @abstractmethod
    def kl_note(self) -> str:
        """How sample_chunk's KL is obtained."""

    @abstractmethod
    def inference_cost(self) -> dict[str, Any]:
        """What one design costs to sample (denoiser_calls_per_design, ...)."""

    def final_samples(self, n: int, generator: torch.Generator) -> FinalSamples:
        n = self.ctx.collective.shard(n)
        parts, kls = [], []
        for start in range(0, n, self.config.rollout_chunk):
            states, mask, kl = self.sample_chunk(min(self.config.rollout_chunk, n - start), generator)
            parts.append(Trajectory(states[None], mask))
            kls.append(kl.cpu())
        joined = Trajectory.concat(parts)
        kl = torch.cat(kls)
        inference = {**self.inference_cost(), "oracle_calls_per_design": 0, "kl_mean": float(kl.mean()),
                     "kl_how": self.kl_note()}
        return FinalSamples(joined.final, joined.mask, kl, self.kl_note(), inference)

    def value_calls(self) -> int:
        """Denoiser passes one value-head evaluation costs: 1 when the head reads the reference
        model's denoised estimate x̂_0(x_t), else 0."""
        return 0 if self.value_head.input_map is None else 1

    def state_dict(self) -> dict[str, Any]:
        return {"value_head": self.value_head.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value_head.load_state_dict(state["value_head"])
