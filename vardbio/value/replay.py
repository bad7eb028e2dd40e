"""Value data from every design scored so far, by forward noising (a replay buffer).

For a reference model that matches its data, a scored design x_0 ~ p_ref and a state
x_t ~ q(x_t | x_0) of the forward process have the same joint law as a state of a reference
rollout and its final sample, so any scored design becomes value data at every noise level.
For designs of a fine-tuned model this is an approximation (they follow the forward process,
not that model's reverse law); the fitted head's held-out R² per noise bucket measures it.
"""
from __future__ import annotations

import numpy as np
import torch

from vardbio.model.diffusion import Trajectory
from vardbio.processes.base import DiffusionProcess


class ReplayBuffer:
    """Final states (N, ...) of scored designs, their masks, (N,) rewards (NaN kept: the
    value fit drops and counts them) and (N,) log importance weights log p_ref(x_0)/p(x_0)
    toward the reference (0 for the reference's own samples; see path_log_ratio): a value
    fitted on designs of a fine-tuned model, unweighted, learns E[r | x_t] of the mixture of
    models that made them, whose revealed parts also say which model made a design; the
    weights make it the reference's E[r | x_t] again. `capacity` keeps the most recent
    designs (0 = all). `weight_power` tempers the weights to w^power (1: exact importance
    weights; 0: unweighted, the mixture's E[r | x_t]; between: fewer designs dominate when
    the model has moved far and the exact weights' effective size collapses)."""

    def __init__(self, capacity: int = 0, weight_power: float = 1.0):
        if capacity < 0:
            raise ValueError(f"replay capacity must be >= 0, got {capacity}")
        if not 0.0 <= weight_power <= 1.0:
            raise ValueError(f"replay weight_power must be in [0, 1], got {weight_power}")
        self.capacity = capacity
        self.weight_power = float(weight_power)
        self.states: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self.rewards = np.zeros(0)
        self.log_weights = np.zeros(0)

    def __len__(self) -> int:
        return len(self.rewards)

    def add(self, states: torch.Tensor, mask: torch.Tensor | None, rewards: np.ndarray,
            log_weights: np.ndarray | None = None) -> None:
        """Append designs: states (B, ...), mask (B, N) or None, rewards (B,), log importance
        weights (B,) (None: the reference's own samples, weight 1)."""
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
        log_weights = np.zeros(len(rewards)) if log_weights is None else np.asarray(log_weights, dtype=np.float64).reshape(-1)
        if len(log_weights) != len(rewards) or not np.isfinite(log_weights).all():
            raise ValueError(f"need {len(rewards)} finite log weights, got {log_weights}")
        if len(rewards) != states.shape[0]:
            raise ValueError(f"{len(rewards)} rewards for {states.shape[0]} designs")
        states = states.detach().cpu()
        if self.states is not None and self.states.shape[1:] != states.shape[1:]:
            raise ValueError(f"designs of shape {tuple(states.shape[1:])} cannot join a buffer of "
                             f"{tuple(self.states.shape[1:])}")
        if (self.mask is None) != (mask is None) and self.states is not None:
            raise ValueError("designs with and without masks cannot share a replay buffer")
        self.states = states if self.states is None else torch.cat([self.states, states])
        if mask is not None:
            mask = mask.detach().cpu()
            self.mask = mask if self.mask is None else torch.cat([self.mask, mask])
        self.rewards = np.concatenate([self.rewards, rewards])
        self.log_weights = np.concatenate([self.log_weights, log_weights])
        if self.capacity and len(self.rewards) > self.capacity:
            keep = slice(len(self.rewards) - self.capacity, None)
            self.states, self.rewards = self.states[keep], self.rewards[keep]
            self.log_weights = self.log_weights[keep]
            self.mask = None if self.mask is None else self.mask[keep]

    def noised(self, process: DiffusionProcess, levels: int,
               generator: torch.Generator | None = None) -> tuple[Trajectory, list[float]]:
        """Every design forward-noised to `levels` sampler states spread evenly over
        0..num_steps (the last is the design itself): (a Trajectory whose states are
        (levels, N, ...), the levels' noise times), ready for fit_value."""
        if self.states is None:
            raise ValueError("the replay buffer is empty")
        if levels < 2:
            raise ValueError(f"replay needs at least 2 noise levels, got {levels}")
        ks = sorted(set(np.linspace(0, process.num_steps, min(levels, process.num_steps + 1)).round().astype(int)))
        states = torch.stack([process.forward_sample(self.states, k, self.mask, generator) for k in ks])
        return Trajectory(states, self.mask), [process.time(k) for k in ks]

    def weights(self) -> np.ndarray:
        """(N,) importance weights raised to `weight_power`, self-normalised to mean 1."""
        w = np.exp(self.weight_power * (self.log_weights - self.log_weights.max()))
        return w / w.mean()

    def effective_size(self) -> float:
        """Kish's effective sample size of the weights, (Σw)² / Σw²."""
        w = self.weights()
        return float(w.sum() ** 2 / (w ** 2).sum())

    def state_dict(self) -> dict:
        return {"states": self.states, "mask": self.mask, "rewards": self.rewards.tolist(),
                "log_weights": self.log_weights.tolist(), "capacity": self.capacity}

    def load_state_dict(self, state: dict) -> None:
        self.states, self.mask = state["states"], state["mask"]
        self.rewards = np.asarray(state["rewards"], dtype=np.float64)
        self.log_weights = np.asarray(state["log_weights"], dtype=np.float64)
        self.capacity = state["capacity"]
