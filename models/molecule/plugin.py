"""The `molecule` model plugin: building, pretraining, value heads, design files and sample
metrics."""
from __future__ import annotations

import copy
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
from vardbio.model.evaluation import DomainSummary, Evaluation, Metric, score_in_process
from vardbio.model.plugin import ModelPlugin
from vardbio.model.training import pretrain_loop
from vardbio.value.heads import ValueHead
from vardbio_models.molecule.data import DatasetParams, atom_count_histogram, build_dataset, training_smiles
from vardbio_models.molecule.decoding import DecodeFailure, MoleculeDecoder, canonical
from vardbio_models.molecule.metrics import (
    posebusters_figures, property_figures, sample_final_states, sample_quality,
)
from vardbio_models.molecule.networks import AtomCountPrior, BondedEGNN, MoleculeDenoiser, MoleculeValueNet
from vardbio_models.molecule.state import LossWeights, molecule_process

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
DEFAULTS = {"hidden": 64, "layers": 4, "max_atoms": 20, "num_train_steps": 1000, "schedule": "linear",
            "prediction": "eps", "sampling_steps": 50, "eta": 1.0,
            "smiles_file": "molecules/moses_small.smi", "coords_weight": 3.0, "atoms_weight": 0.4,
            "bonds_weight": 2.0}
ARCHITECTURE = ("hidden", "layers", "max_atoms", "num_train_steps", "schedule", "prediction")
DATA = {"max_molecules": 10000, "eval_samples": 1000, "eval_batch": 250, "log": None, "dataset_cache": None,
        "posebusters_energy": True}
# the shared loop (PretrainConfig): a wall-clock budget, a constant learning rate unless
# final_lr_fraction < 1, weight average, a learning-curve point every 200 steps
TRAINING = {"steps": 1_000_000, "minutes": 55.0, "batch_size": 64, "lr": 7e-4, "final_lr_fraction": 1.0,
            "ema": 0.999, "checkpoint_minutes": 5.0, "log_every": 200}


QUALITY_METRICS = {
    "connected_validity": {"label": "connected validity (sanitised, one fragment)", "units": "fraction of designs",
                           "higher_is_better": True},
    "validity": {"label": "validity (sanitised, fragments allowed)", "units": "fraction of designs",
                 "higher_is_better": True},
    "diversity": {"label": "diversity (mean pairwise Tanimoto distance, Morgan radius 2)",
                  "units": "Tanimoto distance (0-1)", "higher_is_better": True},
    "uniqueness": {"label": "uniqueness (distinct SMILES among the valid)", "units": "fraction of valid designs",
                   "higher_is_better": True},
    "atom_stability": {"label": "stable heavy atoms (bond orders within valence)", "units": "fraction of atoms",
                       "higher_is_better": True},
    "molecule_stability": {"label": "molecules with every atom stable", "units": "fraction of designs",
                           "higher_is_better": True},
}
"""How the summary describes the sample_quality figures (Metric's label, units, direction)."""
PROPERTY_METRICS = {
    "strain": {"label": "median MMFF94 strain of the valid designs", "units": "kcal/mol per heavy atom",
               "higher_is_better": False},
    "qed": {"label": "median QED of the valid designs", "units": "QED (0-1)", "higher_is_better": True},
    "sa": {"label": "median SA score of the valid designs", "units": "SA (1-10)", "higher_is_better": False},
}
"""How the summary describes the median of each property_figures distribution."""


