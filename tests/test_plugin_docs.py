"""docs/plugins.md's complete minimal model plugin, extracted from the page and run: built,
sampled, checked against the model contract, registered as an entry point of a (tiny)
installed distribution, pretrained with `vardbio pretrain` following its own advice, sampled
with `vardbio sample` into a new folder, and fine-tuned for three iterations by the Trainer."""
from __future__ import annotations

import importlib
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vardbio
from vardbio.cli import main
from vardbio.testing import check_model_contract

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def plugin_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    found = [b for b in blocks if "class PointsPlugin(ModelPlugin)" in b]
    assert len(found) == 1, "docs/plugins.md has one complete model plugin"
    return found[0]


@pytest.fixture
def points(tmp_path, monkeypatch):
    """The doc's plugin module, installed as a distribution registering `points`."""
    site = tmp_path / "site"
    info = site / "points_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "points_plugin.py").write_text(plugin_source())
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: points-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vardbio.models]\npoints = points_plugin:plugin\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.delitem(sys.modules, "points_plugin", raising=False)
    monkeypatch.chdir(tmp_path)
    yield importlib.import_module("points_plugin")
    sys.modules.pop("points_plugin", None)


def test_the_documented_model_plugin_works(points, tmp_path, capsys):
    plugin = points.plugin
    assert vardbio.registry.load("model", "points") is plugin

    model = plugin.build({})
    traj = model.rollout(4, torch.Generator().manual_seed(0))
    assert traj.states.shape == (model.num_steps + 1, 4, 3) and model.num_steps == 10
    designs = model.decode(traj.final, traj.mask)
    assert len(designs) == 4 and all(d.shape == (3,) for d in designs)
    check_model_contract(plugin, {})
    for options in plugin.test_options:
        check_model_contract(plugin, options)
    with pytest.raises(ValueError, match=r"unknown points model options \['depth'\]"):
        plugin.build({"depth": 3})
    with pytest.raises(ValueError, match="hidden must be >= 1"):
        plugin.build({"hidden": 0})

    # default_checkpoint's advice, run as written: `vardbio pretrain` without out= works
    with pytest.raises(FileNotFoundError) as err:
        plugin.load({})
    advice = re.search(r"`vardbio (pretrain [^`]*)`", str(err.value)).group(1)
    assert main(shlex.split(advice)) == 0
    weights = Path("runs/pretrained/points.pt")
    assert f"saved {weights}" in capsys.readouterr().out and weights.is_file()
    trained = plugin.load({}, weights)
    mean = trained.rollout(512, torch.Generator().manual_seed(1)).final.mean(0)
    assert torch.allclose(mean, points.CENTRE, atol=0.25), mean

    # vardbio sample makes its out_dir
    out = Path("samples/new/folder")
    assert main(["sample", "model.name=points", "~model.options", f"checkpoint={weights}", "n=5",
                 f"out_dir={out}"]) == 0
    assert (out / "designs.csv").read_text().count("\n") == 6

    # three iterations of VARD with the Trainer, on the built model
    summary = vardbio.Trainer(trained, lambda p: float(p[0]), vardbio.VARDConfig(beta=0.5, value_samples=64,
                                                                                batch_size=16),
                              plugin=plugin, iterations=3, eval_samples=64, out_dir=tmp_path / "run",
                              progress=False, report=False).train()
    assert summary["iterations"] == 3 and summary["oracle_calls"] == 64
    assert np.isfinite(summary["reward_final"]["mean"]) and (tmp_path / "run" / "designs_final.csv").is_file()
