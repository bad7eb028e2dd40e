"""DDPO: policy gradient on the per-step log-probs of the denoising chain (Black et al. 2023).

Each iteration scores a fresh batch of the current model's samples (batch_size oracle
calls), normalises the rewards into advantages, and takes clipped importance-ratio steps
on log p_θ(x_{k+1} | x_k) for the recorded transitions.

With kl_weight β > 0 it is KL-regularised as in DPOK (Fan et al. 2023): each trained
transition also pays β · KL(p_θ(· | x_k) ‖ p_ref(· | x_k)) (closed form, on the recorded
state x_k), divided by the batch's reward standard deviation as the advantages are, so the
update follows the policy gradient of E[r] − β · (path KL) in reward units, the objective
VARD's beta weighs. Like DPOK's, the penalty's gradient takes each step's KL at the
recorded states only (not its effect on later states). kl_weight = 0 is plain DDPO.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vardbio.algorithms.base import (
    Algorithm, AlgorithmContext, affordable_designs, choose_steps, score_trajectory,
)


@dataclass
class DDPOConfig:
    """DDPO settings.

    batch_size: samples scored per iteration. lr, max_grad_norm: Adam and gradient clip.
    clip_range: PPO ratio clip ε. inner_epochs: passes over each batch.
    steps_per_update: transitions trained per chain (sampled); 0 = all.
    adv_clip: advantages are clipped to [-adv_clip, adv_clip] after normalisation.
    kl_weight: β, the weight of the per-step KL to the reference in reward units per nat
        (DPOK); 0 = plain DDPO.
    Designs whose reward is NaN get advantage 0 and are counted in n_nan.
    """

    batch_size: int = 64
    lr: float = 1e-4
    clip_range: float = 0.2
    inner_epochs: int = 1
    steps_per_update: int = 0
    max_grad_norm: float = 1.0
    adv_clip: float = 5.0
    kl_weight: float = 0.0

    def __post_init__(self) -> None:
        if not self.kl_weight >= 0:
            raise ValueError(f"DDPO needs kl_weight >= 0 (0: no KL penalty), got {self.kl_weight}")
        if self.batch_size < 2:
            raise ValueError("DDPO needs batch_size >= 2 to normalise rewards")
        if self.clip_range <= 0 or self.inner_epochs < 1:
            raise ValueError("clip_range must be > 0 and inner_epochs >= 1")
        if not (self.lr > 0 and self.max_grad_norm > 0):
            raise ValueError(f"lr and max_grad_norm must be > 0, got lr={self.lr}, max_grad_norm={self.max_grad_norm}")


class DDPO(Algorithm):
    name = "ddpo"
    config_class = DDPOConfig

    def __init__(self, config: DDPOConfig, ctx: AlgorithmContext):
        super().__init__(config, ctx)
        self.optimiser = torch.optim.Adam(ctx.model.denoiser.parameters(), lr=config.lr)

    @property
    def kl_weight(self) -> float | None:
        return self.config.kl_weight or None

    def min_designs(self) -> int:
        return self.config.batch_size  # one scored batch

    def finished(self) -> bool:
        return affordable_designs(self.ctx.reward, self.config.batch_size) < self.config.batch_size

    def iteration(self, index: int) -> dict[str, float]:
        cfg, ctx = self.config, self.ctx
        model = ctx.model
        traj = model.rollout(ctx.collective.shard(cfg.batch_size), ctx.generator, keep_log_probs=True)
        rewards = score_trajectory(model, traj, ctx.reward).values
        failed = np.isnan(rewards)
        everyone = ctx.collective.all_values(rewards)  # the whole batch, across processes
        finite = everyone[~np.isnan(everyone)]
        if len(finite) < 2:
            return {"reward_mean": float("nan"), "n_nan": int(failed.sum()), "loss": float("nan")}
        # normalised over the whole batch; a design that failed gets advantage 0 (no update
        # from it), so every process keeps its chains and takes part in each backward pass
        scale = max(float(finite.std(ddof=1)), 1e-8)
        normalised = (rewards - finite.mean()) / scale
        adv = torch.as_tensor(np.where(failed, 0.0, normalised), dtype=torch.float32,
                              device=traj.states.device).clamp(-cfg.adv_clip, cfg.adv_clip)
        steps = choose_steps(model.steerable_steps, cfg.steps_per_update, ctx.generator)
        loss_sum = clipped = kl_sum = 0.0
        for _ in range(cfg.inner_epochs):
            self.optimiser.zero_grad()
            for k in steps:
                dist = model.step(traj.states[k], k, traj.mask)
                logp = dist.log_prob(traj.states[k + 1])
                ratio = torch.exp(logp - traj.log_probs[k])
                unclipped = -adv * ratio
                clipped_loss = -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
                loss = torch.maximum(unclipped, clipped_loss).mean() / len(steps)
                if cfg.kl_weight > 0:
                    with torch.no_grad():
                        ref = ctx.reference.step(traj.states[k], k, traj.mask)
                    kl = dist.kl(ref).mean()
                    loss = loss + cfg.kl_weight / scale * kl / len(steps)
                    kl_sum += float(kl.detach()) / len(steps)
                with ctx.collective.accumulating(model, last=k == steps[-1]):
                    loss.backward()
                loss_sum += float(loss.detach())
                clipped += float(((ratio - 1).abs() > cfg.clip_range).float().mean()) / len(steps)
            torch.nn.utils.clip_grad_norm_(model.denoiser.parameters(), cfg.max_grad_norm)
            self.optimiser.step()
        metrics = {"reward_mean": float(finite.mean()), "n_nan": int(failed.sum()),
                   "loss": loss_sum / cfg.inner_epochs, "clip_fraction": clipped / cfg.inner_epochs}
        if cfg.kl_weight > 0:
            metrics["kl_step_mean"] = kl_sum / cfg.inner_epochs
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"optimiser": self.optimiser.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimiser.load_state_dict(state["optimiser"])
