"""The shared pretraining loop and its pieces (the wall-clock schedule, the weight EMA, warm
starts), plugin training options (PretrainConfig, earlier names), the Min-SNR loss hook."""
import math

import pytest
import torch

from vardbio.model.checkpoint import CheckpointMismatchError, save_model
from vardbio.model.training import PretrainConfig, WallClockSchedule, ema_update, optimiser_step, warm_start
from vardbio_models.toy import plugin


def test_schedule_warms_up_then_follows_the_clock():
    s = WallClockSchedule(100.0, warmup_steps=10, final_fraction=0.1)
    assert s.factor(0, 0.0) == pytest.approx(0.1)  # warm-up step 1 of 10
    assert s.factor(9, 0.0) == pytest.approx(1.0)
    assert s.factor(50, 50.0) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s.factor(99, 100.0) == pytest.approx(0.1)
    assert s.factor(99, 250.0) == pytest.approx(0.1), "past the budget it stays at the floor"
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert s.apply(opt, 2e-3, 50, 25.0) == pytest.approx(2e-3 * (0.1 + 0.45 * (1 + math.cos(math.pi / 4))))
    assert opt.param_groups[0]["lr"] == pytest.approx(s.factor(50, 25.0) * 2e-3)
    with pytest.raises(ValueError, match="budget"):
        WallClockSchedule(0.0)
    with pytest.raises(ValueError, match="fraction"):
        WallClockSchedule(10.0, final_fraction=1.5)


def test_ema_moves_towards_the_model_with_warmed_up_decay():
    ema, model = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    before = [p.detach().clone() for p in ema.parameters()]
    ema_update(ema, model, decay=0.999, step=0)  # decay min(0.999, 1/10) = 0.1
    for pe, pb, pm in zip(ema.parameters(), before, model.parameters()):
        assert torch.allclose(pe, 0.1 * pb + 0.9 * pm)
    ema_update(ema, model, decay=0.5, step=10_000)
    ema_update(ema, model, decay=0.0, step=10_000)
    for pe, pm in zip(ema.parameters(), model.parameters()):
        assert torch.equal(pe, pm)


def test_warm_start_loads_weights_and_counts_earlier_training(tmp_path):
    torch.manual_seed(0)
    trained = plugin.build({"hidden": 16, "depth": 1})
    path = save_model(trained, tmp_path / "a.pt", pretrain_metrics={"train_steps": 120, "train_seconds": 3.5})
    fresh = plugin.build({"hidden": 16, "depth": 1})
    assert warm_start(fresh, None)["earlier_train_steps"] == 0
    record = warm_start(fresh, path)
    assert record == {"init": str(path), "earlier_train_steps": 120, "earlier_train_seconds": 3.5}
    for a, b in zip(trained.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    # a second continuation counts the first one's total
    save_model(fresh, tmp_path / "b.pt", pretrain_metrics={"train_steps": 30, "total_train_steps": 150,
                                                           "total_train_seconds": 4.0})
    assert warm_start(fresh, tmp_path / "b.pt")["earlier_train_steps"] == 150
    with pytest.raises(CheckpointMismatchError):
        warm_start(plugin.build({"hidden": 8, "depth": 1}), path)


def test_optimiser_step_moves_the_model_and_its_average(tmp_path):
    from vardbio.model.training import PeriodicCheckpoint, optimiser_step

    torch.manual_seed(0)
    model = plugin.build({"hidden": 16, "depth": 1})
    ema = model.frozen_copy()
    start = [p.detach().clone() for p in model.denoiser.parameters()]
    optimiser = torch.optim.SGD(model.denoiser.parameters(), lr=0.1)
    loss = sum(p.pow(2).sum() for p in model.denoiser.parameters())
    assert optimiser_step(model, ema, optimiser, loss, ema_decay=0.999, step=0) == pytest.approx(float(loss))
    for p0, pm, pe in zip(start, model.denoiser.parameters(), ema.denoiser.parameters()):
        assert torch.allclose(pe, 0.1 * p0 + 0.9 * pm)  # first EMA step: decay 1/10
    checkpoint = PeriodicCheckpoint(tmp_path / "p.pt", minutes=0.0)
    assert checkpoint.maybe_save(ema, step=1, loss=0.5) and (tmp_path / "p.pt").is_file()
    assert not PeriodicCheckpoint(tmp_path / "q.pt", minutes=60.0).maybe_save(ema, 1, 0.5)


def test_pretrain_loop_trains_warm_starts_and_names_bad_settings(tmp_path):
    """The shared loop lowers the loss on a fixed toy batch, records its curve, and a warm
    start adds the earlier steps to the totals."""
    from vardbio.model.checkpoint import save_model
    from vardbio.model.training import PretrainConfig, pretrain_loop
    from vardbio_models.toy import plugin

    torch.manual_seed(0)
    model = plugin.build({"dataset": "gaussian2"})
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(0)) * 0.5 + 2.0
    config = PretrainConfig(steps=60, lr=1e-2, log_every=20, warmup=5)
    trained, metrics = pretrain_loop(model, lambda step: (data, None), config, tmp_path / "m.pt",
                                     torch.Generator().manual_seed(0))
    curve = metrics["learning_curve"]
    assert [p["step"] for p in curve] == [20, 40, 60] and curve[-1]["loss"] < curve[0]["loss"]
    assert metrics["total_train_steps"] == 60 and not trained.training
    save_model(trained, tmp_path / "m.pt", pretrain_metrics=metrics)
    again = plugin.build({"dataset": "gaussian2"})
    _, more = pretrain_loop(again, lambda step: (data, None),
                            PretrainConfig(steps=10, log_every=10, init=str(tmp_path / "m.pt")),
                            tmp_path / "n.pt", torch.Generator().manual_seed(0))
    assert more["total_train_steps"] == 70 and more["learning_curve"][0]["step"] == 70
    with pytest.raises(ValueError, match="ema"):
        PretrainConfig(ema=1.5)
    with pytest.raises(ValueError, match="steps"):
        PretrainConfig(steps=0)
    with pytest.raises(ValueError, match=r"\['stpes'\]"):
        PretrainConfig.from_options("toy", {"stpes": 3})


