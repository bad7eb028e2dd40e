"""VARD, DDPO and best-of-N on the toy model: gradients, accounting, bad settings."""
import numpy as np
import pytest
import torch

from vardbio.algorithms import BestOfN, BestOfNConfig, DDPO, DDPOConfig, VARD, VARDConfig
from vardbio.algorithms.base import AlgorithmContext
from vardbio.reward import FunctionOracle, OracleLedger, Reward, RewardTerm
from vardbio.reward.evaluator import InProcessEvaluator
from vardbio.value import ValueFitConfig
from vardbio_models.toy import plugin


def _context(reward_fn=lambda x: float(x.sum()), budget=None, eta=1.0, seed=0):
    model = plugin.load({"dataset": "gaussian2", "eta": eta})
    reference = model.frozen_copy()
    reward = Reward([RewardTerm(FunctionOracle(reward_fn, "sum"))], InProcessEvaluator(OracleLedger(budget)))
    return AlgorithmContext(model, reference, reward, lambda: plugin.value_head(reference, {"hidden": 32, "depth": 2}),
                            torch.Generator().manual_seed(seed))


def _quick_vard(**kw):
    return VARDConfig(beta=0.5, batch_size=16, value_samples=64, lr=1e-3,
                      value=ValueFitConfig(epochs=5), **kw)


def test_vard_update_has_finite_gradients_and_spends_no_oracle_calls():
    ctx = _context()
    algo = VARD(_quick_vard(steps_per_update=5), ctx)
    algo.setup()
    assert ctx.reward.ledger.total_calls == 64
    before = [p.detach().clone() for p in ctx.model.denoiser.parameters()]
    metrics = algo.iteration(0)
    assert all(np.isfinite(v) for v in metrics.values())
    assert ctx.reward.ledger.total_calls == 64, "phase 2 must not call the oracle"
    changed = any(not torch.equal(a, b) for a, b in zip(before, ctx.model.denoiser.parameters()))
    assert changed
    for p in ctx.reference.denoiser.parameters():
        assert p.grad is None, "the reference stays frozen"


def test_vard_refresh_spends_and_counts_oracle_calls():
    ctx = _context()
    algo = VARD(_quick_vard(refresh_every=2, refresh_samples=32), ctx)
    algo.setup()
    for i in range(3):
        algo.iteration(i)
    assert ctx.reward.ledger.total_calls == 64 + 32


def test_vard_rejects_a_deterministic_sampler():
    with pytest.raises(ValueError, match="eta > 0"):
        VARD(_quick_vard(), _context(eta=0.0))


def test_vard_with_every_reward_nan_names_the_failure():
    ctx = _context(reward_fn=lambda x: float("nan"))
    algo = VARD(_quick_vard(), ctx)
    with pytest.raises(ValueError, match="0 of 64 designs got a finite reward.*NaN"):
        algo.setup()


def test_vard_drops_nan_rewards_and_reports_them():
    counter = iter(range(10**6))
    ctx = _context(reward_fn=lambda x: float("nan") if next(counter) % 4 == 0 else float(x.sum()))
    report = VARD(_quick_vard(), ctx).setup()["value_fit"]
    assert report["n_dropped_nan"] == 16 and report["n_trajectories"] == 48


