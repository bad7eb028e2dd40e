"""The 3D molecule domain (joint coordinates, atom types and bonds): equivariance and
invariance (vardbio.testing.assert_equivariant with a joint state), the encode/decode round
trip, dataset cache, design files, metrics, `vardbio sample`, pretraining (the model
contract runs in tests/test_contracts.py)."""
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
from vardbio_models.molecule import DatasetParams, DecodeFailure, build_dataset, canonical, plugin, sample_quality
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


def _random_state(model, n, seed, k=None):
    """Prior draws moved k reverse steps (default: half way) by the model itself, so atoms
    and bonds are a mix of revealed types and mask tokens; coordinates fresh from the prior
    (an untrained denoiser's steps scatter them), spread to a molecule-like scale."""
    g = torch.Generator().manual_seed(seed)
    layout = model.layout(n, g)
    x = model.process.prior_sample(layout.shape, layout.mask, g)
    with torch.no_grad():
        for j in range(model.num_steps // 2 if k is None else k):
            x = model.step(x, j, layout.mask).sample(g)
    fresh = model.process.prior_sample(layout.shape, layout.mask, g)
    model.process.split(x)["coords"].copy_(2.0 * model.process.split(fresh)["coords"])
    return x, layout.mask


def test_denoiser_is_equivariant(model):
    """ε̂ of the coordinates rotates with the input (and ignores translations), atom and bond
    logits are invariant, and atoms may come in any order (bonds follow their pairs)."""
    torch.manual_seed(1)
    x, mask = _random_state(model, 4, seed=3)
    parts = model.process.split(x)
    assert (parts["bonds"][..., -1] < 1).any() and (parts["bonds"][..., -1] > 0).any()
    t = torch.rand(4)
    assert_equivariant(model.denoiser, (x, t, mask), mask=2, permute=True, output="equivariant",
                       output_translated=(), joint=model.process)


def test_denoiser_bond_logits_are_symmetric_and_read_the_bonds(model):
    """Each pair's logits read that pair's noisy bond type: changing one pair's bond changes
    its logits (the permutation test above then makes them a function of the unordered pair)."""
    x, mask = _random_state(model, 2, seed=6, k=0)
    with torch.no_grad():
        before = model.process.split_output(model.denoiser(x, torch.full((2,), 0.5), mask))["bonds"]
        changed = x.clone()
        model.process.split(changed)["bonds"][0, 0] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])
        after = model.process.split_output(model.denoiser(changed, torch.full((2,), 0.5), mask))["bonds"]
    assert (after[0, 0] - before[0, 0]).abs().max() > 1e-4
    assert torch.equal(after[1], before[1])


@pytest.mark.parametrize("value_input,options", [("noisy", {"hidden": 16, "layers": 2}),
                                                  ("denoised", {"hidden": 16, "layers": 2}),
                                                  ("noisy", {"kind": "denoiser"})])
def test_value_head_is_invariant(model, value_input, options):
    """Invariant to rotations, translations and atom permutations, on hard one-hots and on
    the relaxed one-hots of VARD's Gumbel-softmax draws; a fresh trunk or the denoiser's."""
    reference = model.frozen_copy()
    head = with_value_input(plugin.value_head(reference, options), value_input, reference)
    g = torch.Generator().manual_seed(7)
    for p in head.parameters():  # move away from the tiny initial coordinate weights
        p.data.add_(0.1 * torch.randn(p.shape, generator=g))
    x, mask = _random_state(model, 5, seed=4)
    relaxed = x.clone()
    for name in ("atoms", "bonds"):
        part = model.process.split(relaxed)[name]
        part.copy_(torch.softmax(part * 3 + torch.randn(part.shape, generator=g), -1))
    t = torch.linspace(0.05, 0.6, 5)  # x̂_0 = (x_t - sqrt(1 - ᾱ) ε̂) / sqrt(ᾱ) grows without bound as t -> 1
    assert head(x, t, mask).shape == (5,)
    head, reference = head.double(), reference.double()
    for state in (x, relaxed):
        assert_equivariant(head, (state.double(), t, mask), mask=2, permute=True, joint=model.process)


