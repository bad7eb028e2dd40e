"""Masked (absorbing-state) discrete diffusion over a vocabulary of V tokens.

States are one-hot floats (B, L, V+1): channel V is the mask token. Going forward, every
token is replaced by the mask with probability m(t) (m(0) = 0, m(1) = 1). Going back from
time t to s < t, a masked position is revealed with probability 1 - m(s)/m(t), as a token
drawn from the denoiser's p_θ(x_0 | x_t); revealed tokens stay. One-hot states let value
heads take the straight-through relaxed draws that VARD differentiates through.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vardbio.processes.base import DiffusionProcess
from vardbio.processes.steps import StepDistribution

MASK_SCHEDULES = ("linear", "cosine")


@dataclass
class MaskedDiffusionConfig:
    """vocab_size: V real tokens (the mask is an extra channel);
    schedule: m(t) = t ('linear') or 1 - cos(π t / 2) ('cosine');
    sampling_steps: reverse steps per sample;
    relax_temperature: Gumbel-softmax temperature of rsample's straight-through gradient;
    token_temperature: the revealed tokens are drawn from softmax(logits / token_temperature)
        (1 = the denoiser's own p_θ(x_0 | x_t); below 1 sharpens it, trading diversity for
        typical designs; the reference and the fine-tuned model share it, so the KL is
        between the sampled steps)."""

    vocab_size: int = 20
    schedule: str = "linear"
    sampling_steps: int = 32
    relax_temperature: float = 0.1
    token_temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {self.vocab_size}")
        if self.schedule not in MASK_SCHEDULES:
            raise ValueError(f"unknown mask schedule '{self.schedule}'; expected one of {MASK_SCHEDULES}")
        if self.sampling_steps < 1:
            raise ValueError(f"sampling_steps must be >= 1, got {self.sampling_steps}")
        if self.relax_temperature <= 0:
            raise ValueError(f"relax_temperature must be > 0, got {self.relax_temperature}")
        if self.token_temperature <= 0:
            raise ValueError(f"token_temperature must be > 0, got {self.token_temperature}")


class CategoricalStep(StepDistribution):
    """Independent categorical outcomes per position.

    probs: (B, L, C) outcome probabilities (a one-hot row for a position that cannot change);
    mask: (B, L) 1 for real positions, 0 for padding (excluded from log_prob and KL);
    temperature: Gumbel-softmax temperature for rsample.
    """

    def __init__(self, probs: torch.Tensor, mask: torch.Tensor | None, temperature: float):
        self.probs = probs
        self.mask = mask
        self.temperature = temperature

    def _positions(self, per_position: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            per_position = per_position * self.mask.to(per_position.dtype)
        return per_position.sum(-1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        flat = self.probs.detach().reshape(-1, self.probs.shape[-1])
        idx = torch.multinomial(flat, 1, generator=generator).reshape(self.probs.shape[:-1])
        return F.one_hot(idx, self.probs.shape[-1]).to(self.probs.dtype)

    def rsample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A one-hot draw whose gradient is the relaxed (Gumbel-softmax) one's."""
        uniform = torch.rand(self.probs.shape, generator=generator, dtype=self.probs.dtype,
                             device=self.probs.device).clamp(1e-10, 1 - 1e-10)
        gumbel = -torch.log(-torch.log(uniform))
        logits = torch.log(self.probs.clamp(min=1e-30)) + gumbel
        soft = torch.softmax(logits / self.temperature, dim=-1)
        hard = F.one_hot(logits.argmax(-1), self.probs.shape[-1]).to(soft.dtype)
        return hard + (soft - soft.detach())  # exactly one-hot forward, relaxed gradient

    def log_prob(self, x_prev: torch.Tensor) -> torch.Tensor:
        chosen = (self.probs * x_prev).sum(-1)
        return self._positions(torch.log(chosen.clamp(min=1e-30)))

    def kl(self, other: StepDistribution) -> torch.Tensor:
        if not isinstance(other, CategoricalStep):
            raise TypeError(f"KL between CategoricalStep and {type(other).__name__} is not defined")
        p, q = self.probs, other.probs
        # p·(log p - log q) with logs of clamped values: 0·log 0 counts as 0 and its
        # gradient stays finite (xlogy's would be -inf at p = 0)
        terms = p * (torch.log(p.clamp(min=1e-30)) - torch.log(q.clamp(min=1e-30)))
        return self._positions(terms.sum(-1))


