"""The 3D molecule domain: equivariance (vardbio.testing.assert_equivariant), decoding, dataset
cache, design files, sample metrics through `vardbio sample`, pretraining (the model contract
runs in tests/test_contracts.py)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem

from vardbio.geometry import random_rotations
from vardbio.testing import assert_equivariant
from vardbio.value import with_value_input
from vardbio_models import molecule as mol_mod
from vardbio_models.molecule import (
    DatasetParams, DecodeFailure, build_dataset, canonical, decode_molecules, encode_state, plugin,
    sample_quality,
)
from vardbio_oracles.chem import QEDOracle

SMILES = ["CC(=O)Nc1nccs1", "CS(=O)(=O)c1ccc(Cl)cc1", "O=C(O)c1ccccc1F", "CCCS(=O)c1ccccc1",
          "N#Cc1ccc(OC2CCNC2)cc1", "Cn1ccc2ccccc21"]
TINY = {"hidden": 16, "layers": 2, "sampling_steps": 6}


@pytest.fixture(scope="module")
def smiles_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mol") / "tiny.smi"
    path.write_text("# test molecules\n" + "\n".join(SMILES) + "\n")
    return path


@pytest.fixture(scope="module")
def dataset(smiles_file, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache") / "tiny.pt"
    return build_dataset(DatasetParams(smiles_file=str(smiles_file), max_molecules=len(SMILES)), cache)


@pytest.fixture(scope="module")
def model(smiles_file):
    torch.manual_seed(0)
    return plugin.build({**TINY, "smiles_file": str(smiles_file)})


def _random_state(model, n, seed):
    g = torch.Generator().manual_seed(seed)
    layout = model.layout(n, g)
    x = model.process.prior_sample(layout.shape, layout.mask, g)
    # a clean-ish molecule-like scale: spread coordinates, sharpen the features
    x[..., :3] *= 2.0
    return x, layout.mask


def test_denoiser_is_equivariant(model):
    """ε̂ of the coordinates rotates with the input (and ignores translations), the atom
    features' part is invariant, and atoms may come in any order."""
    torch.manual_seed(1)
    x, mask = _random_state(model, 4, seed=3)
    t = torch.rand(4)
    assert_equivariant(model.denoiser, (x, t, mask), mask=2, permute=True, output="equivariant",
                       output_translated=())


def test_shipped_denoiser_is_equivariant():
    model = plugin.load({"sampling_steps": 10})
    x, mask = _random_state(model, 3, seed=5)
    assert_equivariant(model.denoiser, (x, torch.tensor([0.1, 0.5, 0.9]), mask), mask=2, permute=True,
                       output="equivariant", output_translated=(), trials=1)


@pytest.mark.parametrize("value_input", ["noisy", "denoised"])
@pytest.mark.parametrize("kind", ["egnn", "set"])
def test_value_head_is_invariant(model, kind, value_input):
    reference = model.frozen_copy()
    head = with_value_input(plugin.value_head(model, {"kind": kind, "hidden": 16, "layers": 2}), value_input,
                            reference)
    for p in head.parameters():  # move away from the tiny initial coordinate weights
        p.data.add_(0.1 * torch.randn_like(p))
    x, mask = _random_state(model, 5, seed=4)
    t = torch.rand(5)
    assert head(x, t, mask).shape == (5,)
    if value_input == "denoised":  # x̂_0 = (x_t - sqrt(1 - ᾱ) ε̂) / sqrt(ᾱ) magnifies float32 rounding up to
        head, reference, x = head.double(), reference.double(), x.double()  # 1/sqrt(ᾱ) ≈ 100 times
    assert_equivariant(head, (x, t, mask), mask=2, permute=True)  # also: it depends on the geometry


def test_rollout_keeps_zero_centre_of_mass_and_padding(model):
    traj = model.rollout(3, torch.Generator().manual_seed(0))
    m = traj.mask.unsqueeze(-1).float()
    assert torch.allclose((traj.final[..., :3] * m).sum(1), torch.zeros(3, 3), atol=1e-4)
    assert (traj.final[~traj.mask] == 0).all()


