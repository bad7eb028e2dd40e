"""The `molecule_string` model plugin: masked (absorbing-state) diffusion over SELFIES tokens.

State: one-hot floats (B, L, V+1), L = max_length tokens (PAD-filled; see vocab), channel V
the mask. Denoiser: the core's TokenTransformer, logits (B, L, V) of p_θ(x_0 | x_t). Every
sample decodes to a valid molecule except the all-PAD string (design None, scored NaN).
Designs are RDKit molecules (no conformer); design files are SDF (2D depiction coordinates)
and a SMILES CSV.
"""
from __future__ import annotations

import csv
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import AllChem

from vardbio.model.checkpoint import save_model
from vardbio.model.diffusion import DiffusionModel, Layout
from vardbio.model.evaluation import DomainSummary, Evaluation, Metric, score_in_process
from vardbio.model.plugin import ModelPlugin, split_options
from vardbio.model.training import PretrainConfig, pretrain_loop
from vardbio.nn import TokenTransformer, token_value_net
from vardbio.processes.masked import MaskedDiffusion, MaskedDiffusionConfig
from vardbio.value.heads import ValueHead
from vardbio_models.molecule_string.data import StringDatasetParams, build_dataset
from vardbio_models.molecule_string.metrics import quick_statistics
from vardbio_models.molecule_string.vocab import MOSES_TOKENS, Vocabulary, selfies_to_mol

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
ARCH = {"max_length": 48, "width": 128, "layers": 4, "heads": 4, "ff": 512, "tokens": list(MOSES_TOKENS)}
SAMPLING = {"sampling_steps": 48, "schedule": "linear", "relax_temperature": 0.1, "token_temperature": 0.45}
DATA = {"source": "moses:train", "max_molecules": 0, "workers": 1, "eval_samples": 512}
TRAINING = {f.name: f.default for f in fields(PretrainConfig)}
TRAINING.update({"steps": 100_000, "batch_size": 64, "lr": 1e-3, "warmup": 500, "final_lr_fraction": 0.05,
                 "weight_decay": 0.01, "ema": 0.999, "checkpoint_minutes": 10.0})


def pad_inside_fraction(x0: torch.Tensor) -> float:
    """Fraction of (B, L, V+1) samples with a PAD token before a real token."""
    idx = x0.argmax(-1)
    real = idx > 0
    last_real = torch.where(real, torch.arange(idx.shape[1]), -1).max(1).values
    first_pad = torch.where(~real, torch.arange(idx.shape[1]), idx.shape[1]).min(1).values
    return float((first_pad < last_real).float().mean())


class StringDecoder:
    """(B, L, V+1) states -> RDKit molecules (None for an empty string)."""

    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab

    def __call__(self, x0: torch.Tensor, mask: torch.Tensor | None = None) -> list[Chem.Mol | None]:
        return [selfies_to_mol(s) for s in self.vocab.selfies(x0)]


STRING_METRICS = {
    "validity": {"label": "validity (decoded to a non-empty molecule)", "units": "fraction of designs",
                 "higher_is_better": True},
    "uniqueness": {"label": "uniqueness (distinct SMILES among the valid)", "units": "fraction of valid designs",
                   "higher_is_better": True},
    "qed_mean": {"label": "mean QED of the valid", "units": "QED (0-1)", "higher_is_better": True},
    "sa_mean": {"label": "mean SA score of the valid", "units": "SA score (1-10)", "higher_is_better": False},
    "heavy_atoms_mean": {"label": "mean heavy atoms of the valid", "units": "atoms", "higher_is_better": None},
    "pad_inside_fraction": {"label": "samples with PAD before a real token", "units": "fraction of designs",
                            "higher_is_better": False},
}
"""How the summary describes the quick_statistics figures (Metric's label, units, direction)."""


