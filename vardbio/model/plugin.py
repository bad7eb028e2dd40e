"""What a model plugin provides: building, pretraining, value heads and design files."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from vardbio.model.checkpoint import load_weights, read_checkpoint
from vardbio.model.diffusion import DiffusionModel


class ModelPlugin(ABC):
    """A domain: registered under the entry-point group `vardbio.models`.

    Options are plain keyword dictionaries from the campaign config (architecture choices,
    which shipped checkpoint to use); the plugin validates them and names bad ones.
    """

    name: str = "model"

    @abstractmethod
    def build(self, options: dict[str, Any]) -> DiffusionModel:
        """An untrained model with the architecture the options describe."""

    @abstractmethod
    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> nn.Module:
        """A fresh value network for this domain: forward(x_t, t, mask) -> (B,) scores."""

    @abstractmethod
    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        """Train a model on this domain's data, save it at out_path, return its metrics."""

    @abstractmethod
    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        """The shipped pretrained checkpoint for these options."""

    @abstractmethod
    def write_designs(self, designs: Sequence[Any], rewards: np.ndarray | None,
                      out_stem: Path) -> list[Path]:
        """Write designs (with their (n,) rewards, NaN where failed, if given) in the
        domain's formats under the path stem `out_stem`; return the files written."""

    def load(self, options: dict[str, Any], checkpoint: str | Path | None = None) -> DiffusionModel:
        """The model built from options with weights from `checkpoint` (default: shipped).

        The architecture saved in the checkpoint fills in options the caller did not set.
        """
        path = Path(checkpoint) if checkpoint else self.default_checkpoint(options)
        saved = read_checkpoint(path)["spec"]
        if saved.get("plugin") != self.name:
            raise ValueError(f"checkpoint {path} belongs to model '{saved.get('plugin')}', not '{self.name}'")
        merged = {**saved.get("options", {}), **options}
        return load_weights(self.build(merged), path)

    def summary_extras(self, model: DiffusionModel, reference_samples: torch.Tensor,
                       final_samples: torch.Tensor, reward_terms: Sequence[Any],
                       beta: float | None) -> dict[str, Any]:
        """Domain-specific entries for summary.json (e.g. an analytic optimum); none by default.

        model: the reference model; reference_samples, final_samples: (B, ...) final states of the reference and of the
        fine-tuned model; reward_terms: the campaign's RewardTerms; beta: the KL weight if
        the algorithm has one.
        """
        return {}


def split_options(plugin: str, options: dict[str, Any], architecture: dict[str, Any],
                  training: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fill a plugin's options in from its defaults: (architecture, training) settings.

    architecture and training map every valid key to its default; an unknown key raises a
    ValueError that names it and lists the valid ones.
    """
    unknown = sorted(set(options) - set(architecture) - set(training))
    if unknown:
        valid = sorted({**architecture, **training})
        raise ValueError(f"unknown {plugin} options {unknown}; valid: {valid}")
    arch = {**architecture, **{k: v for k, v in options.items() if k in architecture}}
    train = {**training, **{k: v for k, v in options.items() if k in training}}
    return arch, train
