"""Value-gradient guidance: the value head's gradient tilts every sampling step.

No weights change. A value head V(x_t, t) is fitted as in VARD's phase 1 (on scored
reference rollouts: the only oracle calls). Sampling then tilts each step of the model's
chain toward higher value, p(y | x_k)·exp(s·V(y, t_{k+1})), to first order in V around the
step's mean ȳ (the expected next state), with s the guidance `strength`:

- Gaussian step N(μ, σ² I): the tilt of a Gaussian by exp(s·g·y) is N(μ + s·σ²·g, σ² I),
  g = ∇_y V(ȳ = μ, t_{k+1}) (classifier guidance with the value as the log-likelihood;
  projected like the step, e.g. onto zero centre of mass).
- Masked categorical step (probabilities π over each position's outcomes): the same tilt
  of a categorical is π_c·exp(s·g_c) renormalised, with g = ∇_y V at ȳ = π, the relaxed
  one-hot state (the straight-through gradient VARD uses, applied to the logits); positions
  that cannot change stay as they are.
- Joint step (a product of parts on one clock): ȳ packs the parts' means, the gradient is
  split by part, and each part is tilted by its own rule above (the tilt of a product by
  exp(s·g·y) with g split by part is the product of the parts' tilts).
- Any other step type raises a ValueError.

With a value that is linear in the state this is exact, and for the soft value the tilted
step is the KL-regularised optimum's step at β = 1/s: so 1/strength is the method's KL
weight (with the plain-mean value, exact for a Gaussian base and a linear reward).

KL to the reference, as reported: the path KL Σ_k KL(guided step ‖ reference step) along the
guided chains (closed form per step), an upper bound on the KL of the final samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from vardbio.algorithms.base import path_kl_note
from vardbio.algorithms.value_sampling import ValueSampling, ValueSamplingConfig
from vardbio.processes.joint import JointStep, pack, split_flat
from vardbio.processes.masked import CategoricalStep
from vardbio.processes.steps import GaussianStep, StepDistribution


@dataclass
class GuidanceConfig(ValueSamplingConfig):
    """Guidance settings (besides value_samples, value and rollout_chunk, see ValueSamplingConfig).

    strength: s, how strongly the value gradient tilts each step (per reward unit); the run's
        KL weight is 1/s (the soft value target is fitted at β = 1/s). > 0.
    """

    strength: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.strength > 0 or not math.isfinite(self.strength):
            raise ValueError(f"guidance needs a finite strength > 0, got {self.strength}")


class ValueGuidance(ValueSampling):
    name = "guidance"
    config_class = GuidanceConfig

    @property
    def kl_weight(self) -> float:
        return 1.0 / self.config.strength

    def guided_step(self, dist: StepDistribution, k: int, mask: torch.Tensor | None) -> StepDistribution:
        """`dist`, the model's step from sampler state k, tilted by exp(strength · V) to first
        order around its mean (see the module docstring)."""
        mean = step_mean(dist)
        with torch.enable_grad():
            y = mean.clone().requires_grad_(True)
            value = self.value_head(y, self.time_tensor(k + 1, y.shape[0], y), mask)
            grad, = torch.autograd.grad(value.sum(), y)
        return tilted(dist, self.config.strength * grad)

    @torch.no_grad()
    def sample_chunk(self, b: int, generator: torch.Generator):
        model, reference = self.ctx.model, self.ctx.reference
        layout = model.layout(b, generator)
        device = next(model.parameters()).device
        mask = None if layout.mask is None else layout.mask.to(device)
        x = model.process.prior_sample(layout.shape, layout.mask, generator).to(device)
        kl = torch.zeros(b, device=device)
        for k in range(model.num_steps):
            if k < model.steerable_steps:
                guided = self.guided_step(model.step(x, k, mask), k, mask)
                kl += guided.kl(reference.step(x, k, mask))
            else:  # a frozen final step is the reference's, unguided
                guided = model.step(x, k, mask)
            x = guided.sample(generator)
        return x, mask, kl

    def kl_note(self) -> str:
        return path_kl_note(self.ctx.model, "path KL of the guided steps to the reference's, summed over steps")

    def inference_cost(self) -> dict[str, Any]:
        k, guided = self.ctx.model.num_steps, self.ctx.model.steerable_steps
        return {"denoiser_calls_per_design": k + guided * self.value_calls(),
                "value_gradient_calls_per_design": guided, "sampling_steps": k,
                "plain_sampling_denoiser_calls": k,
                "note": "each value gradient is one forward and one backward pass of the value head"
                        + (" and of the reference denoiser (the head reads x̂_0)" if self.value_calls() else "")
                        + "; measuring the KL takes K more reference denoiser calls, not counted"}


def step_mean(dist: StepDistribution) -> torch.Tensor:
    """The expected next state ȳ of a step, detached: a Gaussian's mean, a categorical's
    probabilities (the relaxed one-hot state, (B, L, C)), a joint step's parts' means packed
    (B, D)."""
    if isinstance(dist, GaussianStep):
        return dist.mean.detach()
    if isinstance(dist, CategoricalStep):
        return dist.probs.detach()
    if isinstance(dist, JointStep):
        return pack([step_mean(s) for s in dist.steps])
    raise _unsupported(dist)


def tilted(dist: StepDistribution, g: torch.Tensor) -> StepDistribution:
    """The step tilted by exp(g·y) to first order around its mean, g = s·∇V(ȳ) shaped like
    step_mean(dist)."""
    if isinstance(dist, GaussianStep):
        return GaussianStep(dist.mean + dist.projection(dist.std ** 2 * g), dist.std, dist.projection)
    if isinstance(dist, CategoricalStep):
        probs = dist.probs
        logits = torch.where(probs > 0, torch.log(probs.clamp(min=1e-30)) + g, torch.full_like(probs, -math.inf))
        return CategoricalStep(torch.softmax(logits, dim=-1), dist.mask, dist.temperature)
    if isinstance(dist, JointStep):
        return JointStep([tilted(s, part) for s, part in zip(dist.steps, split_flat(g, dist.shapes))], dist.shapes)
    raise _unsupported(dist)


def _unsupported(dist: StepDistribution) -> ValueError:
    return ValueError(f"value-gradient guidance applies to Gaussian, masked categorical and joint steps, "
                      f"not to {type(dist).__name__}")
