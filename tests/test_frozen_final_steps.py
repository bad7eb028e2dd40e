"""Frozen final sampler steps: the last steps stay the pretrained model's through fine-tuning,
guidance and selection, add nothing to the path KL, and travel with the checkpoint."""
import math

import pytest
import torch

from vardbio import Trainer
from vardbio.algorithms import SVDD, GuidanceConfig, SVDDConfig, ValueGuidance, VARDConfig
from vardbio.algorithms.base import AlgorithmContext
from vardbio.model.checkpoint import CheckpointMismatchError, load_weights, save_model
from vardbio.model.diffusion import path_kl
from vardbio.reward import FunctionOracle, OracleLedger, Reward, RewardTerm
from vardbio.reward.evaluator import InProcessEvaluator
from vardbio.value import ValueFitConfig
from vardbio_models import toy

W = toy.LinearReward(8).w


def _perturbed_pair(frozen: int):
    """(model, reference): the toy model with its last `frozen` steps frozen, then every
    weight of its denoiser moved, as fine-tuning would."""
    model = toy.plugin.load({"dataset": "gaussian8"})
    reference = model.frozen_copy()
    model.freeze_final_steps(frozen)
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return model, reference


def test_frozen_steps_are_the_references_and_add_no_path_kl():
    model, reference = _perturbed_pair(frozen=2)
    k_total = model.num_steps
    assert model.steerable_steps == k_total - 2 and model.spec["frozen_final_steps"] == 2
    traj = model.rollout(64, torch.Generator().manual_seed(0))
    per_step = []
    for k in range(k_total):
        x = traj.states[k]
        with torch.no_grad():
            mine, ref = model.step(x, k, None), reference.step(x, k, None)
        per_step.append(float(mine.kl(ref).mean()))
        if k >= model.steerable_steps:
            assert torch.equal(mine.mean, ref.mean), f"frozen step {k} differs from the reference"
    assert per_step[-1] == 0.0 and per_step[-2] == 0.0 and per_step[0] > 0.0
    assert float(path_kl(model, reference, traj).mean()) == pytest.approx(sum(per_step), rel=1e-5)
    assert not any(p.requires_grad for p in model.final_denoiser.parameters())


def test_freezing_checks_its_count():
    model = toy.plugin.load({"dataset": "gaussian8"})
    with pytest.raises(ValueError, match=r"frozen_final_steps must be in \[0, 20\)"):
        model.freeze_final_steps(20)
    model.freeze_final_steps(1)
    with pytest.raises(ValueError, match="frozen already"):
        model.freeze_final_steps(1)


def test_a_checkpoint_with_frozen_steps_loads_them(tmp_path):
    model, reference = _perturbed_pair(frozen=1)
    save_model(model, tmp_path / "tuned.pt")
    loaded = toy.plugin.load({}, tmp_path / "tuned.pt")
    assert loaded.frozen_final_steps == 1
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    last = model.num_steps - 1
    assert torch.equal(loaded.step(x, last, None).mean, reference.step(x, last, None).mean)
    assert torch.equal(loaded.step(x, 0, None).mean, model.step(x, 0, None).mean)
    other = toy.plugin.load({"dataset": "gaussian8"}).freeze_final_steps(3)
    with pytest.raises(CheckpointMismatchError):
        load_weights(other, tmp_path / "tuned.pt")


def test_vard_with_a_frozen_final_step_leaves_it_and_reports_the_bound(tmp_path):
    trainer = Trainer("toy", [FunctionOracle(lambda x: float(W @ x), "linear")],
                      VARDConfig(beta=0.5, batch_size=32, value_samples=128, value=ValueFitConfig(epochs=3)),
                      model_options={"dataset": "gaussian8"}, frozen_final_steps=1, iterations=3,
                      eval_samples=32, out_dir=tmp_path / "run", progress=False, report=False, seed=0)
    summary = trainer.train()
    assert summary["frozen_final_steps"] == 1
    assert "bounds the KL of the designs" in summary["kl_note"]
    frozen = dict(trainer.model.final_denoiser.named_parameters())
    for name, p in trainer.reference.denoiser.named_parameters():
        assert torch.equal(frozen[name], p)
    moved = any(not torch.equal(p, q) for p, q in zip(trainer.model.denoiser.parameters(),
                                                        trainer.reference.denoiser.parameters()))
    assert moved, "VARD changed the steerable steps"
    assert load_weights(toy.plugin.build({"dataset": "gaussian8"}), tmp_path / "run" / "model_final.pt").frozen_final_steps == 1


def _context(frozen: int):
    model = toy.plugin.load({"dataset": "gaussian8"})
    reference = model.frozen_copy()
    model.freeze_final_steps(frozen)
    reward = Reward([RewardTerm(FunctionOracle(lambda x: float(W @ x), "linear"))], InProcessEvaluator(OracleLedger()))
    return AlgorithmContext(model, reference, reward,
                            lambda: toy.plugin.value_head(reference, {"hidden": 16, "depth": 1}),
                            torch.Generator().manual_seed(0))


def test_guidance_and_svdd_leave_frozen_steps_alone():
    quick = {"value_samples": 32, "value": ValueFitConfig(epochs=2), "rollout_chunk": 16}
    svdd = SVDD(SVDDConfig(candidates=4, alpha=0.0, **quick), _context(frozen=5))
    svdd.setup()
    final = svdd.final_samples(16, torch.Generator().manual_seed(0))
    assert torch.allclose(final.kl, torch.full((16,), 15 * (math.log(4) - 3 / 4)))
    assert final.inference["value_calls_per_design"] == 15 * 4
    assert "last 5 steps are the reference's" in final.kl_note
    guidance = ValueGuidance(GuidanceConfig(strength=2.0, **quick), _context(frozen=5))
    guidance.setup()
    final = guidance.final_samples(16, torch.Generator().manual_seed(0))
    assert final.inference["value_gradient_calls_per_design"] == 15
    assert "bounds the KL of the designs" in final.kl_note