class MoleculeStringPlugin(ModelPlugin):
    """Molecules as SELFIES strings of up to max_length tokens."""

    name = "molecule_string"
    gallery = {".sdf": "molecules"}
    test_options = ({"max_length": 32, "width": 16, "layers": 1, "heads": 2, "ff": 32, "sampling_steps": 6},)

    def split(self, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(architecture and sampling options, data and training options), defaults filled."""
        return split_options(self.name, options, {**ARCH, **SAMPLING}, {**DATA, **TRAINING})

    def build(self, options: dict[str, Any]) -> DiffusionModel:
        opts, _ = self.split(options)
        vocab = Vocabulary(opts["tokens"])
        process = MaskedDiffusion(MaskedDiffusionConfig(
            vocab_size=vocab.size, schedule=opts["schedule"], sampling_steps=int(opts["sampling_steps"]),
            relax_temperature=float(opts["relax_temperature"]), token_temperature=float(opts["token_temperature"])))
        denoiser = TokenTransformer(vocab.size, **{k: opts[k] for k in ARCH if k != "tokens"})
        length = int(opts["max_length"])

        def layout(n: int, generator: torch.Generator | None) -> Layout:
            return Layout((n, length, vocab.size + 1))

        spec = {"plugin": self.name, "options": {k: (list(opts[k]) if k == "tokens" else opts[k]) for k in ARCH}}
        return DiffusionModel(denoiser, process, layout, StringDecoder(vocab), spec=spec)

    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> ValueHead:
        """options: `kind` 'conv' (TokenConvValueNet: local context), 'transformer'
        (TokenTransformerValueNet: global context) or 'denoiser' (DenoiserValueNet: a copy of
        the reference denoiser's trunk, pooled over non-PAD tokens), then that network's own
        options."""
        return ValueHead(token_value_net(model.denoiser, options, pad_index=0, owner=self.name))

    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        return WEIGHTS / "molecule_string.pt"

    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        opts, rest = self.split(options)
        config = PretrainConfig.from_options(self.name, {k: rest[k] for k in TRAINING})
        vocab = Vocabulary(opts["tokens"])
        dataset = build_dataset(StringDatasetParams(rest["source"], int(opts["max_length"]),
                                                    int(rest["max_molecules"])),
                                opts["tokens"], workers=int(rest["workers"]))
        print(f"training on {len(dataset)} molecules ({dataset.stats})", flush=True)
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = self.build(opts)

        def batch(step: int) -> tuple[torch.Tensor, None]:
            idx = torch.as_tensor(rng.integers(0, len(dataset), config.batch_size))
            return vocab.one_hot(dataset.tokens[idx]), None

        trained, metrics = pretrain_loop(model, batch, config, out_path, g)
        samples = sample_states(trained, int(rest["eval_samples"]), g)
        mols = trained.decode(samples)
        metrics.update({"samples": quick_statistics(mols, score_in_process, set(dataset.smiles),
                                                    pad_inside_fraction(samples)),
                        "dataset": dataset.stats, "options": opts, "data": {k: rest[k] for k in DATA},
                        "seed": seed})
        save_model(trained, out_path, pretrain_metrics=metrics)
        return metrics

    def write_designs(self, designs, rewards, out_stem):
        """<stem>.sdf (valid molecules, 2D coordinates, id and reward as properties) and
        <stem>.csv: id, SMILES (empty for a failed design), heavy atoms, reward."""
        out_stem.parent.mkdir(parents=True, exist_ok=True)
        sdf, table = out_stem.with_suffix(".sdf"), out_stem.with_suffix(".csv")
        writer = Chem.SDWriter(str(sdf))
        with table.open("w", newline="") as fh:
            rows = csv.writer(fh)
            rows.writerow(["id", "smiles", "heavy_atoms"] + ([] if rewards is None else ["reward"]))
            for i, mol in enumerate(designs):
                reward = [] if rewards is None else [f"{rewards[i]:.6g}"]
                if mol is None:
                    rows.writerow([f"design_{i}", "", 0] + reward)
                    continue
                rows.writerow([f"design_{i}", Chem.MolToSmiles(mol), mol.GetNumAtoms()] + reward)
                drawn = Chem.Mol(mol)
                AllChem.Compute2DCoords(drawn)
                drawn.SetProp("_Name", f"design_{i}")
                if rewards is not None:
                    drawn.SetProp("reward", f"{rewards[i]:.6g}")
                writer.write(drawn)
        writer.close()
        return [sdf, table]

    def summarize(self, evaluation: Evaluation) -> DomainSummary:
        """validity, uniqueness, mean QED, SA and heavy atoms (quick_statistics: QED and SA
        scored through the campaign's evaluation runtime) and pad_inside_fraction of the
        final designs, with the reference's as initial values."""
        after, before = (quick_statistics(d.designs, evaluation.oracles.values, None, pad_inside_fraction(d.states))
                         for d in (evaluation.final, evaluation.reference))
        return DomainSummary([Metric(key, after[key], before[key], **STRING_METRICS[key]) for key in STRING_METRICS])


@torch.no_grad()
def sample_states(model: DiffusionModel, n: int, generator: torch.Generator, batch: int = 256) -> torch.Tensor:
    """(n, L, V+1) final states of n samples, drawn in batches."""
    parts = [model.rollout(min(batch, n - start), generator).final for start in range(0, n, batch)]
    return torch.cat(parts)


plugin = MoleculeStringPlugin()
