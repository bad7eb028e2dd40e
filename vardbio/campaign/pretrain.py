"""`vardbio pretrain`: train a model plugin on its data and save the checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from vardbio import registry
from vardbio.campaign.config import plain


def pretrain(cfg: DictConfig) -> tuple[dict[str, Any], Path]:
    """Train the model cfg.model names; writes the shipped checkpoint unless cfg.out is set."""
    torch.set_num_threads(int(cfg.torch_threads))
    plugin = registry.load("model", cfg.model.name)
    options = plain(cfg.model.get("options")) or {}
    out = Path(cfg.out) if cfg.out else plugin.default_checkpoint(options)
    metrics = plugin.pretrain(options, out, int(cfg.seed))
    return metrics, out
