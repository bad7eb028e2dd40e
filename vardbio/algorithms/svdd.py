"""SVDD: soft value-based decoding (Li et al. 2024), selection by value at every step.

No weights change. A value head V(x_t, t) is fitted as in VARD's phase 1 (on scored
reference rollouts: the only oracle calls). Sampling a design then runs the proposal
model's chain; at each step k it draws M candidates x_{k+1}^(1..M) from p(· | x_k) and keeps
one: the one of highest V(·, t_{k+1}) (`alpha` = 0, greedy), or one drawn with probability
π_m ∝ exp(V(x_{k+1}^(m))/α). As M grows the kept step follows p(· | x_k)·exp(V/α)/Z, which
with the soft value (value.target: soft) is the KL-regularised optimum's step at β = α;
so α is the method's KL weight (greedy has none).

Candidates of one step are independent draws from the same step distribution, so the
denoiser runs once per state (K calls per design, as plain sampling); the value head runs
M times per step (and, when it reads the denoised estimate x̂_0, so does the reference
denoiser).

KL to the reference, as reported (per design, summed over steps; both are upper bounds on
the path KL and so on the KL of the final samples):
- greedy: the best-of-M bound log M − (M − 1)/M per step (Beirami et al. 2024);
- sampled: log M − H(π_k), the KL of the step's selection from the uniform one given its
  candidates. Drawing M candidates and then choosing uniformly is exactly the reference
  step, so by the chain rule and data processing the expectation of Σ_k (log M − H(π_k))
  bounds the path KL from above; the mean over designs estimates that expectation.
With proposal: model (a model other than the reference), the Monte-Carlo estimate of
E[log p_model(x_{k+1} | x_k) − log p_ref(x_{k+1} | x_k)] on the kept steps is added (the chain
rule for KL(q‖p_ref) = KL(q‖p_model) + E_q[log p_model/p_ref]); the sum is then an estimate,
not a bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from vardbio.algorithms.base import AlgorithmContext
from vardbio.algorithms.value_sampling import ValueSampling, ValueSamplingConfig

PROPOSALS = ("reference", "model")


@dataclass
class SVDDConfig(ValueSamplingConfig):
    """SVDD settings (besides value_samples, value and rollout_chunk, see ValueSamplingConfig).

    candidates: M, next states drawn per step; each costs one value-head evaluation.
    alpha: selection temperature in reward units; 0 keeps the candidate of highest value
        (greedy), > 0 draws one with probability ∝ exp(V/alpha) and is the KL weight the run
        is scored at.
    proposal: the chain the candidates come from: 'reference' (the pretrained model) or
        'model' (the model being fine-tuned; the same weights in a campaign, which trains nothing).
    """

    candidates: int = 8
    alpha: float = 0.0
    proposal: str = "reference"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.candidates < 1:
            raise ValueError(f"SVDD needs candidates >= 1, got {self.candidates}")
        if not self.alpha >= 0 or not math.isfinite(self.alpha):
            raise ValueError(f"SVDD needs a finite alpha >= 0 (0: greedy), got {self.alpha}")
        if self.proposal not in PROPOSALS:
            raise ValueError(f"unknown SVDD proposal '{self.proposal}'; expected one of {PROPOSALS}")


class SVDD(ValueSampling):
    name = "svdd"
    config_class = SVDDConfig

    def __init__(self, config: SVDDConfig, ctx: AlgorithmContext):
        super().__init__(config, ctx)
        self.proposal = ctx.reference if config.proposal == "reference" else ctx.model

    @property
    def kl_weight(self) -> float | None:
        return self.config.alpha if self.config.alpha > 0 else None

    @torch.no_grad()
    def sample_chunk(self, b: int, generator: torch.Generator):
        cfg, model, reference = self.config, self.proposal, self.ctx.reference
        m = cfg.candidates
        layout = model.layout(b, generator)
        device = next(model.parameters()).device
        mask = None if layout.mask is None else layout.mask.to(device)
        cand_mask = None if mask is None else mask.repeat_interleave(m, 0)
        x = model.process.prior_sample(layout.shape, layout.mask, generator).to(device)
        kl = torch.zeros(b, dtype=torch.float64, device=device)
        rows = torch.arange(b, device=device)
        for k in range(model.num_steps):
            dist = model.step(x, k, mask)
            if k >= self.ctx.model.steerable_steps:  # a frozen final step is the reference's: no selection
                x = dist.sample(generator)
                continue
            cands = torch.stack([dist.sample(generator) for _ in range(m)], 1)  # (b, M, ...)
            flat = cands.reshape(b * m, *x.shape[1:])
            values = self.value_head(flat, self.time_tensor(k + 1, b * m, flat), cand_mask).reshape(b, m)
            if cfg.alpha == 0:
                choice = values.argmax(1)
                kl += math.log(m) - (m - 1) / m
            else:
                log_pi = torch.log_softmax(values.double() / cfg.alpha, dim=1)
                choice = torch.multinomial(log_pi.exp().cpu().float(), 1, generator=generator).reshape(-1).to(device)
                kl += math.log(m) + (log_pi.exp() * log_pi).sum(1)
            x_next = cands[rows, choice]
            if model is not reference:
                kl += (dist.log_prob(x_next) - reference.step(x, k, mask).log_prob(x_next)).double()
            x = x_next
        return x, mask, kl.float()

    def kl_note(self) -> str:
        m, k = self.config.candidates, self.ctx.model.steerable_steps
        if self.config.alpha == 0:
            note = (f"best-of-M bound per step, K (log M - (M-1)/M) with M = {m}, K = {k}: an upper bound "
                    f"on the path KL")
        else:
            note = (f"sum over the K = {k} steps of log M - H(selection probabilities) with M = {m}: "
                    f"an upper bound on the path KL, estimated on the designs")
        if self.proposal is not self.ctx.reference:
            note += "; plus the Monte-Carlo log-ratio of the proposal model to the reference on the kept steps"
        frozen = self.ctx.model.frozen_final_steps
        if frozen:
            note += f"; the last {frozen} steps are the reference's and select nothing"
        return note

    def inference_cost(self) -> dict[str, Any]:
        m, k, chosen = self.config.candidates, self.ctx.model.num_steps, self.ctx.model.steerable_steps
        extra_reference = chosen if self.proposal is not self.ctx.reference else 0
        return {"denoiser_calls_per_design": k + chosen * m * self.value_calls() + extra_reference,
                "value_calls_per_design": chosen * m, "candidates_per_step": m, "sampling_steps": k,
                "plain_sampling_denoiser_calls": k}
