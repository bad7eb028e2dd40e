"""VARD: value-based reinforced diffusion.

Phase 1 fits a value head V_φ(x_t, t) on rollouts of the reference model scored by the
oracles. Phase 2 repeats: roll out the current model without gradient; at each chosen step
k take the detached state x_k, draw one reparameterised step x_{k+1} ~ p_θ(· | x_k), and
minimise  -V_φ(x_{k+1}, t_{k+1}) + β · KL(p_θ(· | x_k) || p_ref(· | x_k)).
Gradients pass through one denoising step only; phase 2 calls no oracle unless the value
head is refreshed (every `refresh_every` iterations, on samples of the current model).
The gradient of E[V_φ(x_{k+1})] is pathwise by default (rsample: Gaussian reparameterisation,
straight-through Gumbel-softmax for categorical parts) or, with
`step_gradient: score_function`, the unbiased score-function estimate from `step_samples`
draws of the step with a leave-one-out baseline (value-head calls only, no extra denoiser call).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vardbio.algorithms.base import (
    Algorithm, AlgorithmContext, FinalSamples, affordable_designs, choose_steps, rollout_in_chunks, score_trajectory,
)
from vardbio.model.diffusion import DiffusionModel, path_log_ratio
from vardbio.processes.gaussian import GaussianProcess
from vardbio.processes.steps import StepDistribution
from vardbio.value.fitting import ValueFitConfig, ValueFitReport, fit_value
from vardbio.value.heads import ValueHead
from vardbio.value.replay import ReplayBuffer

VALUE_DATA = ("rollouts", "replay")
STEP_GRADIENTS = ("reparameterised", "score_function")


@dataclass
class VARDConfig:
    """VARD settings.

    beta: KL weight β (reward units per nat); smaller moves further from the reference.
    batch_size: chains rolled out per iteration.
    steps_per_update: denoising steps trained per chain and iteration (sampled without
        replacement); 0 trains on every step.
    lr, max_grad_norm: Adam learning rate and gradient-norm clip for the denoiser.
    value_samples: reference rollouts scored by the oracles to fit the value head (capped
        by the campaign's oracle budget).
    value: how the value head is fitted (its `target` picks the plain mean or soft value).
    refresh_every: refit the value head every M iterations on current-model samples
        (0 = never); each refresh scores `refresh_samples` new designs.
    rollout_chunk: chains per rollout call when collecting value data.
    value_data: 'rollouts' fits the head on the states of the freshly scored rollouts;
        'replay' keeps every design scored so far (the first fit and each refresh add
        theirs) and fits on all of them, forward-noised to `replay_levels` noise levels
        (vardbio.value.replay). With refresh_every > 0 this is the budgeted loop sample →
        score → refit → fine-tune.
    replay_capacity: most recent designs the replay keeps (0 = all).
    replay_weight_power: the replay's importance weights toward the reference are raised to
        this power (1: exact, the reference's value; 0: unweighted; see ReplayBuffer).
    step_gradient: how the gradient of E[V_φ(x_{k+1})] over the step's draw is estimated:
        'reparameterised' (through rsample; for categorical parts a straight-through relaxed
        one-hot, biased) or 'score_function' (unbiased: Σ_s (V_s - mean of the others' V)
        ∇log p_θ(x_s | x_k) / S over `step_samples` = S draws).
    step_samples: draws per trained step for 'score_function' (>= 2).
    keep_best: end with the weights whose freshly scored designs had the highest estimated
        objective, mean reward − β · mean path KL: the reference's (its value-fit designs,
        KL 0) or the model's at one of the refreshes (needs refresh_every > 0). Updates
        after the last refresh are never scored, so they are kept only if it scored best.
        The final evaluation samples the kept weights afresh.
    """

    beta: float = 0.1
    batch_size: int = 64
    steps_per_update: int = 0
    lr: float = 1e-4
    max_grad_norm: float = 1.0
    value_samples: int = 512
    value: ValueFitConfig = field(default_factory=ValueFitConfig)
    refresh_every: int = 0
    refresh_samples: int = 256
    rollout_chunk: int = 256
    value_data: str = "rollouts"
    replay_levels: int = 16
    replay_capacity: int = 0
    replay_weight_power: float = 1.0
    keep_best: bool = False
    step_gradient: str = "reparameterised"
    step_samples: int = 8

    def __post_init__(self) -> None:
        if self.step_gradient not in STEP_GRADIENTS:
            raise ValueError(f"unknown step_gradient '{self.step_gradient}'; expected one of {STEP_GRADIENTS}")
        if self.step_gradient == "score_function" and self.step_samples < 2:
            raise ValueError(f"the score-function gradient needs step_samples >= 2 (a leave-one-out "
                             f"baseline), got {self.step_samples}")
        if self.value_data not in VALUE_DATA:
            raise ValueError(f"unknown value_data '{self.value_data}'; expected one of {VALUE_DATA}")
        if self.replay_levels < 2 or self.replay_capacity < 0:
            raise ValueError("replay_levels must be >= 2 and replay_capacity >= 0")
        if not 0.0 <= self.replay_weight_power <= 1.0:
            raise ValueError(f"replay_weight_power must be in [0, 1], got {self.replay_weight_power}")
        if self.beta <= 0:
            raise ValueError(f"VARD needs beta > 0 (the KL weight), got {self.beta}")
        if self.batch_size < 1 or self.value_samples < 2:
            raise ValueError("batch_size must be >= 1 and value_samples >= 2")
        if self.steps_per_update < 0 or self.refresh_every < 0:
            raise ValueError("steps_per_update and refresh_every must be >= 0")
        if not (self.lr > 0 and self.max_grad_norm > 0):
            raise ValueError(f"lr and max_grad_norm must be > 0, got lr={self.lr}, max_grad_norm={self.max_grad_norm}")
        if self.keep_best and not self.refresh_every:
            raise ValueError("keep_best compares the refreshes' scored designs: set refresh_every > 0")
        if self.rollout_chunk < 1 or self.refresh_samples < (2 if self.refresh_every else 0):
            raise ValueError(f"rollout_chunk must be >= 1 and refresh_samples >= 2 when refreshing, got "
                             f"rollout_chunk={self.rollout_chunk}, refresh_samples={self.refresh_samples}")


class VARD(Algorithm):
    name = "vard"
    config_class = VARDConfig

    def __init__(self, config: VARDConfig, ctx: AlgorithmContext):
        super().__init__(config, ctx)
        process = ctx.model.process
        if isinstance(process, GaussianProcess) and process.config.eta == 0:
            raise ValueError(
                "VARD needs a stochastic sampler: eta = 0 (deterministic DDIM) has no step "
                "density, so the KL to the reference is undefined; set eta > 0"
            )
        self.value_head = ctx.make_value_head()
        self.value_head.requires_grad_(False)
        # the plain denoiser: a multi-process run swaps a wrapper sharing its parameters into
        # ctx.model while it trains; checkpoints use the plain module's state_dict keys
        self.denoiser = ctx.model.denoiser
        self.optimiser = torch.optim.Adam(self.denoiser.parameters(), lr=config.lr)
        self.times = [process.time(k) for k in range(process.num_steps + 1)]
        self.replay = ReplayBuffer(config.replay_capacity, config.replay_weight_power)
        # keep_best: the best estimated objective so far, the update count of its weights
        # (0 = the reference's) and a CPU copy of them
        self.best: dict[str, Any] | None = None

    @property
    def kl_weight(self) -> float:
        return self.config.beta

    def min_designs(self) -> int:
        return 2  # a value head needs two scored designs

    def setup(self) -> dict[str, Any]:
        n = affordable_designs(self.ctx.reward, self.config.value_samples)
        report = self._fit_value(self.ctx.reference, n, updates=0)
        return {"value_fit": report.as_dict()}

    def _fit_value(self, sampler: DiffusionModel, n: int, updates: int) -> ValueFitReport:
        """Score n rollouts of `sampler` (the model after `updates` updates) and fit the value
        head on them; with keep_best, keep the weights if their designs scored best so far."""
        cfg = self.config
        replay = self.replay if cfg.value_data == "replay" else None
        report = fit_value_on_rollouts(self.ctx, self.value_head, sampler, n, cfg.value, cfg.beta,
                                       cfg.rollout_chunk, replay, cfg.replay_levels)
        self.last_fit = report
        if cfg.keep_best:
            objective = report.designs_reward_mean - cfg.beta * report.designs_path_kl
            if self.best is None or objective > self.best["objective"]:
                weights = {k: v.detach().cpu().clone() for k, v in self.denoiser.state_dict().items()}
                self.best = {"objective": objective, "updates": updates, "weights": weights}
        return report

    def iteration(self, index: int) -> dict[str, float]:
        cfg, ctx = self.config, self.ctx
        metrics: dict[str, float] = {}
        if cfg.refresh_every and index > 0 and index % cfg.refresh_every == 0:
            n = affordable_designs(ctx.reward, cfg.refresh_samples)
            if n >= 2:
                fit = self._fit_value(ctx.model, n, updates=index)
                metrics.update({"value_r2": fit.r2, "refresh_reward_mean": fit.designs_reward_mean,
                                "refresh_path_kl": fit.designs_path_kl})
        model = ctx.model
        traj = model.rollout(ctx.collective.shard(cfg.batch_size), ctx.generator)
        steps = choose_steps(model.steerable_steps, cfg.steps_per_update, ctx.generator)
        self.optimiser.zero_grad()
        value_sum = kl_sum = 0.0
        for k in steps:
            x_k = traj.states[k]
            dist = model.step(x_k, k, traj.mask)
            with torch.no_grad():
                ref = ctx.reference.step(x_k, k, traj.mask)
            t_next = torch.full((x_k.shape[0],), self.times[k + 1], dtype=x_k.dtype, device=x_k.device)
            if cfg.step_gradient == "score_function":
                value, surrogate = self._score_function_value(dist, t_next, traj.mask)
            else:
                value = surrogate = self.value_head(dist.rsample(ctx.generator), t_next, traj.mask)
            kl = dist.kl(ref)
            loss = (-surrogate + cfg.beta * kl).mean() / len(steps)
            with ctx.collective.accumulating(model, last=k == steps[-1]):
                loss.backward()
            value_sum += float(value.mean().detach())
            kl_sum += float(kl.mean().detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(model.denoiser.parameters(), cfg.max_grad_norm)
        self.optimiser.step()
        metrics.update({
            "loss": (-value_sum + cfg.beta * kl_sum) / len(steps),
            "value_mean": value_sum / len(steps),
            "kl_step_mean": kl_sum / len(steps),
            "grad_norm": float(grad_norm),
        })
        return metrics

    def _score_function_value(self, dist: StepDistribution, t_next: torch.Tensor,
                              mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, surrogate), each (B,): the mean value of S draws of the step and a
        surrogate whose gradient is the leave-one-out score-function estimate of ∇E[V]."""
        s = self.config.step_samples
        draws = [dist.sample(self.ctx.generator) for _ in range(s)]
        with torch.no_grad():
            values = self.value_head(torch.cat(draws), t_next.repeat(s),
                                     None if mask is None else mask.repeat(s, *([1] * (mask.dim() - 1))))
            values = values.reshape(s, -1)  # (S, B)
            advantages = values - (values.sum(0, keepdim=True) - values) / (s - 1)
        log_probs = torch.stack([dist.log_prob(x) for x in draws])  # (S, B)
        return values.mean(0), (advantages * log_probs).mean(0)

    def final_samples(self, n: int, generator: torch.Generator) -> FinalSamples:
        """The final model's samples; with keep_best the kept weights are loaded first (so
        model_final.pt holds them too) and the summary says which they were."""
        if self.best is None:
            return super().final_samples(n, generator)
        self.denoiser.load_state_dict(self.best["weights"])
        final = super().final_samples(n, generator)
        final.summary_entries["kept_weights"] = {
            "updates": self.best["updates"], "estimated_objective": self.best["objective"],
            "note": "the weights whose freshly scored designs had the highest mean reward - beta * "
                    "mean path KL (updates = 0: the reference's)"}
        return final

    def state_dict(self) -> dict[str, Any]:
        return {"value_head": self.value_head.state_dict(), "optimiser": self.optimiser.state_dict(),
                "replay": self.replay.state_dict(), "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value_head.load_state_dict(state["value_head"])
        self.optimiser.load_state_dict(state["optimiser"])
        if "replay" in state:
            self.replay.load_state_dict(state["replay"])
        self.best = state.get("best")


def fit_value_on_rollouts(ctx: AlgorithmContext, head: ValueHead, sampler: DiffusionModel, n: int,
                          config: ValueFitConfig, beta: float | None, rollout_chunk: int,
                          replay: ReplayBuffer | None = None, replay_levels: int = 16) -> ValueFitReport:
    """VARD's phase 1, shared by every method with a value head (SVDD, guidance): roll out n
    chains of `sampler` (this process its share, `rollout_chunk` at a time), score their final
    designs through ctx.reward (n oracle calls per reward term), and fit `head` on every state
    against its chain's reward (NaN rewards dropped and counted; fewer than 2 finite ones is
    an error naming the first failure). beta: the KL weight the soft target needs.

    replay: fit instead on every design the buffer holds, these added, forward-noised to
    `replay_levels` noise levels; designs of a sampler other than the reference enter it
    with importance weights toward the reference. The head is left frozen, and the same on
    every process.
    """
    collective = ctx.collective
    fine_tuned = sampler is not ctx.reference
    traj = rollout_in_chunks(sampler, collective.shard(n), rollout_chunk, ctx.generator, keep_log_probs=fine_tuned)
    # log p_ref/p_θ of each path: its negative mean estimates the sampler's path KL, and
    # designs of the fine-tuned model enter the replay with importance weights toward the reference
    log_weights = (path_log_ratio(sampler, ctx.reference, traj).numpy()
                   if fine_tuned else np.zeros(traj.batch_size))
    scored = score_trajectory(sampler, traj, ctx.reward)
    traj, rewards = collective.gather_scored(traj, scored.values)
    log_weights = collective.all_values(log_weights)
    n_valid = int((~np.isnan(rewards)).sum())
    if n_valid < 2:
        first = next((why for why in scored.reasons if why), "no reason recorded")
        raise ValueError(
            f"cannot fit the value head: {n_valid} of {n} designs got a "
            f"finite reward (first failure: {first})"
        )
    # what the freshly scored designs measured (the replay below may hold more)
    reward_mean = float(np.nanmean(rewards))
    path_kl = float(-log_weights.mean()) if fine_tuned else 0.0
    times = [sampler.process.time(k) for k in range(sampler.process.num_steps + 1)]
    weights = None
    if replay is not None:
        replay.add(traj.final, traj.mask, rewards, log_weights)
        traj, times = replay.noised(sampler.process, replay_levels, ctx.generator)
        rewards, weights = replay.rewards, replay.weights()
    head.requires_grad_(True)
    report = fit_value(head, traj, rewards, times, config, beta, ctx.generator, weights)
    head.requires_grad_(False)
    collective.broadcast_module(head)
    return dataclasses.replace(report, designs_reward_mean=reward_mean, designs_path_kl=path_kl)