def test_denoiser_value_head_starts_from_the_trunk_and_bad_options_are_named(model):
    head = plugin.value_head(model, {"kind": "denoiser"})
    trunk = model.denoiser.trunk.state_dict()
    copied = head.network.trunk.state_dict()
    assert copied.keys() == trunk.keys() and all(torch.equal(copied[k], trunk[k]) for k in trunk)
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(head.network.trunk.parameters(),
                                                             model.denoiser.trunk.parameters()))
    with pytest.raises(ValueError, match="unknown molecule value-head kind 'gnn'"):
        plugin.value_head(model, {"kind": "gnn"})
    with pytest.raises(ValueError, match=r"options \['hidden'\] for kind 'denoiser'; valid: none"):
        plugin.value_head(model, {"kind": "denoiser", "hidden": 8})


def test_rollout_keeps_zero_centre_of_mass_and_padding(model):
    traj = model.rollout(3, torch.Generator().manual_seed(0))
    coords = model.process.split(traj.final)["coords"]
    m = traj.mask.unsqueeze(-1).float()
    assert torch.allclose((coords * m).sum(1), torch.zeros(3, 3), atol=1e-4)
    assert (coords[~traj.mask] == 0).all()
    atoms = model.process.split(traj.final)["atoms"]
    assert (atoms[traj.mask][:, -1] == 0).all(), "every real atom is revealed at the end"


def test_encode_decode_round_trips_training_molecules(model, dataset):
    """A training molecule encoded (kekulised bonds, atom types) and decoded from the state
    is the same canonical SMILES, with its coordinates as the conformer, also rotated."""
    assert len(dataset) == len(SMILES)
    x0 = dataset.states(torch.arange(len(dataset)))
    designs = model.decode(x0, dataset.mask)
    assert all(isinstance(d, Chem.Mol) for d in designs), designs
    assert [canonical(d) for d in designs] == dataset.smiles
    for d, pos, m in zip(designs, dataset.positions, dataset.mask):
        assert any(a.GetAtomicNum() == 1 for a in d.GetAtoms())  # explicit H in 3D for the 3D oracles
        heavy = torch.as_tensor(d.GetConformer().GetPositions()[: int(m.sum())], dtype=torch.float32)
        assert torch.allclose(heavy, pos[m], atol=1e-4)
    rot = random_rotations(len(dataset), torch.Generator().manual_seed(0))
    turned = dataset.states(torch.arange(len(dataset)), torch.einsum("bij,bnj->bni", rot, dataset.positions))
    assert [canonical(d) for d in model.decode(turned, dataset.mask)] == dataset.smiles


def test_charged_atoms_round_trip():
    """Formal charges are atom types: a nitro group decodes back to itself."""
    graph = mol_mod.featurise(mol_mod.embed("O=[N+]([O-])c1ccccc1", 0, 50), 20)
    assert ("N", 1) in [mol_mod.ATOM_TYPES[a] for a in graph.atoms]
    assert canonical(mol_mod.build_molecule(graph).mol) == "O=[N+]([O-])c1ccccc1"
    with pytest.raises(ValueError, match="vocabulary"):
        mol_mod.featurise(mol_mod.embed("CCBr", 0, 50), 20)


def test_training_molecules_score_as_stable_and_valid(model, dataset):
    x0 = dataset.states(torch.arange(len(dataset)))
    q = sample_quality(model.process, x0, dataset.mask, set(dataset.smiles))
    assert q["atom_stability"] == 1.0 and q["molecule_stability"] == 1.0
    assert q["validity"] == 1.0 and q["connected_validity"] == 1.0 and q["uniqueness"] == 1.0
    assert q["novelty"] == 0.0
    assert 0.0 < q["diversity"] <= 1.0


