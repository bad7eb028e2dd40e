"""`vardbio sample`: draw designs from a pretrained or fine-tuned checkpoint, score them when
a reward is configured, and write them in the model's formats, with the plugin's sample
metrics (ModelPlugin.sample_metrics) in sample_metrics.json when it has any."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from vardbio import registry
from vardbio.campaign.config import plain
from vardbio.geometry import cat_padded
from vardbio.reward.compose import build_reward, build_runtime
from vardbio.reward.ledger import OracleLedger


@dataclass
class SampleResult:
    """files: what write_designs wrote (and sample_metrics.json); rewards: (n,) with NaN for
    failures, or None when no reward was configured; oracle_calls: real oracle calls made;
    metrics: the plugin's sample metrics ({} when it has none)."""

    files: list[Path]
    rewards: np.ndarray | None
    oracle_calls: int
    metrics: dict[str, Any] = field(default_factory=dict)


def sample(cfg: DictConfig) -> SampleResult:
    """Sample cfg.n designs under cfg.out_dir/designs.* (model and reward: see sample.yaml),
    cfg.batch_size chains per rollout (null: all at once); out_dir is created when missing."""
    for key, minimum in (("n", 1), ("torch_threads", 1), ("batch_size", 1)):
        value = cfg.get(key)
        if key == "batch_size" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    torch.set_num_threads(int(cfg.torch_threads))
    campaign = cfg.get("campaign")
    model_cfg = campaign.model if campaign else cfg.model
    plugin = registry.load("model", model_cfg.name)
    options = plain(model_cfg.get("options", {})) or {}
    checkpoint = cfg.checkpoint or (campaign.model.get("checkpoint") if campaign else None)
    model = plugin.load(options, checkpoint).eval()
    n = int(cfg.n)
    batch = int(cfg.get("batch_size") or n)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    started = time.perf_counter()
    with torch.no_grad():
        parts = [model.rollout(min(batch, n - start), generator) for start in range(0, n, batch)]
    sampling_seconds = time.perf_counter() - started
    final = cat_padded([p.final for p in parts]) if len(parts) > 1 else parts[0].final
    mask = parts[0].mask if len(parts) == 1 or parts[0].mask is None else cat_padded([p.mask for p in parts])
    designs = model.decode(final, mask)
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
    files = list(plugin.write_designs(designs, rewards, out_dir / "designs"))
    path = Path(checkpoint) if checkpoint else plugin.default_checkpoint(options)
    metrics = plugin.sample_metrics(model, final, mask, path)
    if metrics:
        metrics = {**metrics, "samples": n, "seed": int(cfg.seed), "checkpoint": str(path),
                   "sampling_seconds": round(sampling_seconds, 1)}
        (out_dir / "sample_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        files.append(out_dir / "sample_metrics.json")
    return SampleResult(files, rewards, calls, metrics)