class MoleculePlugin(ModelPlugin):
    """3D small molecules (≤ max_atoms heavy atoms, atom types of state.ATOM_TYPES, hydrogens
    implicit): coordinates, atom types and kekulised bond types diffused jointly."""

    name = "molecule"
    gallery = {".sdf": "molecules"}
    defaults, data_defaults, training_defaults = DEFAULTS, DATA, TRAINING
    test_options = ({"hidden": 16, "layers": 2, "sampling_steps": 6},)

    def check_options(self, options: dict[str, Any]) -> None:
        for key in ("hidden", "layers", "max_atoms", "sampling_steps"):
            if int(options[key]) < 1:
                raise ValueError(f"molecule option {key} must be >= 1, got {options[key]}")
        for key in ("coords_weight", "atoms_weight", "bonds_weight"):
            if float(options[key]) < 0:
                raise ValueError(f"molecule option {key} must be >= 0, got {options[key]}")

    def build(self, options: dict[str, Any]) -> DiffusionModel:
        opts = self.options(options)
        weights = LossWeights(opts["coords_weight"], opts["atoms_weight"], opts["bonds_weight"])
        process = molecule_process(opts["max_atoms"], opts["sampling_steps"], opts["num_train_steps"],
                                   opts["schedule"], opts["prediction"], opts["eta"], weights)
        denoiser = MoleculeDenoiser(process, opts["hidden"], opts["layers"])
        layout = AtomCountPrior(atom_count_histogram(opts["smiles_file"], opts["max_atoms"]), process.state_size)
        architecture = {k: opts[k] for k in ARCHITECTURE}
        return DiffusionModel(denoiser, process, layout, MoleculeDecoder(process),
                              spec={"plugin": self.name, "options": architecture})

    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> ValueHead:
        """MoleculeValueNet (a bonded trunk, pooled). `kind` 'new' (the default): a fresh
        trunk of `hidden` (64) and `layers` (3); 'denoiser': a copy of the pretrained
        denoiser's trunk, its size, no other option."""
        options = dict(options)
        kind = options.pop("kind", "new")
        valid = {"new": {"hidden", "layers"}, "denoiser": set()}
        if kind not in valid:
            raise ValueError(f"unknown molecule value-head kind '{kind}'; expected one of {', '.join(valid)}")
        unknown = set(options) - valid[kind]
        if unknown:
            raise ValueError(f"unknown molecule value-head options {sorted(unknown)} for kind '{kind}'; "
                             f"valid: {', '.join(sorted(valid[kind])) or 'none'}")
        if kind == "denoiser":
            return ValueHead(MoleculeValueNet(copy.deepcopy(model.denoiser.trunk)))
        trunk = BondedEGNN(model.process, int(options.get("hidden", 64)), int(options.get("layers", 3)))
        return ValueHead(MoleculeValueNet(trunk))

    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        return WEIGHTS / "molecule.pt"

    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        """Train on the curated MOSES subset with the shared loop (by default under a
        wall-clock budget, `minutes`), each batch turned by uniform random rotations; ends
        with the sample-quality metrics and property distributions (QED, SA, MMFF strain) of
        `eval_samples` samples and the PoseBusters intramolecular checks of the valid designs
        (posebusters_figures; `posebusters_energy: false` skips its energy check, 0.1-3 s per
        valid design, cut at 10 s). Dataset messages and the final metrics go to `log`
        (default: the checkpoint path with .log)."""
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
            return data.states(idx, pos), data.mask[idx]

        model, metrics = pretrain_loop(self.build(opts), batch, config, out_path, generator)
        eval_started = time.perf_counter()
        states, masks = sample_final_states(model, int(data_opts["eval_samples"]),
                                            torch.Generator().manual_seed(seed + 1), int(data_opts["eval_batch"]))
        designs = model.decode(states, masks)
        metrics.update({
            **sample_quality(model.process, states, masks, set(data.smiles)),
            "properties": property_figures(designs, score_in_process),
            "posebusters": posebusters_figures(designs, energy=bool(data_opts["posebusters_energy"])),
            "dataset_seconds": round(data_seconds, 1), "eval_seconds": round(time.perf_counter() - eval_started, 1),
            "dataset_molecules": len(data), "dataset": data.record, "options": opts, "data": data_opts,
            "seed": seed, "torch_threads": torch.get_num_threads(),
        })
        log("metrics " + json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}))
        log("posebusters " + json.dumps(metrics["posebusters"]))
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
        """The sample_quality figures of the final designs with the reference's as initial
        values, the median QED, SA and MMFF strain of the valid designs (scored through the
        evaluation runtime), and their PoseBusters pass rate without the energy-ratio check
        (the slow one: scripts/eval_molecule_3d.py runs it)."""
        process = evaluation.model.process
        after, before = (sample_quality(process, d.states, d.mask) for d in (evaluation.final, evaluation.reference))
        metrics = [Metric(key, after[key], before[key], **QUALITY_METRICS[key]) for key in QUALITY_METRICS]
        props_after, props_before = (property_figures(d.designs, evaluation.oracles.values)
                                     for d in (evaluation.final, evaluation.reference))
        metrics += [Metric(f"{key}_median", props_after[key]["median"], props_before[key]["median"], **description)
                    for key, description in PROPERTY_METRICS.items()]
        busted_after, busted_before = (posebusters_figures(d.designs, energy=False)
                                       for d in (evaluation.final, evaluation.reference))
        metrics.append(Metric("posebusters_pass", busted_after["pass_rate"], busted_before["pass_rate"],
                              label="PoseBusters pass rate (intramolecular checks but the energy ratio)",
                              units="fraction of valid designs", higher_is_better=True))
        return DomainSummary(metrics)

    def sample_metrics(self, model: DiffusionModel, final_states: torch.Tensor, mask: torch.Tensor | None,
                       checkpoint: Path) -> dict[str, Any]:
        """`vardbio sample`'s sample_metrics.json: sample_quality of the samples with novelty
        against the training SMILES the checkpoint records (None when it records none),
        the property distributions of the valid designs, the PoseBusters intramolecular checks
        (posebusters_figures, energy check included) and the sampling steps."""
        extra = read_checkpoint(checkpoint).get("extra", {})
        metrics = sample_quality(model.process, final_states, mask, training_smiles(extra))
        designs = model.decode(final_states, mask)
        metrics["properties"] = property_figures(designs, score_in_process)
        metrics["posebusters"] = posebusters_figures(designs)
        metrics["sampling_steps"] = model.num_steps
        return metrics


plugin = MoleculePlugin()
