"""DDPO: policy gradient on the per-step log-probs of the denoising chain (Black et al. 2023).

Each iteration scores a fresh batch of the current model's samples (batch_size oracle
calls), normalises the rewards into advantages, and takes clipped importance-ratio steps
on log p_θ(x_{k+1} | x_k) for the recorded transitions.
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
    Designs whose reward is NaN get advantage 0 and are counted in n_nan.
    """

    batch_size: int = 64
    lr: float = 1e-4
    clip_range: float = 0.2
    inner_epochs: int = 1
    steps_per_update: int = 0
    max_grad_norm: float = 1.0
    adv_clip: float = 5.0

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ValueError("DDPO needs batch_size >= 2 to normalise rewards")
        if self.clip_range <= 0 or self.inner_epochs < 1:
            raise ValueError("clip_range must be > 0 and inner_epochs >= 1")


class DDPO(Algorithm):
    name = "ddpo"
    config_class = DDPOConfig

    def __init__(self, config: DDPOConfig, ctx: AlgorithmContext):
        super().__init__(config, ctx)
        self.optimiser = torch.optim.Adam(ctx.model.denoiser.parameters(), lr=config.lr)

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
        normalised = (rewards - finite.mean()) / max(float(finite.std(ddof=1)), 1e-8)
        adv = torch.as_tensor(np.where(failed, 0.0, normalised), dtype=torch.float32,
                              device=traj.states.device).clamp(-cfg.adv_clip, cfg.adv_clip)
        steps = choose_steps(model.num_steps, cfg.steps_per_update, ctx.generator)
        loss_sum = clipped = 0.0
        for _ in range(cfg.inner_epochs):
            self.optimiser.zero_grad()
            for k in steps:
                logp = model.step(traj.states[k], k, traj.mask).log_prob(traj.states[k + 1])
                ratio = torch.exp(logp - traj.log_probs[k])
                unclipped = -adv * ratio
                clipped_loss = -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
                loss = torch.maximum(unclipped, clipped_loss).mean() / len(steps)
                with ctx.collective.accumulating(model, last=k == steps[-1]):
                    loss.backward()
                loss_sum += float(loss.detach())
                clipped += float(((ratio - 1).abs() > cfg.clip_range).float().mean()) / len(steps)
            torch.nn.utils.clip_grad_norm_(model.denoiser.parameters(), cfg.max_grad_norm)
            self.optimiser.step()
        return {"reward_mean": float(finite.mean()), "n_nan": int(failed.sum()),
                "loss": loss_sum / cfg.inner_epochs, "clip_fraction": clipped / cfg.inner_epochs}

    def state_dict(self) -> dict[str, Any]:
        return {"optimiser": self.optimiser.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimiser.load_state_dict(state["optimiser"])
