"""The protein-backbone plugin: equivariance and invariance to 1e-4 (vardbio.testing.
assert_equivariant), encoding and bad input, PDB output, geometry figures, pretraining (the
model contract runs in tests/test_contracts.py with the plugin's test_options)."""
import math

import numpy as np
import pytest
import torch

from vardbio import registry
from vardbio.model.evaluation import score_in_process
from vardbio.testing import assert_equivariant
from vardbio.value import with_value_input
from vardbio_models import protein_backbone as pb

TINY = pb.plugin.test_options[0]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def _fragments(n: int = 3, length: int = 10) -> torch.Tensor:
    return pb.encode_backbones(pb.read_fragments()[:n, :length])


def test_registered_under_its_entry_point():
    assert registry.load("model", "protein_backbone") is pb.plugin


def test_a_tiny_model_decodes_finite_backbones():
    torch.manual_seed(0)
    model = pb.plugin.build(TINY)
    designs = model.decode(model.rollout(2, torch.Generator().manual_seed(0)).final)
    assert all(d.shape == (10, 4, 3) and np.isfinite(d).all() for d in designs)


def test_denoiser_is_rotation_and_translation_equivariant():
    """x̂_0 rotates all four vectors of a residue with the input and translates its CA block;
    with padding, the padded residues do not matter."""
    torch.manual_seed(0)
    model = pb.plugin.build(TINY)
    x = _fragments() + 0.3 * torch.randn(3, 10, 12)
    t = torch.tensor([0.1, 0.5, 0.9])
    with torch.no_grad():
        assert (model.denoiser(x, t, None) - x).abs().max() > 1e-2, "the denoiser must do something"
    assert_equivariant(model.denoiser, (x, t, None), vectors=4, output="equivariant")
    mask = torch.ones(3, 10)
    mask[1, 7:] = 0
    assert_equivariant(model.denoiser, (x * mask[..., None], t, mask), vectors=4, mask=2, output="equivariant")
    # a whole reverse step's mean commutes with rotations (its noise is isotropic)
    centred = model.process.projection(torch.ones(3, 10))(x)
    assert_equivariant(lambda y: model.step(y, 2, torch.ones(3, 10)).mean, (centred,), vectors=4,
                       translated=(), output="equivariant")


@pytest.mark.parametrize("value_input", ["noisy", "denoised"])
def test_value_head_is_rotation_and_translation_invariant(value_input):
    torch.manual_seed(0)
    model = pb.plugin.build(TINY)
    head = with_value_input(pb.plugin.value_head(model, {"hidden": 16, "layers": 2}), value_input,
                            model.frozen_copy())
    x = _fragments() + 0.3 * torch.randn(3, 10, 12)
    t = torch.tensor([0.2, 0.6, 1.0])
    assert head(x, t, None).shape == (3,)
    assert_equivariant(head, (x, t, None), vectors=4)


def test_encode_decode_round_trip():
    frags = pb.read_fragments()[:3, :10]
    back = pb.decode_states(pb.encode_backbones(frags))
    for a, b in zip(frags, back):
        assert np.abs((a - a[:, 1].mean(0)) - b).max() < 1e-4


def test_bad_backbones_are_clear_errors():
    good = pb.read_fragments()[0, :10]
    with pytest.raises(ValueError, match="missing backbone atoms"):
        pb.encode_backbones([good[:, :3]])  # no O
    holed = good.copy()
    holed[4, 2] = np.nan
    with pytest.raises(ValueError, match="missing or non-finite atoms at residues \\[4\\]"):
        pb.encode_backbones([holed])
    with pytest.raises(ValueError, match="one length"):
        pb.encode_backbones([good, good[:8]])
    with pytest.raises(ValueError, match="cannot make length 13: it was trained on 4 to 12"):
        pb.plugin.build({**TINY, "length": 13})
    with pytest.raises(ValueError, match="longer than the model's max_length 12"):
        pb.plugin.build(TINY).denoiser(torch.zeros(1, 13, 12), torch.ones(1))


def test_pdb_files_parse_back_to_the_same_backbone(tmp_path):
    from vardbio_oracles.structure import backbone_from_pdb

    frags = list(pb.read_fragments()[:2])
    written = pb.plugin.write_designs(frags, np.array([0.5, np.nan]), tmp_path / "designs_final")
    table, pdbs = written[0], written[1:]
    assert len(pdbs) == 2 and table.read_text().splitlines()[0] == "file,length,bond_deviation,angle_deviation,ca_ca_mean,ca_ca_std,reward"
    parsed = backbone_from_pdb(pdbs[0])
    assert parsed.shape == frags[0].shape and np.abs(parsed - frags[0]).max() <= 5e-4
    text = pdbs[0].read_text()
    assert text.startswith("REMARK   1 reward 0.5") and " CA  GLY A   1" in text


