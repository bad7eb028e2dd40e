"""Noise schedules: the cumulative signal fraction ᾱ_t for t = 0 .. T-1."""
from __future__ import annotations

import math

import torch

SCHEDULES = ("linear", "cosine")


def alphas_cumprod(schedule: str, num_train_steps: int) -> torch.Tensor:
    """ᾱ_t, shape (T,), float64, strictly decreasing from near 1 toward 0.

    linear: β_t evenly spaced from 1e-4 to 0.02, rescaled so that any T spans the same
            total noise as T = 1000 (Ho et al. 2020).
    cosine: ᾱ_t = f(t+1) / f(0) with f(u) = cos²(((u/T) + s) / (1 + s) · π/2), s = 0.008,
            betas clipped at 0.999 (Nichol & Dhariwal 2021).
    """
    if num_train_steps < 2:
        raise ValueError(f"num_train_steps must be at least 2, got {num_train_steps}")
    T = num_train_steps
    if schedule == "linear":
        scale = 1000.0 / T
        betas = torch.linspace(scale * 1e-4, min(scale * 0.02, 0.999), T, dtype=torch.float64)
        return torch.cumprod(1.0 - betas, dim=0)
    if schedule == "cosine":
        s = 0.008
        u = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        return torch.cumprod(1.0 - betas, dim=0)
    raise ValueError(f"unknown noise schedule '{schedule}'; expected one of {SCHEDULES}")


def sampling_times(num_train_steps: int, sampling_steps: int) -> list[int]:
    """Training-time indices visited by a sampler with `sampling_steps` steps, descending
    from T-1 to 0 (length sampling_steps + 1: the prior state, then one per step)."""
    if not 1 <= sampling_steps < num_train_steps:
        raise ValueError(
            f"sampling_steps must be in [1, {num_train_steps - 1}] for {num_train_steps} "
            f"training steps, got {sampling_steps}"
        )
    grid = torch.linspace(num_train_steps - 1, 0, sampling_steps + 1).round().long().tolist()
    return grid
