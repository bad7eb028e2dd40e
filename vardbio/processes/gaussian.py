"""Gaussian diffusion: DDPM / DDIM(η) sampling with ε- or x0-prediction."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from vardbio.processes.base import Denoiser, DiffusionProcess
from vardbio.processes.projection import Projection
from vardbio.processes.schedules import SCHEDULES, alphas_cumprod, sampling_times
from vardbio.processes.steps import GaussianStep

PREDICTIONS = ("eps", "x0")

LossWeight = Callable[[torch.Tensor], torch.Tensor]
"""weight(ᾱ_t (B,)) -> (B,): how much each example's squared error counts in training_loss."""


def min_snr_weight(gamma: float, prediction: str = "x0") -> LossWeight:
    """Min-SNR-γ weighting (Hang et al. 2023): every example counts as its x0 error weighted
    by min(SNR(t), γ), SNR = ᾱ_t / (1 - ᾱ_t), so the low noise levels, where fine detail is
    decided, count fully and the near-pure-noise ones do not dominate. For ε-prediction the
    ε error is weighted by min(SNR, γ) / SNR, the same loss. Pass `prediction` of the process."""
    if not gamma > 0:
        raise ValueError(f"Min-SNR γ must be > 0, got {gamma}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction '{prediction}'; expected one of {PREDICTIONS}")

    def weight(alpha_bar: torch.Tensor) -> torch.Tensor:
        snr = alpha_bar / (1 - alpha_bar)
        return snr.clamp(max=gamma) if prediction == "x0" else snr.clamp(max=gamma) / snr

    return weight


@dataclass
class GaussianProcessConfig:
    """Settings of a Gaussian diffusion.

    num_train_steps: T, the training noise levels.
    schedule: 'linear' or 'cosine'.
    prediction: what the denoiser outputs, 'eps' (the noise) or 'x0' (the clean state).
    sampling_steps: K reverse steps per sample (K = T - 1 with eta = 1 is DDPM).
    eta: DDIM stochasticity; 1 gives the DDPM posterior variance, 0 a deterministic sampler
         (which has no step density: VARD's KL and DDPO's log-probs need eta > 0).
    com_dims: for point clouds (B, N, F) with a node mask, the number of leading features
              (coordinates) kept at zero centre of mass; 0 for none.
    betas: explicit per-step noise variances β_0 .. β_{T-1} (length num_train_steps, each
           in (0, 1)), e.g. a diffusers scheduler's; when given they replace `schedule`.
    """

    num_train_steps: int = 1000
    schedule: str = "cosine"
    prediction: str = "eps"
    sampling_steps: int = 50
    eta: float = 1.0
    com_dims: int = 0
    betas: Optional[list[float]] = None

    @classmethod
    def from_options(cls, options: dict, **fixed) -> "GaussianProcessConfig":
        """The config from a plugin's options (the keys that are fields of it; others are
        ignored), with `fixed` settings on top."""
        return cls(**{**{k: v for k, v in options.items() if k in cls.__dataclass_fields__}, **fixed})

    def __post_init__(self) -> None:
        if self.betas is not None:
            if len(self.betas) != self.num_train_steps:
                raise ValueError(f"betas has {len(self.betas)} entries for num_train_steps={self.num_train_steps}")
            if not all(0.0 < float(b) < 1.0 for b in self.betas):
                raise ValueError("every beta must lie in (0, 1)")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule '{self.schedule}'; expected one of {SCHEDULES}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction '{self.prediction}'; expected one of {PREDICTIONS}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.com_dims < 0:
            raise ValueError(f"com_dims must be >= 0, got {self.com_dims}")