def test_geometry_of_real_fragments_is_ideal():
    report = pb.geometry_report(list(pb.read_fragments()[::50]), score_in_process)
    assert report["chain_breaks"] == 0 and report["ca_clashes"] == 0
    assert abs(report["ca_ca_mean"] - 3.80) < 0.03 and report["bond_deviation"] < 0.03
    assert report["angle_deviation"] < 3.0
    assert 0 < report["helix_fraction"] < 1 and math.isfinite(report["diversity"])


def test_sheet_campaign_smoke_run_writes_pdb_files_and_geometry(tmp_path, real_oracle_calls):
    from vardbio.cli import main

    ckpt = tmp_path / "tiny.pt"
    assert main(["pretrain", "model=protein_backbone", f"out={ckpt}", "model.options.steps=2",
                 "+model.options.eval_samples=2", "model.options.hidden=16", "model.options.layers=1",
                 "model.options.sampling_steps=4"]) == 0
    real_oracle_calls.clear()  # the pretraining metrics score outside any campaign
    out = tmp_path / "run"
    assert main(["run", "campaign=protein_sheet", f"out_dir={out}", "progress=false", "report=false",
                 f"campaign.model.checkpoint={ckpt}", "campaign.iterations=2", "campaign.eval_samples=4",
                 "campaign.oracle_budget=24", "campaign.model.options.sampling_steps=4",
                 "algorithm.value_samples=8", "algorithm.batch_size=2", "algorithm.steps_per_update=2"]) == 0
    import json

    summary = json.loads((out / "summary.json").read_text())
    for key in ("sheet_fraction", "sheet_fraction_initial", "ca_clashes", "chain_breaks_initial",
                "bond_deviation", "angle_deviation", "ca_ca_mean", "diversity"):
        assert math.isfinite(summary[key]), key
    assert summary["oracle_calls"] <= 24
    # the summary's DSSP, clash and break figures were paid through the runtime
    assert sum(real_oracle_calls.values()) == summary["oracle_calls"] + summary["eval_oracle_calls"]
    assert summary["domain_metrics"]["diversity"] == {"label": "diversity (mean pairwise CA RMSD)", "units": "Å",
                                                      "higher_is_better": True}
    assert len(list((out / "designs_final_pdb").glob("design_*.pdb"))) == 4


def test_shipped_checkpoint_samples_chain_like_backbones():
    from vardbio.model.checkpoint import read_checkpoint

    metrics = read_checkpoint(pb.plugin.default_checkpoint({}))["extra"]["pretrain_metrics"]
    assert abs(metrics["samples"]["ca_ca_mean"] - 3.80) < 0.3 and metrics["samples"]["bond_deviation"] < 0.3
    model = pb.plugin.load({"sampling_steps": 10}).eval()
    designs = model.decode(model.rollout(2, torch.Generator().manual_seed(0)).final)
    assert all(d.shape == (32, 4, 3) and np.isfinite(d).all() for d in designs)
    caca = np.linalg.norm(np.diff(designs[0][:, 1], axis=0), axis=1)
    assert 2.5 < np.median(caca) < 4.5


def test_fragment_weights_favour_strand_rich_fragments_and_reject_negative_factors():
    from vardbio_oracles.structure import SecondaryStructure

    frags = pb.read_fragments()[:40]
    strand = SecondaryStructure("strand").score(list(frags)).values
    assert strand.max() > 0 and strand.min() == 0, "need fragments with and without strands"
    uniform = pb.fragment_weights(frags, 0.0)
    assert torch.equal(uniform, torch.ones(40, dtype=torch.float64))
    weighted = pb.fragment_weights(frags, 8.0).numpy()
    np.testing.assert_allclose(weighted, 1.0 + 8.0 * strand)
    assert weighted[strand.argmax()] > weighted[strand.argmin()]
    with pytest.raises(ValueError, match="strand_oversample"):
        pb.fragment_weights(frags, -1.0)


def test_pretraining_uses_min_snr_weighting_and_uniform_rotations(tmp_path):
    """Two steps of the shared loop on a tiny model: the Min-SNR-weighted loss, the earlier
    option names (train_steps, train_minutes = null) still read, the metrics recorded."""
    metrics = pb.plugin.pretrain({**TINY, "train_steps": 2,
                                  "train_minutes": None, "eval_samples": 2, "snr_cap": 2.0, "log_every": 1},
                                 tmp_path / "bb.pt", seed=0)
    assert metrics["train_steps"] == 2 and len(metrics["learning_curve"]) == 2
    assert metrics["pretrain_config"]["minutes"] == 0.0 and metrics["data_options"]["snr_cap"] == 2.0
    assert pb.plugin.load({"length": 10}, tmp_path / "bb.pt").denoiser.max_length == TINY["max_length"]
    with pytest.raises(ValueError, match="give one"):
        pb.plugin.options({"steps": 3, "train_steps": 4})
