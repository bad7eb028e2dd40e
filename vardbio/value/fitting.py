"""Fitting a value head on rollouts: (x_t, t) -> the reward its trajectory earned."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from vardbio.model.diffusion import Trajectory
from vardbio.value.heads import ValueHead

TARGETS = ("mean", "soft")


@dataclass
class ValueFitConfig:
    """How a value head is fitted.

    target: 'mean' regresses E[r | x_t] (squared error); 'soft' fits the soft value
            β·log E[exp(r/β) | x_t] with the LINEX loss, whose minimiser is exactly that.
    epochs, batch_size, lr, weight_decay: the optimiser run over all (state, reward) pairs.
    holdout_fraction: trajectories kept out of fitting; they measure R² and pick the epoch
        (the weights of the epoch with the lowest held-out loss are kept).
    patience: stop after this many epochs without a better held-out loss (0 = never stop early).
    time_buckets: number of equal-width noise-level buckets R² is reported in.
    """

    target: str = "mean"
    epochs: int = 100
    patience: int = 5
    batch_size: int = 512
    lr: float = 2e-3
    weight_decay: float = 0.0
    holdout_fraction: float = 0.15
    time_buckets: int = 5

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"unknown value target '{self.target}'; expected one of {TARGETS}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.epochs < 1 or self.batch_size < 1 or self.time_buckets < 1 or self.patience < 0:
            raise ValueError("epochs, batch_size and time_buckets must be positive, patience >= 0")


@dataclass
class ValueFitReport:
    """What fitting measured. r2 is on held-out trajectories (NaN when none are held out).
    designs_reward_mean and designs_path_kl: the mean finite reward and the mean path KL to
    the reference of the designs freshly scored for this fit (NaN when not measured)."""

    n_trajectories: int
    n_dropped_nan: int
    final_loss: float
    best_epoch: int
    r2: float
    r2_per_bucket: list[float] = field(default_factory=list)
    bucket_edges: list[float] = field(default_factory=list)
    designs_reward_mean: float = float("nan")
    designs_path_kl: float = float("nan")

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The mean of values (M,), weighted by (M,) non-negative weights when given."""
    return values.mean() if weights is None else (values * weights).sum() / weights.sum()


