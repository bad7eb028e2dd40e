"""The image plugin: shipped checkpoint quality, pretraining, design files, campaign smoke runs
(the contract on small options runs in tests/test_contracts.py)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vardbio import registry
from vardbio.cli import main
from vardbio.model.checkpoint import read_checkpoint
from vardbio.testing import check_model_contract
from vardbio_models.image import digits_dataset, pixel_diversity, plugin
from vardbio_oracles.image import DigitProbability


def test_registered_under_its_entry_point():
    assert registry.load("model", "image") is plugin


def test_shipped_checkpoint_passes_the_contract_and_draws_digits():
    model = plugin.load({"sampling_steps": 20})
    check_model_contract(plugin, {}, model=model)
    samples = model.rollout(64, torch.Generator().manual_seed(0)).final
    assert samples.shape == (64, 1, 8, 8)
    clf = DigitProbability(0)
    confidence = np.array([clf.probabilities(d).max() for d in model.decode(samples)])
    assert (confidence > 0.9).mean() > 0.5, "most samples should read clearly as a digit"
    classes = {int(clf.probabilities(d).argmax()) for d in model.decode(samples)}
    assert len(classes) >= 6, "samples should cover many digits, not one mode"
    assert pixel_diversity(samples) > 0.5 * pixel_diversity(digits_dataset(8))
    metrics = read_checkpoint(plugin.default_checkpoint({}))["extra"]["pretrain_metrics"]
    assert metrics["options"]["size"] == 8 and metrics["train_seconds"] > 0


def test_pretrain_runs_the_shared_loop(tmp_path):
    """A few steps on the digits: the shared loop's metrics and learning curve, sample quality,
    and a checkpoint that loads; the earlier name train_steps still reads."""
    out = tmp_path / "img.pt"
    metrics = plugin.pretrain({"base_channels": 8, "train_steps": 3, "log_every": 1, "eval_samples": 8,
                               "sampling_steps": 3}, out, seed=0)
    assert metrics["train_steps"] == 3 and len(metrics["learning_curve"]) == 3
    assert metrics["pretrain_config"]["ema"] == 0.999 and metrics["pretrain_config"]["max_grad_norm"] == 0.0
    assert 0.0 <= metrics["classifier_confidence_samples"] <= 1.0
    assert plugin.load({}, out).spec["options"]["base_channels"] == 8


def test_write_designs_writes_png_grid_npy_and_csv(tmp_path):
    designs = [np.linspace(-1, 1, 64).reshape(8, 8) * s for s in (1.0, -1.0, 0.5)]
    files = plugin.write_designs(designs, np.array([0.1, np.nan, -2.0]), tmp_path / "d")
    assert sorted(f.suffix for f in files) == [".csv", ".npy", ".png"]
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), np.stack(designs), atol=1e-6)
    assert (tmp_path / "d.csv").read_text().splitlines() == ["index,reward", "0,0.1", "1,nan", "2,-2"]
    with Image.open(tmp_path / "d.png") as img:
        assert img.size[0] > 50 and img.size[1] > 50


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="image size must be one of"):
        plugin.build({"size": 12})
    with pytest.raises(ValueError, match="unknown image model options"):
        plugin.build({"colour": "red"})
    with pytest.raises(ValueError, match="ema must be in"):
        plugin.build({"ema": 1.0})
    with pytest.raises(ValueError, match="cannot be halved"):
        plugin.build({"size": 8, "channel_mults": [1, 2, 2, 2, 2]})
    with pytest.raises(ValueError, match="unknown image value-head options"):
        plugin.value_head(plugin.build({}), {"depth": 3})
    with pytest.raises(ValueError, match="one shape"):
        plugin.write_designs([np.zeros((8, 8)), np.zeros((4, 4))], None, tmp_path / "x")
    with pytest.raises(ValueError, match="2 rewards for 1 designs"):
        plugin.write_designs([np.zeros((8, 8))], np.zeros(2), tmp_path / "x")


@pytest.mark.parametrize("campaign", ["image_compressibility", "image_class"])
def test_campaign_smoke_run_writes_grids_and_summary(tmp_path, campaign):
    out = tmp_path / campaign
    assert main(["run", f"campaign={campaign}", f"out_dir={out}", "progress=false",
                 "campaign.iterations=2", "campaign.eval_samples=16", "campaign.oracle_budget=48",
                 "+campaign.model.options.sampling_steps=5", "algorithm.value_samples=32",
                 "algorithm.batch_size=4", "algorithm.value.epochs=2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"reward_initial", "reward_final", "kl_to_reference", "oracle_calls",
            "pixel_diversity_initial", "pixel_diversity"} <= set(summary)
    assert summary["domain_metrics"]["pixel_diversity"]["label"] == "diversity (mean pairwise RMS pixel distance)"
    assert [f["file"] for f in summary["design_files"]] == ["designs_initial.png", "designs_final.png"]
    assert summary["oracle_calls"] == 32 and summary["eval_oracle_calls"] == 32
    assert np.isfinite(summary["reward_final"]["mean"]) and summary["kl_to_reference"] > 0
    for stem in ("designs_initial", "designs_final"):
        for suffix in (".png", ".npy", ".csv"):
            assert (out / f"{stem}{suffix}").stat().st_size > 0
    assert np.load(out / "designs_final.npy").shape == (16, 8, 8)