def test_broken_samples_are_invalid_with_a_reason_and_score_nan(model, dataset):
    """An over-valent carbon fails sanitisation; a removed bond splits a molecule into two
    fragments (valid, not connected); both score NaN with their reason."""
    x0 = dataset.states(torch.arange(2)).clone()
    bonds = model.process.split(x0)["bonds"]
    n = dataset.mask.shape[1]
    i, j = torch.triu_indices(n, n, 1)
    # molecule 0 (CC(=O)Nc1nccs1): its first carbon bonded by triple bonds to every other atom
    first = (i == 0) & dataset.mask[0][j]
    bonds[0, first] = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])
    # molecule 1 (CS(=O)(=O)c1ccc(Cl)cc1): the methyl-S bond removed
    graph = mol_mod.state_graphs(model.process, x0[1:], dataset.mask[1:2])[0]
    pair = int(((i == 0) & (j == int(graph.bonds[0].nonzero()[0]))).nonzero()[0])
    bonds[1, pair] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
    designs = model.decode(x0, dataset.mask[:2])
    assert isinstance(designs[0], DecodeFailure) and "sanitisation" in designs[0].reason
    assert isinstance(designs[1], DecodeFailure) and designs[1].reason == "2 fragments"
    result = QEDOracle().score(designs)
    assert np.isnan(result.values).all() and all(result.reasons)
    q = sample_quality(model.process, x0, dataset.mask[:2])
    assert q["validity"] == 0.5 and q["connected_validity"] == 0.0 and q["atom_stability"] < 1.0
    assert q["failure_reasons"] == {"sanitisation failed": 1, "fragments": 1}


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
    assert layout.shape == (3000, model.process.state_size)
    assert model.process.state_size == 20 * 3 + 20 * (len(mol_mod.ATOM_TYPES) + 1) + 190 * 5
    assert np.abs(found - counts / counts.sum()).max() < 0.04
    assert set(np.unique(sizes)) == set(np.flatnonzero(counts))


def test_write_designs_sdf_with_scores(model, dataset, tmp_path):
    x0 = dataset.states(torch.arange(3)).clone()
    model.process.split(x0)["bonds"][2] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])  # no bonds: not a molecule
    designs = model.decode(x0, dataset.mask[:3])
    rewards = QEDOracle().score(designs).values
    files = plugin.write_designs(designs, rewards, tmp_path / "designs_final")
    sdf = [p for p in files if p.suffix == ".sdf"][0]
    mols = [m for m in Chem.SDMolSupplier(str(sdf), removeHs=False)]
    assert len(mols) == 2 and [canonical(m) for m in mols] == dataset.smiles[:2]
    assert [m.GetDoubleProp("reward") for m in mols] == pytest.approx(rewards[:2].tolist())
    assert mols[0].GetConformer().Is3D()
    table = [p for p in files if p.suffix == ".csv"][0].read_text().splitlines()
    assert len(table) == 4 and table[3].split(",")[2] == "nan" and "fragments" in table[3].split(",", 3)[3]


def test_summary_reports_validity_properties_and_tanimoto_diversity(model, dataset):
    from vardbio.model.evaluation import EvaluatedDesigns, Evaluation, EvaluationOracles
    from vardbio.reward import Reward, RewardTerm

    x0 = dataset.states(torch.arange(len(dataset)))
    noise = model.process.prior_sample(tuple(x0.shape), dataset.mask, torch.Generator().manual_seed(0))
    model.process.split(noise)["atoms"].copy_(model.process.split(x0)["atoms"])
    model.process.split(noise)["bonds"][..., :] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])  # atoms, no bonds
    reward = Reward([RewardTerm(QEDOracle())])
    before, after = (EvaluatedDesigns.score(model, states, dataset.mask, reward) for states in (noise, x0))
    oracles = EvaluationOracles(reward.evaluator)
    extras = plugin.summarize(Evaluation(model, before, after, reward.terms, None, oracles)).summary_entries()
    assert extras["connected_validity"] == 1.0 and extras["connected_validity_initial"] == 0.0
    assert extras["validity_initial"] == 1.0  # single atoms sanitise
    assert 0.0 < extras["diversity"] <= 1.0
    assert extras["domain_metrics"]["diversity"] == {
        "label": "diversity (mean pairwise Tanimoto distance, Morgan radius 2)", "units": "Tanimoto distance (0-1)",
        "higher_is_better": True}
    assert 0.3 < extras["qed_median"] < 1.0 and 1.0 < extras["sa_median"] < 5.0
    assert 0.0 <= extras["strain_median"] < 2.0  # MMFF-relaxed training conformers
    assert np.isnan(extras["qed_median_initial"])