def linex_loss(pred: torch.Tensor, target: torch.Tensor, beta: float, cap: float = 8.0,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """β²·(e^z - z - 1) with z = (target - pred)/β, linear in z beyond `cap` for stability.

    Its minimiser over a constant pred is β·log E[exp(target/β)]; near z = 0 it equals half
    the squared error, so the scale matches the plain-mean loss. weights: (M,) or None.
    """
    z = (target - pred) / beta
    zc = z.clamp(max=cap)
    body = torch.exp(zc) - zc - 1
    tail = math.exp(cap) * (z - zc) - (z - zc)  # first-order continuation past the cap
    return weighted_mean(beta**2 * (body + tail), weights)


def fit_value(head: ValueHead, traj: Trajectory, rewards: np.ndarray, times: list[float],
              config: ValueFitConfig, beta: float | None = None,
              generator: torch.Generator | None = None, weights: np.ndarray | None = None) -> ValueFitReport:
    """Fit `head` on every state of `traj` against its chain's reward.

    traj.states: (K+1, B, ...); rewards: (B,) with NaN for failed designs (dropped and
    counted, never replaced); times: the K+1 noise levels of the states; beta: the KL weight
    (needed for the soft target); weights: (B,) non-negative importance weights of the
    chains (None: all 1) that weight the loss, the standardisation and the held-out R².
    """
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if len(rewards) != traj.batch_size:
        raise ValueError(f"{len(rewards)} rewards for {traj.batch_size} trajectories")
    if len(times) != traj.states.shape[0]:
        raise ValueError(f"{len(times)} times for {traj.states.shape[0]} states per trajectory")
    if config.target == "soft" and (beta is None or beta <= 0):
        raise ValueError("the soft value target needs beta > 0")
    finite = ~np.isnan(rewards)
    n_dropped = int((~finite).sum())
    if finite.sum() < 2:
        raise ValueError(f"cannot fit a value head: only {int(finite.sum())} of {len(rewards)} rewards are finite")
    keep = torch.as_tensor(np.flatnonzero(finite))
    traj = traj.select(keep)
    r = torch.as_tensor(rewards[finite], dtype=torch.float32)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        if len(weights) != len(rewards) or not np.isfinite(weights).all() or (weights < 0).any():
            raise ValueError(f"need {len(rewards)} finite non-negative chain weights")
    w = None if weights is None else torch.as_tensor(weights[finite], dtype=torch.float32)

    n = len(r)
    order = torch.randperm(n, generator=generator)
    n_hold = int(round(config.holdout_fraction * n)) if n >= 10 else 0
    hold, train = order[:n_hold], order[n_hold:]

    w_train = None if w is None else w[train]
    mean = weighted_mean(r[train], w_train)
    scale = weighted_mean((r[train] - mean).pow(2), w_train).sqrt().clamp(min=1e-8) if w is not None \
        else r[train].std().clamp(min=1e-8)
    head.reward_mean.fill_(float(mean))
    head.reward_scale.fill_(float(scale))
    t_all = torch.as_tensor(times, dtype=torch.float32)

    standardised = (r - mean) / scale
    x_train, t_train, m_train, y_train, w_pairs = _mapped_pairs(head, traj, train, t_all, standardised, w)
    held_out = _mapped_pairs(head, traj, hold, t_all, standardised, w) if len(hold) else None
    soft_beta = None if config.target == "mean" else beta / float(scale)

    def objective(pred: torch.Tensor, y: torch.Tensor, pair_weights: torch.Tensor | None) -> torch.Tensor:
        if soft_beta is None:
            return 0.5 * weighted_mean((pred - y).pow(2), pair_weights)
        return linex_loss(pred, y, soft_beta, weights=pair_weights)

    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best = (float("inf"), 0, copy.deepcopy(head.state_dict()))
    final_loss = float("nan")
    for epoch in range(1, config.epochs + 1):
        head.train()
        perm = torch.randperm(len(y_train), generator=generator)
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start:start + config.batch_size]
            pred = head.standardised(x_train[idx], t_train[idx], None if m_train is None else m_train[idx],
                                     mapped=True)
            loss = objective(pred, y_train[idx], None if w_pairs is None else w_pairs[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            final_loss = float(loss.detach())
        if held_out is None:
            continue
        head.eval()
        with torch.no_grad():
            x_h, t_h, m_h, y_h, w_h = held_out
            held_loss = float(objective(head.standardised(x_h, t_h, m_h, mapped=True), y_h, w_h))
        if held_loss < best[0]:
            best = (held_loss, epoch, copy.deepcopy(head.state_dict()))
        elif config.patience and epoch - best[1] >= config.patience:
            break
    if held_out is not None:
        head.load_state_dict(best[2])
    head.eval()
    best_epoch = best[1] if held_out is not None else config.epochs
    r2, per_bucket, edges = _heldout_r2(head, held_out if len(hold) >= 2 else None, config.time_buckets)
    return ValueFitReport(n, n_dropped, final_loss, best_epoch, r2, per_bucket, edges)


def _mapped_pairs(head: ValueHead, traj: Trajectory, chains: torch.Tensor, times: torch.Tensor,
                  targets: torch.Tensor, weights: torch.Tensor | None):
    """_pairs with the states passed through the head's input map once, and each pair's
    chain weight (M,) (None when unweighted)."""
    x, t, m, y = _pairs(traj, chains, times, targets)
    w = None if weights is None else weights[chains].repeat(traj.states.shape[0])
    return head.map_inputs(x, t, m), t, m, y, w


def _pairs(traj: Trajectory, chains: torch.Tensor, times: torch.Tensor, targets: torch.Tensor):
    """Flatten states of the chosen chains to (M, ...) inputs with times, masks and targets."""
    states = traj.states[:, chains]  # (K+1, b, ...)
    steps, b = states.shape[:2]
    x = states.reshape(steps * b, *states.shape[2:])
    t = times.repeat_interleave(b)
    m = None if traj.mask is None else traj.mask[chains].repeat(steps, *([1] * (traj.mask.dim() - 1)))
    y = targets[chains].repeat(steps)
    return x, t, m, y


@torch.no_grad()
def _heldout_r2(head, held_out, buckets):
    """R² on the held-out pairs (already through the input map), overall and per noise
    bucket; standardised predictions and targets give the same R² as reward units."""
    edges = np.linspace(0.0, 1.0, buckets + 1).tolist()
    if held_out is None:
        return float("nan"), [float("nan")] * buckets, edges
    x, t, m, y, w = held_out
    pred = head.standardised(x, t, m, mapped=True)
    w = torch.ones_like(y) if w is None else w
    per_bucket = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (t >= lo) & ((t < hi) if hi < 1.0 else (t <= hi))
        per_bucket.append(_r2(pred[sel], y[sel], w[sel]) if sel.sum() > 1 else float("nan"))
    return _r2(pred, y, w), per_bucket, edges


def _r2(pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    """Weighted coefficient of determination of (M,) predictions."""
    sst = (w * (y - weighted_mean(y, w)).pow(2)).sum()
    if sst <= 0:
        return float("nan")
    return float(1 - (w * (pred - y).pow(2)).sum() / sst)