class GaussianProcess(DiffusionProcess):
    """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε, reversed with DDIM(η) steps.

    The sampler visits training times t_0 = T-1 > ... > t_K = 0; the final state is x at
    t = 0 (noise std sqrt(1 - ᾱ_0), about 1% of the data scale), so every step, the last
    included, has σ > 0 when η > 0.
    """

    def __init__(self, config: GaussianProcessConfig):
        self.config = config
        if config.betas is not None:
            betas = torch.as_tensor([float(b) for b in config.betas], dtype=torch.float64)
            self.alpha_bar = torch.cumprod(1.0 - betas, dim=0)  # (T,) f64
        else:
            self.alpha_bar = alphas_cumprod(config.schedule, config.num_train_steps)  # (T,) f64
        self.times = sampling_times(config.num_train_steps, config.sampling_steps)

    @property
    def num_steps(self) -> int:
        return len(self.times) - 1

    def time(self, k: int) -> float:
        return self.times[k] / (self.config.num_train_steps - 1)

    def projection(self, mask: torch.Tensor | None) -> Projection:
        return Projection(mask, self.config.com_dims if mask is not None else 0)

    def prior_sample(self, shape, mask, generator=None):
        noise = torch.randn(shape, generator=generator)
        return self.projection(mask)(noise)

    def step_std(self, k: int) -> float:
        """σ of reverse step k (state k -> k+1): η · sqrt(β̃) for the DDIM skip."""
        a_t, a_s = self._alpha_pair(k)
        return self.config.eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))

    def _alpha_pair(self, k: int) -> tuple[float, float]:
        if not 0 <= k < self.num_steps:
            raise ValueError(f"step index {k} out of range [0, {self.num_steps})")
        return float(self.alpha_bar[self.times[k]]), float(self.alpha_bar[self.times[k + 1]])

    def reverse_step(self, model_output, x_t, k, mask):
        a_t, a_s = self._alpha_pair(k)
        proj = self.projection(mask)
        model_output = proj(model_output)
        if self.config.prediction == "eps":
            eps = model_output
            x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        else:
            x0 = model_output
            eps = (x_t - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        std = self.step_std(k)
        direction = math.sqrt(max(1 - a_s - std**2, 0.0))
        mean = proj(math.sqrt(a_s) * x0 + direction * eps)
        return GaussianStep(mean, std, proj)

    def denoised(self, model_output, x_t, t, mask):
        """x̂_0 (B, ...) at noise levels t (B,) = training time / (T - 1): the x0-prediction
        itself, or (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t) for ε-prediction; on the zero-CoM
        subspace when the process has one."""
        proj = self.projection(mask)
        model_output = proj(model_output)
        if self.config.prediction != "eps":
            return model_output
        a = self.alpha_bar[self.train_index(t)].to(x_t.dtype).to(x_t.device).view(-1, *([1] * (x_t.dim() - 1)))
        return proj((x_t - (1 - a).sqrt() * model_output) / a.sqrt())

    def train_index(self, t: torch.Tensor) -> torch.Tensor:
        """The integer training times (B,) of noise levels t (B,) = training time / (T - 1)."""
        return (t.detach().double().cpu() * (self.config.num_train_steps - 1)).round().long()

    def add_noise(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t for integer training times t (B,), clean x0 and noise (B, ...)."""
        a = self.alpha_bar.to(x0.dtype)[t].view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def forward_sample(self, x0, k, mask, generator=None):
        if not 0 <= k <= self.num_steps:
            raise ValueError(f"state index {k} out of range [0, {self.num_steps}]")
        if k == self.num_steps:
            return x0
        t = torch.full((x0.shape[0],), self.time(k), dtype=torch.float64)
        return self.corrupt(x0, t, mask, generator)[0]

    def training_times(self, batch, generator=None):
        """Uniformly drawn integer training times, as noise levels t / (T - 1), (B,)."""
        t = torch.randint(0, self.config.num_train_steps, (batch,), generator=generator)
        return t.float() / (self.config.num_train_steps - 1)

    def corrupt(self, x0, t, mask, generator=None):
        """(x_t, target) at noise levels t (B,): x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε on the
        state subspace, and the target of the prediction, ε or x_0 (both (B, ...))."""
        proj = self.projection(mask)
        x0 = proj(x0)
        noise = proj(torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype))
        x_t = self.add_noise(x0, self.train_index(t), noise)
        return x_t, noise if self.config.prediction == "eps" else x0

    def denoising_loss(self, output, target, t, mask, weight: LossWeight | None = None):
        """Mean over the batch of the squared error of the prediction output (B, ...) per
        degree of freedom; `weight` (e.g. min_snr_weight) scales each example's error by a
        function of its ᾱ_t."""
        proj = self.projection(mask)
        sq = (proj(output) - target).pow(2).flatten(1).sum(1) / proj.degrees_of_freedom(target)
        if weight is not None:
            sq = weight(self.alpha_bar.to(target.dtype)[self.train_index(t)].to(target.device)) * sq
        return sq.mean()

    def training_loss(self, denoiser: Denoiser, x0, mask, generator=None, weight: LossWeight | None = None):
        """The loss of the base class, each example's error scaled by `weight` (see
        denoising_loss) when given."""
        t = self.training_times(x0.shape[0], generator).to(x0.dtype)
        x_t, target = self.corrupt(x0, t, mask, generator)
        return self.denoising_loss(denoiser(x_t, t, mask), target, t, mask, weight)