def test_plugin_options_are_typed_with_the_earlier_names_still_read():
    from vardbio.model.plugin import pretrain_options

    arch, data, config = pretrain_options("toy model", {"hidden": 8, "train_steps": 7, "lr_final": 0.5,
                                                        "train_minutes": None, "n": 3},
                                          {"hidden": 128}, {"n": 1}, {"steps": 100, "lr": 2e-3})
    assert arch == {"hidden": 8} and data == {"n": 3}
    assert (config.steps, config.final_lr_fraction, config.minutes, config.lr) == (7, 0.5, 0.0, 2e-3)
    with pytest.raises(ValueError, match=r"unknown toy model options \['stpes'\]"):
        pretrain_options("toy model", {"stpes": 3}, {}, {}, {})
    with pytest.raises(ValueError, match=r"\['steps', 'max_train_steps'\] all set the pretraining option 'steps'"):
        pretrain_options("toy model", {"steps": 3, "max_train_steps": 4}, {}, {}, {})
    with pytest.raises(ValueError, match="final_lr_fraction must be in"):
        pretrain_options("toy model", {"final_lr_fraction": 1.5}, {}, {}, {})
    with pytest.raises(ValueError, match="max_grad_norm must be >= 0"):
        PretrainConfig(max_grad_norm=-1.0)
    assert plugin.split({"train_steps": 5})[2].steps == 5, "a plugin reads the earlier names too"


def test_zero_max_grad_norm_leaves_gradients_unclipped():
    torch.manual_seed(0)
    model = plugin.build({"hidden": 16, "depth": 1})
    ema = model.frozen_copy()
    params = list(model.denoiser.parameters())
    start = [p.detach().clone() for p in params]
    optimiser = torch.optim.SGD(params, lr=1.0)
    loss = 100.0 * sum(p.sum() for p in params)  # gradient 100 everywhere: norm far above 1
    optimiser_step(model, ema, optimiser, loss, ema_decay=0.0, step=0, max_grad_norm=0.0)
    assert all(torch.allclose(p0 - p, torch.full_like(p, 100.0)) for p0, p in zip(start, params))


def test_min_snr_weighting_is_a_hook_of_the_gaussian_loss():
    from vardbio.processes.gaussian import GaussianProcess, GaussianProcessConfig, min_snr_weight

    a = torch.tensor([0.99, 0.5, 0.01])
    snr = a / (1 - a)
    assert torch.allclose(min_snr_weight(5.0, "x0")(a), torch.tensor([5.0, 1.0, float(snr[2])]))
    assert torch.allclose(min_snr_weight(5.0, "eps")(a), torch.tensor([5.0 / float(snr[0]), 1.0, 1.0]))
    with pytest.raises(ValueError, match="γ must be > 0"):
        min_snr_weight(0.0)
    process = GaussianProcess(GaussianProcessConfig(num_train_steps=100, prediction="x0"))
    denoiser = torch.nn.Linear(4, 4)
    x0 = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))

    def loss(weight=None):
        return process.training_loss(lambda x, t, m: denoiser(x), x0, None, torch.Generator().manual_seed(1), weight)

    assert torch.equal(loss(lambda a: torch.ones_like(a)), loss())
    assert torch.allclose(loss(lambda a: 2 * torch.ones_like(a)), 2 * loss())
    assert not torch.allclose(loss(min_snr_weight(1.0)), loss())


def test_toy_presets_pretrain_from_the_command_line(tmp_path):
    from vardbio.cli import main
    from vardbio.model.checkpoint import read_checkpoint

    out = tmp_path / "toy.pt"
    assert main(["pretrain", "model=toy_gaussian2", f"out={out}", "+model.options.steps=40",
                 "+model.options.train_samples=500", "+model.options.log_every=20"]) == 0
    metrics = read_checkpoint(out)["extra"]["pretrain_metrics"]
    assert metrics["train_steps"] == 40 and [p["step"] for p in metrics["learning_curve"]] == [20, 40]
    assert metrics["pretrain_config"]["max_grad_norm"] == 0.0 and metrics["data"] == {"train_samples": 500}
    assert metrics["mean_error"] >= 0 and metrics["cov_error"] >= 0
