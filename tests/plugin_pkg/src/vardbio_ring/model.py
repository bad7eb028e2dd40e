"""The `ring` model plugin: a tiny diffusion model of 2-D points around the unit circle.

Built only from vardbio's public pieces (GaussianProcess, DiffusionModel, ValueHead, and
the shared pretraining loop with its typed settings, PretrainConfig); it has no shipped
weights, so `vardbio pretrain` makes them (a few seconds) and campaigns name the file with
`campaign.model.checkpoint`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vardbio.model import DiffusionModel, Layout, ModelPlugin, save_model
from vardbio.model.training import pretrain_loop, uniform_batches
from vardbio.nn import TimeEmbedding, mlp
from vardbio.processes.gaussian import GaussianProcess, GaussianProcessConfig
from vardbio.value.heads import ValueHead, VectorValueNet

DEFAULTS = {"hidden": 64, "sampling_steps": 20, "eta": 1.0}
DATA = {"noise": 0.1}
TRAINING = {"steps": 1500, "batch_size": 256, "lr": 3e-3, "final_lr_fraction": 1.0, "max_grad_norm": 0.0}


class RingDenoiser(nn.Module):
    """ε-prediction MLP: (B, 2) points, (B,) times -> (B, 2)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.time = TimeEmbedding(16)
        self.body = mlp([2 + 16, hidden, hidden, 2])

    def forward(self, x_t, t, mask=None):
        return self.body(torch.cat([x_t, self.time(t)], dim=-1))


def ring_points(n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) points at radius 1 + noise·N(0, 1), uniform angle."""
    angle = rng.uniform(0, 2 * math.pi, n)
    radius = 1.0 + noise * rng.standard_normal(n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)


class RingPlugin(ModelPlugin):
    name = "ring"
    # ModelPlugin.split fills these in, names unknown keys, and makes the PretrainConfig
    defaults, data_defaults, training_defaults = DEFAULTS, DATA, TRAINING
    test_options = ({"hidden": 16, "sampling_steps": 5},)  # for the contract tests

    def build(self, options: dict[str, Any]) -> DiffusionModel:
        opts = self.options(options)
        process = GaussianProcess(GaussianProcessConfig(
            num_train_steps=200, sampling_steps=opts["sampling_steps"], eta=opts["eta"]))
        return DiffusionModel(RingDenoiser(opts["hidden"]), process, lambda n, g: Layout((n, 2)),
                              _decode, spec={"plugin": self.name, "options": {"hidden": opts["hidden"]}})

    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> nn.Module:
        return ValueHead(VectorValueNet(2, **options))

    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        raise ValueError("the ring model ships no weights: run `vardbio pretrain model.name=ring "
                         "out=ring.pt` and set campaign.model.checkpoint")

    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        opts, data_opts, config = self.split(options)
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        data = torch.as_tensor(ring_points(8192, data_opts["noise"], np.random.default_rng(seed)),
                               dtype=torch.float32)
        batches = uniform_batches(data, config.batch_size, g)
        model, metrics = pretrain_loop(self.build(opts), batches, config, out_path, g)
        radius = model.rollout(512, g).final.norm(dim=1)
        metrics.update({"radius_mean": float(radius.mean()), "radius_std": float(radius.std())})
        save_model(model, out_path, pretrain_metrics=metrics)
        return metrics

    def write_designs(self, designs, rewards, out_stem):
        """<stem>.json: a list of {"x", "y"(, "reward")} records."""
        path = Path(out_stem).with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        records = [dict(d) if rewards is None else {**d, "reward": None if np.isnan(rewards[i]) else float(rewards[i])}
                   for i, d in enumerate(designs)]
        path.write_text(json.dumps(records))
        return [path]


def _decode(x0: torch.Tensor, mask: torch.Tensor | None) -> list[dict[str, float]]:
    return [{"x": float(x), "y": float(y)} for x, y in x0.double().tolist()]


plugin = RingPlugin()