class MaskedDiffusion(DiffusionProcess):
    """The absorbing-state process; the denoiser returns logits (B, L, V) of p_θ(x_0 | x_t)."""

    def __init__(self, config: MaskedDiffusionConfig):
        self.config = config
        self.grid = torch.linspace(1.0, 0.0, config.sampling_steps + 1, dtype=torch.float64).tolist()

    @property
    def num_steps(self) -> int:
        return self.config.sampling_steps

    @property
    def mask_index(self) -> int:
        return self.config.vocab_size

    def time(self, k: int) -> float:
        return self.grid[k]

    def mask_rate(self, t: float | torch.Tensor):
        """m(t): the probability that a token is masked at time t."""
        if self.config.schedule == "linear":
            return t
        return 1 - torch.cos(t * math.pi / 2) if isinstance(t, torch.Tensor) else 1 - math.cos(t * math.pi / 2)

    def prior_sample(self, shape, mask, generator=None):
        if shape[-1] != self.config.vocab_size + 1:
            raise ValueError(f"masked states need {self.config.vocab_size + 1} channels, got shape {shape}")
        x = torch.zeros(shape)
        x[..., self.mask_index] = 1.0
        return x

    def reverse_step(self, model_output, x_t, k, mask):
        if not 0 <= k < self.num_steps:
            raise ValueError(f"step index {k} out of range [0, {self.num_steps})")
        m_t, m_s = self.mask_rate(self.grid[k]), self.mask_rate(self.grid[k + 1])
        stay = m_s / m_t
        is_masked = x_t[..., self.mask_index:self.mask_index + 1]  # (B, L, 1)
        token_probs = torch.softmax(model_output / self.config.token_temperature, dim=-1)  # (B, L, V)
        reveal = torch.cat([(1 - stay) * token_probs, torch.full_like(token_probs[..., :1], stay)], -1)
        probs = is_masked * reveal + (1 - is_masked) * x_t
        return CategoricalStep(probs, mask, self.config.relax_temperature)

    def denoised(self, model_output, x_t, t, mask):
        """E[x_0 | x_t] as (B, L, V+1) probabilities: revealed tokens as they are, masked
        positions the denoiser's token distribution (mask channel 0)."""
        is_masked = x_t[..., self.mask_index:self.mask_index + 1]
        probs = torch.cat([torch.softmax(model_output, dim=-1), torch.zeros_like(is_masked)], -1)
        return is_masked * probs + (1 - is_masked) * x_t

    def forward_sample(self, x0, k, mask, generator=None):
        """Each real position of the one-hot x0 (B, L, V+1) masked with probability m(t_k)."""
        if not 0 <= k <= self.num_steps:
            raise ValueError(f"state index {k} out of range [0, {self.num_steps}]")
        if k == self.num_steps:
            return x0
        return self.corrupt(x0, torch.full((x0.shape[0],), self.grid[k], dtype=torch.float64), mask, generator)[0]

    def masked(self, x0: torch.Tensor, hide: torch.Tensor) -> torch.Tensor:
        """x0 (B, L, V+1) with the positions where hide (B, L) is 1 set to the mask token."""
        masked_state = torch.zeros_like(x0)
        masked_state[..., self.mask_index] = 1.0
        return hide[..., None] * masked_state + (1 - hide[..., None]) * x0

    def output_shape(self, state_shape):
        """Logits (B, L, V) for one-hot states (B, L, V+1)."""
        return (*state_shape[:-1], self.config.vocab_size)

    def training_times(self, batch, generator=None):
        """Uniform times in [0.001, 1], (B,)."""
        return torch.rand(batch, generator=generator).clamp(min=1e-3)

    def corrupt(self, x0, t, mask, generator=None):
        """(x_t, target) for one-hot x0 (B, L, V+1) at times t (B,): each real position
        masked with probability m(t); the target holds the clean one-hot tokens (B, L, V) of
        the masked positions and zeros elsewhere."""
        batch, length = x0.shape[:2]
        rate = self.mask_rate(t).to(x0.device, x0.dtype)
        hide = (torch.rand(batch, length, generator=generator).to(x0.device) < rate[:, None]).to(x0.dtype)
        if mask is not None:
            hide = hide * mask.to(x0.dtype)
        return self.masked(x0, hide), hide[..., None] * x0[..., : self.config.vocab_size]

    def denoising_loss(self, output, target, t, mask):
        """Cross-entropy of the logits output (B, L, V) on the masked positions, averaged
        over the masked positions of the batch."""
        ce = -(target * torch.log_softmax(output, dim=-1)).sum()
        return ce / target.sum().clamp(min=1)
