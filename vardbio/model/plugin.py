"""What a model plugin provides: building, pretraining, value heads and design files."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from vardbio.model.checkpoint import load_weights, read_checkpoint
from vardbio.model.diffusion import DiffusionModel
from vardbio.model.evaluation import DomainSummary, Evaluation
from vardbio.model.training import PretrainConfig


class ModelPlugin(ABC):
    """A domain: registered under the entry-point group `vardbio.models`.

    Options are plain keyword dictionaries from the campaign config (architecture choices,
    which shipped checkpoint to use); the plugin validates them and names bad ones.

    A plugin that declares its options in `defaults` (architecture and sampling),
    `data_defaults` (pretraining data and evaluation) and `training_defaults` (its own
    defaults for vardbio.model.training.PretrainConfig) gets them split, filled in and
    checked by `split` (unknown keys named; value checks in `check_options`).
    """

    name: str = "model"
    defaults: dict[str, Any] = {}
    data_defaults: dict[str, Any] = {}
    training_defaults: dict[str, Any] = {}

    gallery: dict[str, str] = {}
    """How the report shows the files write_designs returns, by suffix: {".png": "images"}
    (pictures), {".sdf": "molecules"} (2D depictions, best reward first), {".csv": "vectors"}
    (a scatter of columns x0 and x1), {".fasta": "sequences"} (a table). A file whose suffix
    is not listed is only linked. The kinds are vardbio.model.evaluation.GALLERY_KINDS."""

    test_options: tuple[dict[str, Any], ...] = ({},)
    """Small option sets for the contract checks (vardbio.testing.check_model_contract),
    which tests/test_contracts.py runs on every plugin registered under `vardbio.models`,
    once per set: each should build a model that samples in about a second on a CPU. The
    default, ({},), checks the plugin's defaults."""

    def split(self, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], PretrainConfig]:
        """(architecture and sampling, data, training) options with defaults filled in, from
        the declared defaults (see pretrain_options); ValueError naming a bad key or value."""
        arch, data, config = pretrain_options(f"{self.name} model", options, self.defaults,
                                              self.data_defaults, self.training_defaults)
        self.check_options(arch)
        return arch, data, config

    def options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The architecture and sampling options of split(options)."""
        return self.split(options)[0]

    def check_options(self, options: dict[str, Any]) -> None:
        """Check (and normalise in place) architecture option values; raise a ValueError
        naming a bad one. Nothing to check by default."""

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

    def sample_metrics(self, model: DiffusionModel, final_states: torch.Tensor, mask: torch.Tensor | None,
                       checkpoint: Path) -> dict[str, Any]:
        """Quality metrics of freshly sampled designs for `vardbio sample`, which writes them
        to sample_metrics.json (with the sample count, seed and timing): final_states
        (B, ...) and mask (B, N) or None, sampled from `checkpoint`. None by default."""
        return {}

    def summarize(self, evaluation: Evaluation) -> DomainSummary:
        """This domain's figures of the evaluation designs for summary.json and the report
        (vardbio.model.evaluation): metrics with labels, units and directions, and entries
        such as an analytic optimum. Oracles beyond the reward go through
        evaluation.oracles, never called directly. Nothing by default."""
        return DomainSummary()


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


LEGACY_TRAINING_NAMES = {"train_steps": "steps", "max_train_steps": "steps", "train_minutes": "minutes",
                         "lr_final": "final_lr_fraction"}
"""Earlier names of PretrainConfig fields that plugin options still accept."""


def pretrain_options(plugin: str, options: dict[str, Any], architecture: dict[str, Any], data: dict[str, Any],
                     training: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], PretrainConfig]:
    """A plugin's options as (architecture, data, PretrainConfig), defaults filled in.

    architecture and data map each valid key to its default; training holds the plugin's
    defaults for PretrainConfig fields (the others keep PretrainConfig's). The earlier names
    in LEGACY_TRAINING_NAMES are read as the fields they became (a null one is left out); an
    unknown key, or a field given under two names, raises a ValueError that names it.
    """
    renamed: dict[str, Any] = {}
    for key, value in options.items():
        new = LEGACY_TRAINING_NAMES.get(key, key)
        if key != new and value is None:
            continue
        if new in renamed:
            given = [k for k in options if LEGACY_TRAINING_NAMES.get(k, k) == new]
            raise ValueError(f"{plugin} options {given} all set the pretraining option '{new}': give one")
        renamed[new] = value
    config_fields = {f.name: f.default for f in fields(PretrainConfig)}
    arch, rest = split_options(plugin, renamed, architecture, {**data, **config_fields, **training})
    config = PretrainConfig(**{k: rest[k] for k in config_fields})
    return arch, {k: rest[k] for k in data}, config


def check_length(plugin: str, options: dict[str, Any]) -> None:
    """A ValueError unless min_length <= length <= max_length in a plugin's options."""
    if not options["min_length"] <= options["length"] <= options["max_length"]:
        raise ValueError(f"{plugin} cannot make length {options['length']}: it was trained on "
                         f"{options['min_length']} to {options['max_length']} residues")
