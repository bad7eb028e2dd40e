"""Pieces shared by the plugins' pretraining loops: a wall-clock learning-rate schedule, a
weight EMA, and warm starts from an earlier checkpoint."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from vardbio.model.checkpoint import apply_weights, read_checkpoint, save_model
from vardbio.model.diffusion import DiffusionModel


class WallClockSchedule:
    """Learning-rate factor for training under a time budget: linear warm-up over
    `warmup_steps`, then a cosine from 1 down to `final_fraction` as the elapsed time goes
    from 0 to `budget` seconds (the number of steps a time budget buys is not known in
    advance). Pass steps as both `budget` and `elapsed` for a step-count cosine."""

    def __init__(self, budget: float, warmup_steps: int = 0, final_fraction: float = 1.0):
        if budget <= 0:
            raise ValueError(f"training budget must be positive, got {budget}")
        if not 0.0 <= final_fraction <= 1.0:
            raise ValueError(f"final learning-rate fraction must be in [0, 1], got {final_fraction}")
        self.budget, self.warmup, self.final = budget, max(0, int(warmup_steps)), final_fraction

    def factor(self, step: int, elapsed: float) -> float:
        """The factor at optimiser step `step` (0-based) after `elapsed` of the budget."""
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        progress = min(1.0, max(0.0, elapsed / self.budget))
        return warm * (self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def apply(self, optimiser: torch.optim.Optimizer, base_lr: float, step: int, elapsed: float) -> float:
        """Set every parameter group's lr for this step; returns it."""
        lr = base_lr * self.factor(step, elapsed)
        for group in optimiser.param_groups:
            group["lr"] = lr
        return lr


def optimiser_step(model: DiffusionModel, ema: DiffusionModel, optimiser: torch.optim.Optimizer,
                   loss: torch.Tensor, ema_decay: float, step: int, max_grad_norm: float = 1.0) -> float:
    """Backpropagate `loss`, clip the denoiser's gradient norm, step, then move the EMA copy's
    denoiser towards it (see ema_update). Returns the loss as a float."""
    optimiser.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.denoiser.parameters(), max_grad_norm)
    optimiser.step()
    ema_update(ema.denoiser, model.denoiser, ema_decay, step)
    return float(loss.detach())


class PeriodicCheckpoint:
    """Saves the EMA model with its progress every `minutes` of wall-clock time, so a long
    pretraining run that is cut off still leaves a recent checkpoint behind."""

    def __init__(self, path: str | Path, minutes: float):
        self.path, self.interval = Path(path), 60.0 * float(minutes)
        self.last = time.perf_counter()

    def maybe_save(self, model: DiffusionModel, step: int, loss: float) -> bool:
        """Save if the interval has passed since the last save; True when it saved."""
        if time.perf_counter() - self.last <= self.interval:
            return False
        save_model(model, self.path, pretrain_progress={"step": step, "loss": loss})
        self.last = time.perf_counter()
        return True


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """ema ← decay·ema + (1 − decay)·model, with the decay warmed up as (1 + step)/(10 + step)
    so the average is not dominated by the random initial weights."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1.0 - d)


def warm_start(model: DiffusionModel, checkpoint: str | Path | None) -> dict[str, Any]:
    """Load `checkpoint` (same plugin and architecture) into `model` before training goes on.

    Returns what the continued run should record: the checkpoint path and the training steps
    and seconds it had already had (0 when `checkpoint` is None)."""
    if not checkpoint:
        return {"init": None, "earlier_train_steps": 0, "earlier_train_seconds": 0.0}
    blob = read_checkpoint(checkpoint)
    apply_weights(model, blob, checkpoint)
    extra = blob.get("extra", {})
    earlier = extra.get("pretrain_metrics") or {}
    return {"init": str(checkpoint),
            "earlier_train_steps": int(earlier.get("total_train_steps", earlier.get("train_steps", 0))),
            "earlier_train_seconds": float(earlier.get("total_train_seconds", earlier.get("train_seconds", 0.0)))}