def test_decode_round_trips_training_molecules(dataset):
    assert len(dataset) == len(SMILES)
    x0 = dataset.states(torch.arange(len(dataset)))
    designs = decode_molecules(x0, dataset.mask)
    assert all(isinstance(d, Chem.Mol) for d in designs), designs
    assert [canonical(d) for d in designs] == dataset.smiles
    for d in designs:  # explicit hydrogens with 3D coordinates, as the 3D oracles want
        assert any(a.GetAtomicNum() == 1 for a in d.GetAtoms())
        assert d.GetConformer().Is3D()
    rot = random_rotations(len(dataset), torch.Generator().manual_seed(0))
    turned = encode_state(torch.einsum("bij,bnj->bni", rot, dataset.positions), dataset.elements,
                          dataset.hcounts, dataset.mask)
    assert [canonical(d) for d in decode_molecules(turned, dataset.mask)] == dataset.smiles


def test_training_molecules_score_as_stable_and_valid(dataset):
    x0 = dataset.states(torch.arange(len(dataset)))
    q = sample_quality(x0, dataset.mask, set(dataset.smiles))
    assert q["atom_stability"] == 1.0 and q["molecule_stability"] == 1.0
    assert q["validity"] == 1.0 and q["valid_fraction"] == 1.0 and q["uniqueness"] == 1.0
    assert q["novelty"] == 0.0
    assert 0.0 < q["diversity"] <= 1.0


def test_broken_sample_is_invalid_with_a_reason_and_scores_nan(dataset):
    x0 = dataset.states(torch.arange(2)).clone()
    g = torch.Generator().manual_seed(0)  # atoms scattered in a 1 Å ball: no sensible bonds
    x0[0, :, :3] = 0.5 * torch.randn(x0.shape[1], 3, generator=g) * dataset.mask[0].unsqueeze(-1)
    x0[1, :, :3] *= 3.0  # atoms pulled apart: fragments / open shells
    designs = decode_molecules(x0, dataset.mask[:2])
    assert all(isinstance(d, DecodeFailure) and d.reason for d in designs), designs
    result = QEDOracle().score(designs)
    assert np.isnan(result.values).all() and all(result.reasons)
    q = sample_quality(x0, dataset.mask[:2])
    assert q["valid_fraction"] == 0.0 and sum(q["failure_reasons"].values()) == 2


def test_dataset_cache_is_rebuilt_when_parameters_change(smiles_file, tmp_path):
    cache = tmp_path / "cache.pt"
    messages = []
    a = build_dataset(DatasetParams(smiles_file=str(smiles_file), max_molecules=2), cache, messages.append)
    again = build_dataset(DatasetParams(smiles_file=str(smiles_file), max_molecules=2), cache, messages.append)
    assert messages == [] and again.smiles == a.smiles
    b = build_dataset(DatasetParams(smiles_file=str(smiles_file), max_molecules=3), cache, messages.append)
    assert len(b) == 3 and len(messages) == 1 and "rebuilding" in messages[0]
    assert torch.load(cache, weights_only=False)["record"]["max_molecules"] == 3
    c = build_dataset(DatasetParams(smiles_file=str(smiles_file), max_molecules=3, mmff_iterations=50),
                      cache, messages.append)
    assert len(messages) == 2 and c.record["mmff_iterations"] == 50


def test_layout_samples_atom_counts_from_the_histogram(model, smiles_file):
    counts = np.bincount([Chem.MolFromSmiles(s).GetNumAtoms() for s in SMILES], minlength=21)
    layout = model.layout(3000, torch.Generator().manual_seed(0))
    sizes = layout.mask.sum(1).numpy()
    found = np.bincount(sizes, minlength=21) / len(sizes)
    assert layout.shape == (3000, 20, mol_mod.NUM_FEATURES)
    assert np.abs(found - counts / counts.sum()).max() < 0.04
    assert set(np.unique(sizes)) == set(np.flatnonzero(counts))