def test_ddpo_update_has_finite_gradients_and_stops_at_the_budget():
    ctx = _context(budget=40)
    algo = DDPO(DDPOConfig(batch_size=16, inner_epochs=2, lr=1e-3), ctx)
    iterations = 0
    while not algo.finished():
        metrics = algo.iteration(iterations)
        assert np.isfinite(metrics["loss"])
        iterations += 1
    assert iterations == 2 and ctx.reward.ledger.total_calls == 32
    grads = [p.grad for p in ctx.model.denoiser.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_ddpo_kl_penalty_keeps_the_model_closer_to_the_reference():
    """DPOK's per-step KL penalty: the same run with kl_weight > 0 ends at a lower path KL;
    kl_weight = 0 is plain DDPO (no KL computed, no kl_step_mean)."""
    from vardbio.model.diffusion import path_kl

    kls = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        ctx = _context()
        algo = DDPO(DDPOConfig(batch_size=32, lr=1e-3, kl_weight=weight), ctx)
        assert algo.kl_weight == (weight or None)
        for i in range(8):
            metrics = algo.iteration(i)
        assert ("kl_step_mean" in metrics) == (weight > 0)
        traj = ctx.model.rollout(256, torch.Generator().manual_seed(1))
        kls[weight] = float(path_kl(ctx.model, ctx.reference, traj).mean())
    assert kls[1.0] < 0.5 * kls[0.0]


def test_best_of_n_keeps_the_best_candidate_within_the_budget():
    ctx = _context(budget=70)
    algo = BestOfN(BestOfNConfig(n=8), ctx)
    final = algo.final_samples(100, torch.Generator().manual_seed(1))  # the budget pays for 8
    assert ctx.reward.ledger.total_calls == 64
    assert final.states.shape == (8, 2)
    assert torch.allclose(final.kl, torch.full((8,), np.log(8) - 7 / 8))
    # it changes no weights: like SVDD and guidance it says what one design cost to sample
    steps = ctx.reference.num_steps
    assert final.inference["denoiser_calls_per_design"] == 8 * steps
    assert final.inference["plain_sampling_denoiser_calls"] == steps
    assert final.inference["oracle_calls_per_design"] == 8 and final.inference["candidates_per_design"] == 8
    # the chosen designs beat the reference's average clearly
    ref = ctx.reference.rollout(512, torch.Generator().manual_seed(2)).final.sum(1).mean()
    assert final.states.sum(1).mean() > ref + 1.0


def test_algorithm_config_checks():
    with pytest.raises(ValueError, match="beta"):
        VARDConfig(beta=0)
    with pytest.raises(ValueError, match="batch_size"):
        DDPOConfig(batch_size=1)
    with pytest.raises(ValueError, match="kl_weight >= 0"):
        DDPOConfig(kl_weight=-0.1)
    with pytest.raises(ValueError, match="cannot pay for one best-of-8"):
        BestOfN(BestOfNConfig(n=8), _context(budget=7)).final_samples(4, torch.Generator())
    with pytest.raises(ValueError, match="n >= 1"):
        BestOfNConfig(n=0)


def test_budgets_count_one_call_per_oracle_term():
    """A reward of two oracles costs two calls per design: every algorithm sizes its batches so."""
    ctx = _context(budget=64)
    ctx.reward.terms.append(RewardTerm(FunctionOracle(lambda x: float(x[0]), "first")))
    final = BestOfN(BestOfNConfig(n=8), ctx).final_samples(100, torch.Generator().manual_seed(0))
    assert final.states.shape[0] == 4 and ctx.reward.ledger.total_calls == 64
    assert final.inference["oracle_calls_per_design"] == 16

    ctx = _context(budget=100)
    ctx.reward.terms.append(RewardTerm(FunctionOracle(lambda x: float(x[0]), "first")))
    VARD(_quick_vard(), ctx).setup()  # asks for 64 designs, the budget pays for 50
    assert ctx.reward.ledger.total_calls == 100


@pytest.mark.parametrize("lr, kept_updates", [(0.003, 2), (0.05, 0)])  # 0.05 blows the model up
def test_vard_keep_best_ends_with_the_weights_whose_designs_scored_best(lr, kept_updates):
    torch.manual_seed(0)  # the value head's initial weights
    ctx = _context()
    algo = VARD(VARDConfig(beta=0.5, batch_size=16, value_samples=64, lr=lr, value=ValueFitConfig(epochs=5),
                           refresh_every=2, refresh_samples=32, keep_best=True), ctx)
    reports = {0: algo.setup()["value_fit"]}
    weights = {0: {k: v.clone() for k, v in ctx.model.denoiser.state_dict().items()}}
    for i in range(5):
        if i in (2, 4):
            weights[i] = {k: v.clone() for k, v in ctx.model.denoiser.state_dict().items()}
        algo.iteration(i)
        if i in (2, 4):
            reports[i] = algo.last_fit.as_dict()
    assert reports[0]["designs_path_kl"] == 0.0
    assert all(reports[i]["designs_path_kl"] > 0 for i in (2, 4)), "the fine-tuned model has moved"
    objective = {i: r["designs_reward_mean"] - 0.5 * r["designs_path_kl"] for i, r in reports.items()}
    kept = max(objective, key=objective.get)
    assert kept == kept_updates
    final = algo.final_samples(8, torch.Generator().manual_seed(1))
    assert final.summary_entries["kept_weights"]["updates"] == kept
    assert final.summary_entries["kept_weights"]["estimated_objective"] == pytest.approx(objective[kept])
    assert all(torch.equal(v, weights[kept][k]) for k, v in ctx.model.denoiser.state_dict().items())
    resumed = VARD(_quick_vard(refresh_every=2, refresh_samples=32, keep_best=True), _context())
    resumed.load_state_dict(algo.state_dict())
    assert resumed.best["updates"] == kept


def test_vard_keep_best_without_refreshes_is_refused():
    with pytest.raises(ValueError, match="keep_best.*refresh_every"):
        _quick_vard(keep_best=True)