def test_unknown_options_are_named():
    with pytest.raises(ValueError, match="hiddn"):
        plugin.build({"hiddn": 3})
    with pytest.raises(ValueError, match="bonds_weight"):
        plugin.build({"bonds_weight": -1.0})


def test_shipped_checkpoint_loads_records_its_training_and_is_equivariant():
    from vardbio.model.checkpoint import read_checkpoint

    path = plugin.default_checkpoint({})
    assert path.is_file() and path.stat().st_size < 5_000_000
    metrics = read_checkpoint(path)["extra"]["pretrain_metrics"]
    assert metrics["samples"] > 0 and metrics["train_steps"] > 0
    model = plugin.load({"sampling_steps": 10})
    traj = model.rollout(2, torch.Generator().manual_seed(0))
    assert len(model.decode(traj.final, traj.mask)) == 2
    x, mask = _random_state(model, 3, seed=5)
    # in float64: the trained weights' float32 round-off alone reaches ~1e-4 after a 5 Å shift
    assert_equivariant(model.denoiser.double(), (x.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), mask),
                       mask=2, permute=True, output="equivariant", output_translated=(), trials=1,
                       joint=model.process, atol=1e-6)


def test_the_entry_point_is_the_package_plugin():
    from vardbio import registry
    from vardbio_models.molecule.plugin import MoleculePlugin

    assert registry.load("model", "molecule") is plugin and isinstance(plugin, MoleculePlugin)


def test_vardbio_sample_writes_the_sample_quality_of_a_checkpoint(tmp_path, capsys):
    """`vardbio sample model=molecule`: designs plus sample_metrics.json (stability,
    validity, connected validity, novelty against the checkpoint's training set, property
    distributions), from rollouts of batch_size chains."""
    from vardbio.cli import main
    from vardbio_models.molecule import sample_final_states, training_smiles
    from vardbio.model.checkpoint import read_checkpoint

    out = tmp_path / "eval"
    assert main(["sample", "model=molecule", "n=6", "seed=1", "batch_size=4", "+model.options.sampling_steps=6",
                 f"out_dir={out}"]) == 0
    assert "atom_stability" in capsys.readouterr().out
    metrics = json.loads((out / "sample_metrics.json").read_text())
    assert metrics["samples"] == 6 and metrics["sampling_steps"] == 6 and metrics["seed"] == 1
    assert {"connected_validity", "novelty", "failure_reasons", "properties"} <= set(metrics)
    assert (out / "designs.csv").is_file()
    model = plugin.load({"sampling_steps": 6})
    states, masks = sample_final_states(model, 6, torch.Generator().manual_seed(1), 4)
    training = training_smiles(read_checkpoint(plugin.default_checkpoint({}))["extra"])
    expected = json.dumps(sample_quality(model.process, states, masks, training), sort_keys=True)
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
    assert set(metrics["properties"]) == {"qed", "sa", "strain"}
    config = metrics["pretrain_config"]
    assert config["minutes"] == 1.0 and config["final_lr_fraction"] == 0.5 and config["log_every"] == 1
    assert "metrics" in out.with_suffix(".log").read_text()
    loaded = plugin.load({"smiles_file": str(smiles_file)}, out)
    assert loaded.denoiser.trunk.edge_embed.out_features == 16


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