def test_write_designs_sdf_with_scores(dataset, tmp_path):
    x0 = dataset.states(torch.arange(3)).clone()
    x0[2, :, :3] *= 3.0  # atoms pulled apart: not a molecule
    designs = decode_molecules(x0, dataset.mask[:3])
    rewards = QEDOracle().score(designs).values
    files = plugin.write_designs(designs, rewards, tmp_path / "designs_final")
    sdf = [p for p in files if p.suffix == ".sdf"][0]
    mols = [m for m in Chem.SDMolSupplier(str(sdf), removeHs=False)]
    assert len(mols) == 2
    assert [m.GetDoubleProp("reward") for m in mols] == pytest.approx(rewards[:2].tolist())
    assert mols[0].GetConformer().Is3D()
    table = [p for p in files if p.suffix == ".csv"][0].read_text().splitlines()
    assert len(table) == 4 and table[3].split(",")[2] == "nan" and table[3].split(",", 3)[3]


def test_summary_reports_validity_and_tanimoto_diversity(model, dataset):
    from vardbio.model.evaluation import EvaluatedDesigns, Evaluation, EvaluationOracles
    from vardbio.reward import Reward, RewardTerm

    x0 = dataset.states(torch.arange(len(dataset)))
    noise = model.process.prior_sample(tuple(x0.shape), dataset.mask, torch.Generator().manual_seed(0))
    reward = Reward([RewardTerm(QEDOracle())])
    before, after = (EvaluatedDesigns.score(model, states, dataset.mask, reward) for states in (noise, x0))
    extras = plugin.summarize(Evaluation(model, before, after, reward.terms, None,
                                         EvaluationOracles(reward.evaluator))).summary_entries()
    assert extras["valid_fraction"] == 1.0 and extras["valid_fraction_initial"] < 1.0
    assert 0.0 < extras["diversity"] <= 1.0
    assert extras["domain_metrics"]["diversity"] == {
        "label": "diversity (mean pairwise Tanimoto distance, Morgan radius 2)", "units": "Tanimoto distance (0-1)",
        "higher_is_better": True}


def test_unknown_options_are_named():
    with pytest.raises(ValueError, match="hiddn"):
        plugin.build({"hiddn": 3})


def test_hydrogen_repair_is_optional_and_reported(dataset):
    x0 = dataset.states(torch.arange(len(dataset))).clone()
    h = slice(3 + len(mol_mod.ELEMENTS), None)
    x0[0, :, h] = 0.0
    x0[0, :, h.start] = mol_mod.FEATURE_SCALE  # every atom predicted with 0 hydrogens
    x0[0] *= dataset.mask[0].unsqueeze(-1)
    strict = decode_molecules(x0, dataset.mask)
    repaired = decode_molecules(x0, dataset.mask, repair=True)
    assert isinstance(strict[0], DecodeFailure) and isinstance(repaired[0], Chem.Mol)
    assert [canonical(m) for m in repaired[1:]] == dataset.smiles[1:]
    q = sample_quality(x0, dataset.mask, repair=True)
    assert q["valid_fraction"] == 1.0 and q["repaired"] == pytest.approx(1 / len(SMILES))
    assert q["molecule_stability"] == pytest.approx(1 - 1 / len(SMILES))
    assert sample_quality(x0, dataset.mask)["valid_fraction"] == pytest.approx(1 - 1 / len(SMILES))
    model = plugin.build({**TINY, "smiles_file": str(dataset.record["smiles_file"]), "repair_hydrogens": True})
    assert isinstance(model.decode(x0, dataset.mask)[0], Chem.Mol)


def test_shipped_checkpoint_loads_and_records_its_training():
    from vardbio.model.checkpoint import read_checkpoint

    path = plugin.default_checkpoint({})
    assert path.is_file() and path.stat().st_size < 5_000_000
    metrics = read_checkpoint(path)["extra"]["pretrain_metrics"]
    assert metrics["samples"] == 1000 and metrics["train_steps"] > 0
    model = plugin.load({"sampling_steps": 10})
    traj = model.rollout(2, torch.Generator().manual_seed(0))
    assert len(model.decode(traj.final, traj.mask)) == 2


