"""Value-head fitting: a known function is recovered; NaN rewards are dropped and counted."""
import numpy as np
import pytest
import torch

from vardbio.model.diffusion import Trajectory
from vardbio.value import ValueFitConfig, ValueHead, VectorValueNet, fit_value, linex_loss, with_value_input


def _synthetic(n=600, steps=4, seed=0):
    """States whose reward is a known function of every state: r = 2·x[0] - x[1] + 3."""
    g = torch.Generator().manual_seed(seed)
    final = torch.randn(n, 2, generator=g)
    states = torch.stack([final + 0.0 * k for k in range(steps + 1)])  # same state at every t
    rewards = (2 * final[:, 0] - final[:, 1] + 3).double().numpy()
    times = np.linspace(1, 0, steps + 1).tolist()
    return Trajectory(states), rewards, times


def test_fitting_recovers_a_known_function():
    traj, rewards, times = _synthetic()
    head = ValueHead(VectorValueNet(2, hidden=64, depth=2))
    report = fit_value(head, traj, rewards, times, ValueFitConfig(epochs=200, patience=20, lr=3e-3),
                       generator=torch.Generator().manual_seed(0))
    assert report.r2 > 0.98 and all(r > 0.97 for r in report.r2_per_bucket)
    x = torch.tensor([[0.5, -1.0], [-1.0, 0.0]])
    pred = head(x, torch.zeros(2))
    assert torch.allclose(pred, torch.tensor([5.0, 1.0]), atol=0.15)


def test_nan_rewards_are_dropped_and_counted_not_zeroed():
    traj, rewards, times = _synthetic()
    rewards = rewards + 100.0  # a zero in place of NaN would drag the fit far off
    rewards[:50] = np.nan
    head = ValueHead(VectorValueNet(2, hidden=64, depth=2))
    report = fit_value(head, traj, rewards, times, ValueFitConfig(epochs=100, lr=3e-3),
                       generator=torch.Generator().manual_seed(0))
    assert report.n_dropped_nan == 50 and report.n_trajectories == 550
    assert abs(float(head.reward_mean) - np.nanmean(rewards[50:])) < 0.5
    assert report.r2 > 0.95


def test_all_nan_rewards_give_a_clear_error():
    traj, rewards, times = _synthetic(n=20)
    with pytest.raises(ValueError, match="only 0 of 20 rewards are finite"):
        fit_value(ValueHead(VectorValueNet(2)), traj, np.full(20, np.nan), times, ValueFitConfig())


def test_soft_target_needs_beta():
    traj, rewards, times = _synthetic(n=20)
    with pytest.raises(ValueError, match="beta"):
        fit_value(ValueHead(VectorValueNet(2)), traj, rewards, times, ValueFitConfig(target="soft"))


def test_linex_minimiser_is_the_soft_value():
    """Over a constant prediction, the LINEX loss is minimised at β·log E[exp(r/β)]."""
    g = torch.Generator().manual_seed(0)
    r = torch.randn(20000, generator=g)
    beta = 0.5
    pred = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([pred], lr=0.05)
    for _ in range(600):
        loss = linex_loss(pred.expand_as(r), r, beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
    soft = beta * torch.logsumexp(r / beta, 0) - beta * np.log(len(r))
    assert abs(float(pred.detach()) - float(soft)) < 0.02
    assert float(soft) > float(r.mean()) + 0.5  # clearly different from the plain mean (≈ 1/(2β))


def test_soft_fit_lands_above_the_mean_fit_by_the_gaussian_gap():
    """r | x ~ N(x, 1): mean value x, soft value x + 1/(2β)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4000, 1, generator=g)
    rewards = (x[:, 0] + torch.randn(4000, generator=g)).double().numpy()
    traj, times = Trajectory(x[None]), [0.0]
    beta = 1.0
    preds = {}
    for target in ("mean", "soft"):
        head = ValueHead(VectorValueNet(1, hidden=32, depth=2))
        fit_value(head, traj, rewards, times, ValueFitConfig(target=target, epochs=60, lr=3e-3),
                  beta=beta, generator=torch.Generator().manual_seed(0))
        preds[target] = head(torch.tensor([[0.0], [1.0]]), torch.zeros(2))
    gap = preds["soft"] - preds["mean"]
    assert torch.allclose(gap, torch.full((2,), 1 / (2 * beta)), atol=0.12)


def _toy_reference():
    from vardbio_models.toy import plugin

    return plugin.load({"dataset": "gaussian2"}).frozen_copy()


def test_denoised_input_is_not_fitted_or_saved_and_passes_gradients_to_the_state():
    reference = _toy_reference()
    head = with_value_input(ValueHead(VectorValueNet(2, hidden=16, depth=1)), "denoised", reference)
    assert sum(p.numel() for p in head.parameters()) == sum(p.numel() for p in head.network.parameters())
    assert all(k.startswith(("network.", "reward_")) for k in head.state_dict())
    x = torch.randn(5, 2, requires_grad=True)
    t = torch.full((5,), 0.7)
    head(x, t).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.allclose(head.map_inputs(x.detach(), t), reference.denoised(x.detach(), t, None))
    with pytest.raises(ValueError, match="expected one of"):
        with_value_input(head, "blurred", reference)


def test_fitting_a_denoised_head_equals_fitting_on_denoised_states():
    """The fit maps each state through the reference once: the same fit, step for step, as a
    plain head fitted on a trajectory of denoised states."""
    reference = _toy_reference()
    traj = reference.rollout(64, torch.Generator().manual_seed(0))
    times = [reference.process.time(k) for k in range(reference.num_steps + 1)]
    rewards = traj.final.sum(-1).double().numpy()
    with torch.no_grad():
        denoised = torch.stack([reference.denoised(s, torch.full((64,), t), None) for s, t in zip(traj.states, times)])
    config = ValueFitConfig(epochs=5, patience=0)
    reports, heads = [], []
    for states, value_input in ((traj.states, "denoised"), (denoised, "noisy")):
        torch.manual_seed(1)
        head = with_value_input(ValueHead(VectorValueNet(2, hidden=16, depth=1)), value_input, reference)
        reports.append(fit_value(head, Trajectory(states), rewards, times, config,
                                 generator=torch.Generator().manual_seed(2)))
        heads.append(head)
    assert reports[0].r2 == pytest.approx(reports[1].r2, abs=1e-6)
    for a, b in zip(heads[0].network.parameters(), heads[1].network.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