def test_posebusters_figures_pass_good_conformers_and_name_the_failed_check(model, dataset):
    """Decoded training molecules (ETKDG + MMFF conformers) pass every intramolecular check,
    energy included; one with a bond stretched by 80 % fails `bond_lengths`; a decoding
    failure counts among all samples only."""
    from vardbio_models.molecule import posebusters_figures

    designs = model.decode(dataset.states(torch.arange(3)), dataset.mask[:3])
    stretched = Chem.Mol(designs[1])
    bond = next(b for b in stretched.GetBonds() if b.GetBeginAtom().GetAtomicNum() > 1
                and b.GetEndAtom().GetAtomicNum() > 1)
    conf = stretched.GetConformer()
    i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
    a, b = np.array(conf.GetAtomPosition(i)), np.array(conf.GetAtomPosition(j))
    conf.SetAtomPosition(j, (b + 0.8 * (b - a)).tolist())
    good = posebusters_figures(designs)
    assert good["checked"] == 3 and good["pass_rate"] == 1.0 and good["energy_check"]
    assert {"bond_lengths", "bond_angles", "internal_steric_clash", "aromatic_ring_flatness",
            "internal_energy"} <= set(good["checks"])
    out = posebusters_figures(designs + [stretched, DecodeFailure("no atoms")], energy=False)
    assert out["samples"] == 5 and out["checked"] == 4 and "internal_energy" not in out["checks"]
    assert out["pass_rate"] == 0.75 and out["pass_rate_all_samples"] == 0.6
    assert out["checks"]["bond_lengths"] == 0.75 and out["checks"]["sanitization"] == 1.0
    none = posebusters_figures([DecodeFailure("no atoms")])
    assert none["checked"] == 0 and np.isnan(none["pass_rate"]) and none["pass_rate_all_samples"] == 0.0


def test_eval_molecule_3d_script_on_tiny_checkpoints(smiles_file, tmp_path):
    """scripts/eval_molecule_3d.py on two random-weight checkpoints: a final one recording
    its training set and step count, a periodic one (_step<N>, no record) compared with the
    former's training set; JSON, learning curve and design files; seeded, so the same
    samples as sample_final_states and sample_quality give."""
    import importlib.util

    from vardbio.model.checkpoint import save_model
    from vardbio_models.molecule import sample_final_states, training_smiles

    spec = importlib.util.spec_from_file_location(
        "eval_molecule_3d", Path(__file__).resolve().parents[1] / "scripts" / "eval_molecule_3d.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    torch.manual_seed(0)
    tiny = plugin.build({**TINY, "smiles_file": str(smiles_file)})
    record = DatasetParams(smiles_file=str(smiles_file), max_molecules=len(SMILES)).record()
    final, periodic = tmp_path / "tiny.pt", tmp_path / "tiny_step3.pt"
    save_model(tiny, final, pretrain_metrics={"total_train_steps": 7, "dataset": record})
    save_model(tiny, periodic, pretrain_progress={"step": 3, "seconds": 1.0})
    out, figure, sdf = tmp_path / "eval.json", tmp_path / "curve.png", tmp_path / "designs.sdf"
    results = script.main([str(periodic), str(final), "--n", "5", "--batch", "3", "--seed", "2",
                           "--sampling-steps", "6", "--no-energy", "--out", str(out), "--figure", str(figure),
                           "--sdf", str(sdf)])
    saved = json.loads(out.read_text())["checkpoints"]
    assert [r["step"] for r in saved] == [3, 7] and [r["training_smiles_from"] for r in saved] == [str(final)] * 2
    metrics = saved[1]["metrics"]
    assert metrics["samples"] == 5 and "novelty" in metrics and set(metrics["properties"]) == {"qed", "sa", "strain"}
    assert metrics["posebusters"]["samples"] == 5 and "posebusters_pass_all_samples" in metrics
    assert saved[0]["training_set"]["molecules"] == len(SMILES) and 0 < saved[0]["training_set"]["qed"]["mean"] < 1
    assert figure.stat().st_size > 0 and sdf.with_suffix(".csv").is_file()
    loaded = plugin.load({"sampling_steps": 6}, final)
    states, masks = sample_final_states(loaded, 5, torch.Generator().manual_seed(2), 3)
    expected = sample_quality(loaded.process, states, masks, training_smiles({"pretrain_metrics": {"dataset": record}}))
    assert results[1]["metrics"]["atom_stability"] == expected["atom_stability"]
    assert results[1]["metrics"]["failure_reasons"] == expected["failure_reasons"]
    assert plugin.sample_metrics(loaded, states, masks, final)["posebusters"]["samples"] == 5
