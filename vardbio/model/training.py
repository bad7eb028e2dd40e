"""The one pretraining loop every model plugin uses (pretrain_loop with PretrainConfig) and
its pieces: a step- or wall-clock learning-rate schedule, a weight EMA, periodic checkpoints
and warm starts from an earlier checkpoint."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

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
    """Backpropagate `loss`, clip the denoiser's gradient norm to max_grad_norm (0: no
    clipping), step, then move the EMA copy's denoiser towards it (see ema_update). Returns
    the loss as a float."""
    optimiser.zero_grad()
    loss.backward()
    if max_grad_norm > 0:
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


@dataclass
class PretrainConfig:
    """Settings of pretrain_loop.

    steps: most optimiser steps; minutes: wall-clock budget (0 = none; when set, the cosine
    follows the clock, otherwise the step count); batch_size: designs per step (the plugin's
    batch function reads it); lr, warmup (linear warm-up steps), final_lr_fraction (the
    cosine's end as a fraction of lr), weight_decay (AdamW); ema: weight-average decay (0 =
    the final weights themselves); max_grad_norm: gradient clipping (0 = none); checkpoint_minutes:
    save the averaged model this often (0 = never); keep_checkpoints: also keep each periodic
    save as <out>_step<N>.pt (for learning curves); init: a checkpoint of the same
    architecture to continue from; log_every: steps between learning-curve points."""

    steps: int = 1000
    minutes: float = 0.0
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 0
    final_lr_fraction: float = 0.0
    weight_decay: float = 0.0
    ema: float = 0.0
    max_grad_norm: float = 1.0
    checkpoint_minutes: float = 0.0
    keep_checkpoints: bool = False
    init: str | None = None
    log_every: int = 500

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "log_every"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"pretraining {key} must be >= 1, got {getattr(self, key)}")
        for key in ("minutes", "lr", "warmup", "weight_decay", "max_grad_norm", "checkpoint_minutes"):
            if float(getattr(self, key)) < 0:
                raise ValueError(f"pretraining {key} must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= float(self.final_lr_fraction) <= 1.0:
            raise ValueError(f"pretraining final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}")
        if not 0.0 <= float(self.ema) < 1.0:
            raise ValueError(f"pretraining ema must be in [0, 1), got {self.ema}")

    @classmethod
    def from_options(cls, plugin: str, options: dict[str, Any]) -> "PretrainConfig":
        """The config from a plugin's option dictionary; an unknown key is an error naming it."""
        valid = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - valid)
        if unknown:
            raise ValueError(f"unknown {plugin} pretraining options {unknown}; valid: {sorted(valid)}")
        return cls(**options)


BatchFn = Callable[[int], "tuple[torch.Tensor, torch.Tensor | None]"]
LossFn = Callable[[DiffusionModel, torch.Tensor, "torch.Tensor | None", torch.Generator], torch.Tensor]


def uniform_batches(data: torch.Tensor, batch_size: int, generator: torch.Generator) -> BatchFn:
    """A batch function for pretrain_loop: `batch_size` rows of the clean states data (N, ...)
    drawn uniformly with replacement (torch.randint with `generator`), no mask."""
    def batch(step: int) -> tuple[torch.Tensor, None]:
        return data[torch.randint(0, len(data), (batch_size,), generator=generator)], None

    return batch


def default_loss(model: DiffusionModel, x0: torch.Tensor, mask: torch.Tensor | None,
                 generator: torch.Generator) -> torch.Tensor:
    """The process's own training loss of the model's denoiser on clean states x0 (B, ...)."""
    return model.process.training_loss(model.denoiser, x0, mask, generator)


def pretrain_loop(model: DiffusionModel, batch: BatchFn, config: PretrainConfig, out_path: str | Path,
                  generator: torch.Generator, loss: LossFn = default_loss) -> tuple[DiffusionModel, dict[str, Any]]:
    """Train `model` on clean batches and return (the averaged model in eval mode, metrics).

    batch(step) -> (x0 (B, ...), mask (B, N) or None): the step's clean training states.
    Warm-starts from config.init, schedules the learning rate (warm-up, then a cosine over
    the steps or the wall clock), clips gradients, keeps a weight average, saves it every
    config.checkpoint_minutes at out_path, and shows a progress bar. The metrics hold the
    steps and seconds of this run and of all runs it continues, the mean of the last 100
    losses, and the learning curve (step, seconds, mean loss since the previous point).
    The caller evaluates and saves the returned model."""
    earlier = warm_start(model, config.init)
    ema = model.frozen_copy()
    model.train()
    optimiser = torch.optim.AdamW(model.denoiser.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    budget = 60.0 * config.minutes if config.minutes else math.inf
    schedule = WallClockSchedule(budget if config.minutes else float(config.steps), config.warmup,
                                 final_fraction=config.final_lr_fraction)
    checkpoint = PeriodicCheckpoint(out_path, config.checkpoint_minutes) if config.checkpoint_minutes else None
    started, step, losses, curve = time.perf_counter(), 0, [], []
    bar = tqdm(total=config.steps, desc="pretrain", unit="step", mininterval=5.0, disable=not sys.stderr.isatty())
    while step < config.steps and time.perf_counter() - started < budget:
        elapsed = time.perf_counter() - started
        schedule.apply(optimiser, config.lr, step, elapsed if config.minutes else step)
        x0, mask = batch(step)
        losses.append(optimiser_step(model, ema, optimiser, loss(model, x0, mask, generator),
                                     config.ema, step, config.max_grad_norm))
        step += 1
        bar.update(1)
        if step % config.log_every == 0:
            point = {"step": earlier["earlier_train_steps"] + step, "seconds": round(elapsed, 1),
                     "loss": float(np.mean(losses[-config.log_every:]))}
            curve.append(point)
            bar.set_postfix(loss=f"{point['loss']:.4f}")
            if bar.disable:
                print(f"step {step} loss {point['loss']:.4f} elapsed {elapsed:.0f} s", flush=True)
        if checkpoint and checkpoint.maybe_save(ema, step, float(np.mean(losses[-100:]))) and config.keep_checkpoints:
            numbered = Path(out_path).with_name(f"{Path(out_path).stem}_step{earlier['earlier_train_steps'] + step}.pt")
            save_model(ema, numbered, pretrain_progress={"step": step, "seconds": elapsed})
    bar.close()
    seconds = time.perf_counter() - started
    metrics = {"final_loss_mean_last100": float(np.mean(losses[-100:])) if losses else float("nan"),
               "train_steps": step, "train_seconds": round(seconds, 1), **earlier,
               "total_train_steps": earlier["earlier_train_steps"] + step,
               "total_train_seconds": round(earlier["earlier_train_seconds"] + seconds, 1),
               "learning_curve": curve, "pretrain_config": asdict(config)}
    return ema.eval(), metrics
