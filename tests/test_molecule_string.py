"""The SELFIES string model: vocabulary round trips, curation cache, pretraining, design files."""
import json

import numpy as np
import pytest
import torch
from rdkit import Chem

from vardbio.model.checkpoint import read_checkpoint
from vardbio_models.molecule_string import plugin
from vardbio_models.molecule_string.data import StringDatasetParams, build_dataset
from vardbio_models.molecule_string.plugin import pad_inside_fraction
from vardbio_models.molecule_string.vocab import Vocabulary, selfies_to_mol, smiles_to_selfies

SMILES = ["CCOc1ccc(CC(=O)N2CCCC2)cc1", "O=C(Nc1ccccc1Cl)c1cccs1", "CC(C)(C)NC(=O)c1ccc(F)cc1",
          "Cc1ccc(S(=O)(=O)N2CCOCC2)cc1", "N#Cc1ccc(Br)cc1", "CC1=CC(=O)c2ccccc2C1=O"]
TINY = plugin.test_options[0]


def test_training_molecules_round_trip_through_states():
    vocab = Vocabulary()
    idx = torch.as_tensor(np.stack([vocab.indices(smiles_to_selfies(s), 48) for s in SMILES]))
    states = vocab.one_hot(idx)
    assert states.shape == (len(SMILES), 48, vocab.size + 1)
    mols = plugin.build({}).decode(states)
    assert [Chem.MolToSmiles(m) for m in mols] == [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in SMILES]


def test_vocabulary_names_bad_input():
    vocab = Vocabulary()
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.indices("[C][Si]", 8)
    with pytest.raises(ValueError, match="more than 3"):
        vocab.indices("[C][C][C][C]", 3)
    with pytest.raises(ValueError, match="unparsable"):
        smiles_to_selfies("C1CC(")
    assert selfies_to_mol("") is None


def test_pad_inside_is_dropped_and_counted():
    vocab = Vocabulary()
    c = vocab.index["[C]"]
    idx = torch.tensor([[c, 0, c, 0], [c, c, 0, 0]])
    states = vocab.one_hot(idx)
    assert pad_inside_fraction(states) == pytest.approx(0.5)
    assert [Chem.MolToSmiles(m) for m in plugin.build({}).decode(states)] == ["CC", "CC"]


def test_curation_cache_is_rebuilt_when_parameters_change(tmp_path):
    source = tmp_path / "mols.smi"
    source.write_text("SMILES\n" + "\n".join(SMILES + [SMILES[0], "C1CC(", "[Si](C)(C)C"]) + "\n")
    cache = tmp_path / "cache.pt"
    logs = []
    data = build_dataset(StringDatasetParams(str(source), 48), cache=cache, log=logs.append)
    assert len(data) == len(SMILES)
    assert data.stats["duplicate"] == 1 and data.stats["unparsable"] == 1
    assert data.stats["token outside the vocabulary"] == 1
    again = build_dataset(StringDatasetParams(str(source), 48), cache=cache, log=logs.append)
    assert again.smiles == data.smiles and not any("rebuilding" in line for line in logs)
    short = build_dataset(StringDatasetParams(str(source), 22), cache=cache, log=logs.append)
    assert any("rebuilding" in line for line in logs)
    assert short.stats.get("too long", 0) > 0 and len(short) < len(data)


def test_pretrain_writes_a_loadable_checkpoint_with_metrics(tmp_path):
    source = tmp_path / "mols.smi"
    source.write_text("\n".join(SMILES) + "\n")
    out = tmp_path / "model.pt"
    options = {**TINY, "source": str(source), "steps": 6, "batch_size": 4, "log_every": 3,
               "eval_samples": 8, "ema": 0.9, "warmup": 2}
    import os
    os.environ["VARDBIO_DATA_DIR"] = str(tmp_path / "data")
    try:
        metrics = plugin.pretrain(options, out, seed=0)
    finally:
        del os.environ["VARDBIO_DATA_DIR"]
    assert metrics["train_steps"] == 6 and [p["step"] for p in metrics["learning_curve"]] == [3, 6]
    assert metrics["samples"]["n"] == 8 and 0 <= metrics["samples"]["validity"] <= 1
    json.dumps(metrics)  # summary-friendly
    assert read_checkpoint(out)["extra"]["pretrain_metrics"]["train_steps"] == 6
    model = plugin.load({}, checkpoint=out)
    assert model.spec["options"]["max_length"] == 32


def test_design_files_are_sdf_and_csv(tmp_path):
    mols = [Chem.MolFromSmiles(s) for s in SMILES[:2]] + [None]
    sdf, table = plugin.write_designs(mols, np.array([0.5, 0.25, np.nan]), tmp_path / "d")
    read = [m for m in Chem.SDMolSupplier(str(sdf))]
    assert len(read) == 2 and read[0].GetProp("reward") == "0.5"
    rows = table.read_text().splitlines()
    assert rows[0] == "id,smiles,heavy_atoms,reward" and rows[3].startswith("design_2,,0,")


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="wdith"):
        plugin.build({"wdith": 3})


def test_pmo_campaign_counts_unique_valid_designs_and_reports_auc(tmp_path, real_oracle_calls):
    """molecule_pmo end to end on the shipped model with a tiny budget: PMO's counting, the
    AUCs recomputed from the call history, SDF and SMILES design files."""
    import csv

    from vardbio.campaign.config import compose_config
    from vardbio.campaign.trainer import Trainer
    from vardbio.metrics import top_k_auc

    cfg = compose_config("config", [
        "campaign=molecule_pmo", "campaign.task=celecoxib_rediscovery", "campaign.oracle_budget=60",
        "campaign.iterations=2", "campaign.eval_samples=8", "campaign.model.options.sampling_steps=8",
        "algorithm.value_samples=40", "algorithm.refresh_every=1", "algorithm.refresh_samples=10",
        "algorithm.batch_size=4", "algorithm.steps_per_update=1", "algorithm.value.epochs=2",
        f"out_dir={tmp_path}", "progress=false", "report=false"])
    s = Trainer.from_config(cfg).train()
    # QED and SA in the summary were paid through the runtime like the PMO scores
    assert sum(real_oracle_calls.values()) == s["oracle_calls"] + s["eval_oracle_calls"]
    assert real_oracle_calls["qed"] > 0 and real_oracle_calls["sa_score"] > 0
    rows = list(csv.DictReader((tmp_path / "call_history.csv").open()))
    rewards = [float(r["reward"]) for r in rows if r["reward"]]
    assert s["budget_counting"] == "unique_valid" and s["budget_spent"] == len(rewards) <= 60
    assert s["auc_top10"] == pytest.approx(top_k_auc(rewards, 10, 60), abs=1e-5)  # the CSV keeps 6 digits
    assert s["valid_fraction_initial"] == 1.0 and 0 <= s["auc_top1"] <= 1
    assert (tmp_path / "designs_final.sdf").stat().st_size > 0


def test_value_head_kinds_take_relaxed_states_and_bad_kind_is_named():
    model = plugin.build(TINY)
    x = model.rollout(3, torch.Generator().manual_seed(0)).states[2].clone().requires_grad_(True)
    for kind in ("conv", "transformer"):
        v = plugin.value_head(model, {"kind": kind, "hidden": 16})(x, torch.full((3,), 0.5))
        assert v.shape == (3,)
        (grad,) = torch.autograd.grad(v.sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="kind 'gnn'"):
        plugin.value_head(model, {"kind": "gnn"})
