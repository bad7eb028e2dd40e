"""The replay buffer: every scored design, forward-noised into value data."""
import dataclasses

import numpy as np
import pytest
import torch

from vardbio.processes.masked import MaskedDiffusion, MaskedDiffusionConfig
from vardbio.value.replay import ReplayBuffer


def _designs(n, seed):
    idx = torch.randint(0, 3, (n, 5), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.one_hot(idx, 4).float()


def test_noised_levels_end_with_the_designs_and_keep_nan_rewards():
    process = MaskedDiffusion(MaskedDiffusionConfig(vocab_size=3, sampling_steps=8))
    buffer = ReplayBuffer()
    buffer.add(_designs(6, 0), None, np.array([1, 2, np.nan, 4, 5, 6.0]))
    buffer.add(_designs(4, 1), None, np.arange(4.0))
    traj, times = buffer.noised(process, levels=5, generator=torch.Generator().manual_seed(0))
    assert traj.states.shape == (5, 10, 5, 4) and len(buffer) == 10
    assert times == [process.time(k) for k in (0, 2, 4, 6, 8)]
    assert torch.equal(traj.states[-1], buffer.states) and bool((traj.states[0][..., 3] == 1).all())
    assert np.isnan(buffer.rewards[2])


def test_capacity_keeps_the_most_recent_and_state_round_trips():
    buffer = ReplayBuffer(capacity=5)
    buffer.add(_designs(4, 0), None, np.arange(4.0))
    buffer.add(_designs(3, 1), None, np.arange(4.0, 7.0))
    assert buffer.rewards.tolist() == [2, 3, 4, 5, 6] and len(buffer.states) == 5
    copy = ReplayBuffer()
    copy.load_state_dict(buffer.state_dict())
    assert torch.equal(copy.states, buffer.states) and copy.rewards.tolist() == buffer.rewards.tolist()


def test_bad_input_is_named():
    buffer = ReplayBuffer()
    with pytest.raises(ValueError, match="empty"):
        buffer.noised(MaskedDiffusion(MaskedDiffusionConfig(vocab_size=3)), levels=4)
    with pytest.raises(ValueError, match="3 rewards for 2 designs"):
        buffer.add(_designs(2, 0), None, np.zeros(3))
    buffer.add(_designs(2, 0), None, np.zeros(2))
    with pytest.raises(ValueError, match="cannot join"):
        buffer.add(torch.zeros(2, 6, 4), None, np.zeros(2))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(capacity=-1)


def test_weights_are_self_normalised_and_their_effective_size_is_kish():
    buffer = ReplayBuffer()
    buffer.add(_designs(2, 0), None, np.zeros(2))  # reference samples: weight 1
    buffer.add(_designs(2, 1), None, np.zeros(2), log_weights=np.log([3.0, 1.0]))
    w = buffer.weights()
    assert w.mean() == pytest.approx(1.0) and w / w[0] == pytest.approx([1, 1, 3, 1])
    assert buffer.effective_size() == pytest.approx(36 / 12)
    with pytest.raises(ValueError, match="finite log weights"):
        buffer.add(_designs(1, 2), None, np.zeros(1), log_weights=np.array([np.inf]))


def test_weight_power_tempers_the_weights():
    log_weights = np.log([1.0, 4.0, 16.0])
    for power, ratios in ((0.0, [1, 1, 1]), (0.5, [1, 2, 4]), (1.0, [1, 4, 16])):
        buffer = ReplayBuffer(weight_power=power)
        buffer.add(_designs(3, 0), None, np.zeros(3), log_weights=log_weights)
        w = buffer.weights()
        assert w.mean() == pytest.approx(1.0) and w / w[0] == pytest.approx(ratios)
    with pytest.raises(ValueError, match="weight_power must be in"):
        ReplayBuffer(weight_power=1.5)


def _perturbed_toy_sequence():
    """(θ, reference): the toy sequence model and a copy with its weights perturbed."""
    from vardbio_models.toy_sequence import plugin

    reference = plugin.load({}).frozen_copy()
    model = reference.frozen_copy()
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return model, reference


def test_path_log_ratio_is_an_importance_weight_toward_the_reference():
    """E_θ[exp(log ratio) f(x_0)] = E_ref[f(x_0)], checked on the toy sequence model with a
    perturbed copy as θ."""
    from vardbio.model.diffusion import path_log_ratio

    torch.manual_seed(0)
    model, reference = _perturbed_toy_sequence()
    g = torch.Generator().manual_seed(2)
    traj = model.rollout(4000, g)
    w = path_log_ratio(model, reference, traj).exp()
    first_token = traj.final[:, 0, 0]  # f(x_0): the first position holds token 0
    weighted = float((w * first_token).sum() / w.sum())
    truth = float(reference.rollout(4000, g).final[:, 0, 0].mean())
    assert abs(weighted - truth) < 0.04 and abs(float(first_token.mean()) - truth) > 0.2


def test_path_log_ratio_uses_the_rollouts_kept_log_probs():
    """A rollout that kept its step log-probs gives the same ratio as recomputing them."""
    from vardbio.model.diffusion import path_log_ratio

    model, reference = _perturbed_toy_sequence()
    kept = model.rollout(64, torch.Generator().manual_seed(3), keep_log_probs=True)
    recomputed = dataclasses.replace(kept, log_probs=None)
    ratio = path_log_ratio(model, reference, kept)
    assert ratio.abs().max() > 0.1
    assert torch.allclose(ratio, path_log_ratio(model, reference, recomputed), atol=1e-5)
