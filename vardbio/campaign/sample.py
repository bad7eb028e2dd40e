"""`vardbio sample`: draw designs from a pretrained or fine-tuned checkpoint, score them when
a reward is configured, and write them in the model's formats."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import numpy as np
import torch
from omegaconf import DictConfig

from vardbio import registry
from vardbio.campaign.config import plain
from vardbio.reward.compose import build_reward, build_runtime
from vardbio.reward.ledger import OracleLedger


@dataclass
class SampleResult:
    """files: what write_designs wrote; rewards: (n,) with NaN for failures, or None when
    no reward was configured; oracle_calls: real oracle calls made."""

    files: list[Path]
    rewards: np.ndarray | None
    oracle_calls: int


def sample(cfg: DictConfig) -> SampleResult:
    """Sample cfg.n designs under cfg.out_dir/designs.* (model and reward: see sample.yaml);
    out_dir is created when missing."""
    for key, minimum in (("n", 1), ("torch_threads", 1)):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    torch.set_num_threads(int(cfg.torch_threads))
    campaign = cfg.get("campaign")
    model_cfg = campaign.model if campaign else cfg.model
    plugin = registry.load("model", model_cfg.name)
    options = plain(model_cfg.get("options", {})) or {}
    checkpoint = cfg.checkpoint or (campaign.model.get("checkpoint") if campaign else None)
    model = plugin.load(options, checkpoint).eval()
    traj = model.rollout(int(cfg.n), torch.Generator().manual_seed(int(cfg.seed)))
    designs = model.decode(traj.final, traj.mask)
    source = cfg if cfg.reward is not None or not campaign else campaign
    terms = plain(source.reward)
    rewards, calls = None, 0
    if terms:
        runtime = plain(campaign.oracle_runtime if source is campaign else cfg.oracle_runtime)
        ledger = OracleLedger()
        reward = build_reward(terms, build_runtime(runtime, ledger), aggregation=source.aggregation,
                              nan_policy=source.nan_policy, nan_penalty=source.nan_penalty)
        rewards = reward(designs).values
        calls = ledger.total_calls
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = plugin.write_designs(designs, rewards, out_dir / "designs")
    return SampleResult(files, rewards, calls)
