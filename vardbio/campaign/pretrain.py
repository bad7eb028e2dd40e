"""`vardbio pretrain`: train a model plugin on its data and save the checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from vardbio import registry
from vardbio.campaign.config import plain

UNSHIPPED_DIR = Path("runs/pretrained")


def pretrain(cfg: DictConfig) -> tuple[dict[str, Any], Path]:
    """Train the model cfg.model names and save it at cfg.out; without out, at the plugin's
    shipped checkpoint for these options (default_checkpoint), or, for a plugin that ships
    none (its default_checkpoint raises), at runs/pretrained/<plugin>.pt."""
    torch.set_num_threads(int(cfg.torch_threads))
    plugin = registry.load("model", cfg.model.name)
    options = plain(cfg.model.get("options")) or {}
    out = Path(cfg.out) if cfg.out else output_path(plugin, options)
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics = plugin.pretrain(options, out, int(cfg.seed))
    return metrics, out


def output_path(plugin: Any, options: dict[str, Any]) -> Path:
    """Where `vardbio pretrain` without out= writes: the shipped checkpoint's path, or
    runs/pretrained/<plugin>.pt when the plugin has none (its advice to run
    `vardbio pretrain` then works instead of pointing back at itself)."""
    try:
        return Path(plugin.default_checkpoint(options))
    except (ValueError, FileNotFoundError, NotImplementedError):
        return UNSHIPPED_DIR / f"{plugin.name}.pt"
