"""PMO's AUC of the running top-k mean, checked on hand-computed cases."""
import numpy as np
import pytest

from vardbio.metrics import top_k_auc, top_k_curve


def test_constant_reward_at_full_budget_is_that_reward_less_the_first_ramp():
    # the curve starts at 0 at 0 calls: the first interval contributes half its height
    rewards = np.full(1000, 0.8)
    assert top_k_auc(rewards, k=10, budget=1000) == pytest.approx(0.8 * (1 - 0.5 * 100 / 1000))


def test_early_stop_is_held_flat_to_the_budget():
    rewards = [0.5] * 250
    # segments: 0->100 (0 to .5), 100->200 flat, 200->250 flat, then 750 calls flat at .5
    expected = (100 * 0.25 + 100 * 0.5 + 50 * 0.5 + 750 * 0.5) / 1000
    assert top_k_auc(rewards, k=1, budget=1000) == pytest.approx(expected)
    unfinished = (100 * 0.25 + 100 * 0.5 + 50 * 0.5) / 1000
    assert top_k_auc(rewards, k=1, budget=1000, finish=False) == pytest.approx(unfinished)


def test_running_top_k_mean_and_calls_past_the_budget():
    rewards = [0.1, 0.9, 0.3, 0.7, 0.2]
    calls, means = top_k_curve(rewards, k=2, interval=2)
    assert calls.tolist() == [2, 4, 5]
    assert means.tolist() == pytest.approx([0.5, 0.8, 0.8])
    # fewer than k so far: the mean of what there is
    assert top_k_curve([0.4], k=10, interval=1)[1].tolist() == [0.4]
    assert top_k_auc(rewards + [1.0] * 10, k=1, budget=5, interval=1) == top_k_auc(rewards, k=1, budget=5, interval=1)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="NaN"):
        top_k_curve([0.1, float("nan")], k=1)
    with pytest.raises(ValueError, match="budget"):
        top_k_auc([0.1], k=1, budget=0)
