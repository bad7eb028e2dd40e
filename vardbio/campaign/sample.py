"""`vardbio sample`: draw designs from a pretrained or fine-tuned checkpoint and write them."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from vardbio import registry


def sample(cfg: DictConfig) -> list[Path]:
    """Sample cfg.n designs and write them in the model's formats under cfg.out_dir."""
    torch.set_num_threads(int(cfg.torch_threads))
    if cfg.n < 1:
        raise ValueError(f"n must be at least 1, got {cfg.n}")
    plugin = registry.load("model", cfg.model.name)
    options = OmegaConf.to_container(cfg.model.get("options", {}), resolve=True)
    model = plugin.load(options, cfg.checkpoint).eval()
    traj = model.rollout(int(cfg.n), torch.Generator().manual_seed(int(cfg.seed)))
    designs = model.decode(traj.final, traj.mask)
    return plugin.write_designs(designs, None, Path(cfg.out_dir) / "designs")
