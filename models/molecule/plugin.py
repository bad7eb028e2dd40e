"""The `molecule` model plugin: building, pretraining, value heads, design files and sample
metrics."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import torch
from rdkit import Chem

from vardbio.geometry import random_rotations
from vardbio.model.checkpoint import read_checkpoint, save_model
from vardbio.model.diffusion import DiffusionModel
from vardbio.model.evaluation import DomainSummary, Evaluation, Metric
from vardbio.model.plugin import ModelPlugin
from vardbio.model.training import pretrain_loop
from vardbio.processes.gaussian import GaussianProcess, GaussianProcessConfig
from vardbio.value.heads import ValueHead
from vardbio_models.molecule.data import DatasetParams, atom_count_histogram, build_dataset, training_smiles
from vardbio_models.molecule.decoding import DecodeFailure, MoleculeDecoder, canonical
from vardbio_models.molecule.metrics import quality_report, sample_final_states, sample_quality
from vardbio_models.molecule.networks import AtomCountPrior, EGNNDenoiser, MoleculeSetValueNet, MoleculeValueNet
from vardbio_models.molecule.state import encode_state

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
DEFAULTS = {"hidden": 64, "layers": 4, "max_atoms": 20, "num_train_steps": 1000, "schedule": "linear",
            "prediction": "eps", "sampling_steps": 50, "eta": 1.0,
            "smiles_file": "molecules/moses_small.smi", "repair_hydrogens": False}
ARCHITECTURE = ("hidden", "layers", "max_atoms", "num_train_steps", "schedule", "prediction")
DATA = {"max_molecules": 10000, "eval_samples": 1000, "eval_batch": 250, "log": None, "dataset_cache": None}
# the shared loop (PretrainConfig): a wall-clock budget, a constant learning rate unless
# final_lr_fraction < 1, weight average, a learning-curve point every 200 steps
TRAINING = {"steps": 1_000_000, "minutes": 55.0, "batch_size": 64, "lr": 7e-4, "final_lr_fraction": 1.0,
            "ema": 0.999, "checkpoint_minutes": 5.0, "log_every": 200}


QUALITY_METRICS = {
    "valid_fraction": {"label": "valid fraction (sanitised, one fragment, stable)", "units": "fraction of designs",
                       "higher_is_better": True},
    "diversity": {"label": "diversity (mean pairwise Tanimoto distance, Morgan radius 2)",
                  "units": "Tanimoto distance (0-1)", "higher_is_better": True},
    "uniqueness": {"label": "uniqueness (distinct SMILES among the valid)", "units": "fraction of valid designs",
                   "higher_is_better": True},
    "atom_stability": {"label": "stable heavy atoms", "units": "fraction of atoms", "higher_is_better": True},
    "molecule_stability": {"label": "molecules with every atom stable", "units": "fraction of designs",
                           "higher_is_better": True},
    "repaired": {"label": "designs valid only after hydrogen repair", "units": "fraction of designs",
                 "higher_is_better": False},
}
"""How the summary describes the sample_quality figures (Metric's label, units, direction)."""


class MoleculePlugin(ModelPlugin):
    """3D small molecules (≤ 20 heavy atoms, C N O F S Cl, hydrogens implicit in the state)."""

    name = "molecule"
    gallery = {".sdf": "molecules"}
    defaults, data_defaults, training_defaults = DEFAULTS, DATA, TRAINING
    test_options = ({"hidden": 16, "layers": 2, "sampling_steps": 6},)

    def check_options(self, options: dict[str, Any]) -> None:
        for key in ("hidden", "layers", "max_atoms", "sampling_steps"):
            if int(options[key]) < 1:
                raise ValueError(f"molecule option {key} must be >= 1, got {options[key]}")

    def build(self, options: dict[str, Any]) -> DiffusionModel:
        opts = self.options(options)
        process = GaussianProcess(GaussianProcessConfig.from_options(opts, com_dims=3))
        denoiser = EGNNDenoiser(opts["hidden"], opts["layers"])
        layout = AtomCountPrior(atom_count_histogram(opts["smiles_file"], opts["max_atoms"]))
        architecture = {k: opts[k] for k in ARCHITECTURE}
        return DiffusionModel(denoiser, process, layout, MoleculeDecoder(opts["repair_hydrogens"]),
                              spec={"plugin": self.name, "options": architecture})

    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> ValueHead:
        """kind: 'egnn' (MoleculeValueNet, default) or 'set' (MoleculeSetValueNet); hidden, layers."""
        unknown = set(options) - {"kind", "hidden", "layers"}
        if unknown:
            raise ValueError(f"unknown molecule value-head options {sorted(unknown)}; valid: kind, hidden, layers")
        kind = options.get("kind", "egnn")
        if kind == "egnn":
            return ValueHead(MoleculeValueNet(int(options.get("hidden", 64)), int(options.get("layers", 3))))
        if kind == "set":
            return ValueHead(MoleculeSetValueNet(int(options.get("hidden", 32)), int(options.get("layers", 2))))
        raise ValueError(f"unknown molecule value-head kind '{kind}'; expected 'egnn' or 'set'")

    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        return WEIGHTS / "molecule.pt"

    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        """Train on the curated MOSES subset with the shared loop (by default under a
        wall-clock budget, `minutes`), each batch turned by uniform random rotations; ends
        with the sample-quality metrics of `eval_samples` samples. Dataset messages and the
        final metrics go to `log` (default: the checkpoint path with .log)."""
        opts, data_opts, config = self.split(options)
        log_path = Path(data_opts["log"]) if data_opts["log"] else Path(out_path).with_suffix(".log")
        log_path.parent.mkdir(parents=True, exist_ok=True)

        def log(msg: str) -> None:
            with log_path.open("a") as fh:
                fh.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        params = DatasetParams(smiles_file=opts["smiles_file"], max_molecules=int(data_opts["max_molecules"]),
                               max_atoms=opts["max_atoms"], seed=seed)
        started = time.perf_counter()
        cache = Path(data_opts["dataset_cache"]) if data_opts["dataset_cache"] else None
        data = build_dataset(params, cache, log)
        data_seconds = time.perf_counter() - started
        log(f"dataset: {len(data)} molecules ready in {data_seconds:.0f} s")

        def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.randint(0, len(data), (config.batch_size,), generator=generator)
            pos = torch.einsum("bij,bnj->bni", random_rotations(len(idx), generator), data.positions[idx])
            return encode_state(pos, data.elements[idx], data.hcounts[idx], data.mask[idx]), data.mask[idx]

        model, metrics = pretrain_loop(self.build(opts), batch, config, out_path, generator)
        eval_started = time.perf_counter()
        states, masks = sample_final_states(model, int(data_opts["eval_samples"]),
                                            torch.Generator().manual_seed(seed + 1), int(data_opts["eval_batch"]))
        metrics.update({
            **sample_quality(states, masks, set(data.smiles)),
            "dataset_seconds": round(data_seconds, 1), "eval_seconds": round(time.perf_counter() - eval_started, 1),
            "dataset_molecules": len(data), "dataset": data.record, "options": opts, "data": data_opts,
            "seed": seed, "torch_threads": torch.get_num_threads(),
        })
        log("metrics " + json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}))
        save_model(model, out_path, pretrain_metrics=metrics)
        return metrics

    def write_designs(self, designs, rewards, out_stem):
        """`<stem>.sdf` with every valid molecule (3D, explicit H; properties: index, smiles,
        reward) and `<stem>.csv` with one row per design (index, smiles, reward, failure); no
        SDF when no design is a valid molecule."""
        out_stem = Path(out_stem)
        out_stem.parent.mkdir(parents=True, exist_ok=True)
        sdf, table = out_stem.with_suffix(".sdf"), out_stem.with_suffix(".csv")
        writer = Chem.SDWriter(str(sdf))
        written = 0
        with table.open("w", newline="") as fh:
            rows = csv.writer(fh)
            rows.writerow(["index", "smiles", "reward", "failure"])
            for i, design in enumerate(designs):
                reward = float("nan") if rewards is None else float(rewards[i])
                if isinstance(design, Chem.Mol):
                    mol = Chem.Mol(design)
                    smi = canonical(mol)
                    mol.SetProp("_Name", f"design_{i}")
                    mol.SetIntProp("index", i)
                    mol.SetProp("smiles", smi)
                    if rewards is not None:
                        mol.SetDoubleProp("reward", reward)
                    writer.write(mol)
                    written += 1
                    rows.writerow([i, smi, f"{reward:.6g}", ""])
                else:
                    why = design.reason if isinstance(design, DecodeFailure) else f"not a molecule: {design!r}"
                    rows.writerow([i, getattr(design, "smiles", "") or "", f"{reward:.6g}", why])
        writer.close()
        if written == 0:  # no valid molecule: no SDF, the CSV says why
            sdf.unlink()
            return [table]
        return [sdf, table]

    def summarize(self, evaluation: Evaluation) -> DomainSummary:
        """valid_fraction, diversity, uniqueness, atom and molecule stability and the repaired
        fraction of the final designs, with the reference's as initial values, as defined in
        sample_quality (its valid_fraction, chemical validity, stands in for the core's)."""
        repair = evaluation.model.decoder.repair
        after, before = (sample_quality(d.states, d.mask, repair=repair) for d in (evaluation.final, evaluation.reference))
        return DomainSummary([Metric(key, after[key], before[key], **QUALITY_METRICS[key]) for key in QUALITY_METRICS])

    def sample_metrics(self, model: DiffusionModel, final_states: torch.Tensor, mask: torch.Tensor | None,
                       checkpoint: Path) -> dict[str, Any]:
        """`vardbio sample`'s sample_metrics.json: quality_report of the samples (strict,
        covalent-radii connectivity and hydrogen repair), with novelty against the training
        SMILES the checkpoint records (None when it records none), and the sampling steps."""
        extra = read_checkpoint(checkpoint).get("extra", {})
        metrics = quality_report(final_states, mask, training_smiles(extra))
        metrics["sampling_steps"] = model.num_steps
        return metrics


plugin = MoleculePlugin()