def test_the_entry_point_is_the_package_plugin():
    from vardbio import registry
    from vardbio_models.molecule.plugin import MoleculePlugin

    assert registry.load("model", "molecule") is plugin and isinstance(plugin, MoleculePlugin)


def test_vardbio_sample_writes_the_sample_quality_of_a_checkpoint(tmp_path, capsys):
    """`vardbio sample model=molecule` (what `python -m vardbio_models.molecule evaluate` was):
    designs plus sample_metrics.json, strict, covalent-radii and hydrogen-repair figures with
    novelty against the checkpoint's training set, from rollouts of batch_size chains."""
    from vardbio.cli import main
    from vardbio_models.molecule import quality_report, sample_final_states, training_smiles
    from vardbio.model.checkpoint import read_checkpoint

    out = tmp_path / "eval"
    assert main(["sample", "model=molecule", "n=6", "seed=1", "batch_size=4", "+model.options.sampling_steps=6",
                 f"out_dir={out}"]) == 0
    assert "atom_stability" in capsys.readouterr().out
    metrics = json.loads((out / "sample_metrics.json").read_text())
    assert metrics["samples"] == 6 and metrics["sampling_steps"] == 6 and metrics["seed"] == 1
    assert {"radii_connectivity", "with_hydrogen_repair", "novelty", "failure_reasons"} <= set(metrics)
    assert (out / "designs.csv").is_file()
    model = plugin.load({"sampling_steps": 6})
    states, masks = sample_final_states(model, 6, torch.Generator().manual_seed(1), 4)
    training = training_smiles(read_checkpoint(plugin.default_checkpoint({}))["extra"])
    expected = json.dumps(quality_report(states, masks, training), sort_keys=True)
    assert json.dumps({k: metrics[k] for k in json.loads(expected)}, sort_keys=True) == expected


def test_pretrain_runs_the_shared_loop_on_a_tiny_set(smiles_file, tmp_path):
    """A few steps of pretraining (the older option names still read), then the checkpoint
    loads with its metrics and learning curve."""
    out = tmp_path / "mol.pt"
    metrics = plugin.pretrain({**TINY, "smiles_file": str(smiles_file), "max_molecules": len(SMILES),
                               "train_minutes": 1.0, "max_train_steps": 3, "lr_final": 0.5, "log_every": 1,
                               "eval_samples": 4, "eval_batch": 2, "dataset_cache": str(tmp_path / "c.pt")},
                              out, seed=0)
    assert metrics["train_steps"] == 3 and len(metrics["learning_curve"]) == 3 and metrics["samples"] == 4
    config = metrics["pretrain_config"]
    assert config["minutes"] == 1.0 and config["final_lr_fraction"] == 0.5 and config["log_every"] == 1
    assert "metrics" in out.with_suffix(".log").read_text()
    assert plugin.load({"smiles_file": str(smiles_file)}, out).denoiser.trunk.layers[0].phi_e[1].in_features == 16


@pytest.mark.slow
def test_molecule_qed_campaign_runs_end_to_end(tmp_path):
    """A tiny VARD campaign on the shipped model: designs files, validity and diversity."""
    import json

    from vardbio.campaign.runner import run_campaign
    from vardbio.cli import compose_config

    summary = run_campaign(compose_config("config", [
        "campaign=molecule_qed", f"out_dir={tmp_path}", "campaign.iterations=2",
        "campaign.eval_samples=32", "algorithm.value_samples=64", "algorithm.batch_size=8",
        "algorithm.value.epochs=2", "progress=false"]))
    assert (tmp_path / "designs_final.csv").is_file() and (tmp_path / "designs_initial.csv").is_file()
    assert 0.0 <= summary["valid_fraction"] <= 1.0 and "diversity_initial" in summary
    assert summary["value_nan_dropped"] > 0  # invalid designs were dropped, not scored 0
    assert json.loads((tmp_path / "summary.json").read_text())["campaign"] == "molecule_qed"
