"""The optimum estimated from scored reference designs (vardbio.optimum) against the toy
domains' closed forms, its trust rule, and its place in a campaign's summary and report."""
import json
import math

import numpy as np
import pytest
import torch

import vardbio
from vardbio.algorithms import SVDDConfig
from vardbio.campaign.report import figures, frontier_points
from vardbio.optimum import beta_grid, campaign_optimum, estimate_optimum, optimum_frontier
from vardbio_models.toy import DATASETS, LinearReward, plugin

N = 4096


@pytest.fixture(scope="module")
def toy_linear_rewards():
    """toy_linear: rewards w·x of 4,096 samples of the pretrained 8-d model, and the closed
    form's wᵀΣw from the same samples (as the campaign's analytic optimum takes it)."""
    model = plugin.load({"dataset": "gaussian8"})
    x = model.rollout(N, torch.Generator().manual_seed(0)).final.double().numpy()
    w = LinearReward(8).w
    return x @ w, float(w @ np.cov(x.T) @ w)


def _errors(est, r_mean, shift, kl, gain):
    return ((est.reward - r_mean) / shift - 1, est.kl / kl - 1, (est.j_star - r_mean) / gain - 1)


def test_toy_linear_frontier_matches_the_closed_form(toy_linear_rewards):
    """Optimum N(μ + Σw/β, Σ): reward shift wᵀΣw/β, KL wᵀΣw/(2β²), J* − E[r] = wᵀΣw/(2β)."""
    r, s2 = toy_linear_rewards
    frontier = optimum_frontier(r, beta_grid(r))
    trusted = [e for e in frontier if e.trusted]
    assert len(trusted) >= 15
    for est in trusted:
        b = est.beta
        shift_err, kl_err, gain_err = _errors(est, r.mean(), s2 / b, s2 / (2 * b * b), s2 / (2 * b))
        assert abs(gain_err) < 0.05, (b, est.ess)
        if est.ess >= 0.1 * N:  # ESS 487 of 4,096 and more: every number within 5 %
            assert abs(shift_err) < 0.05 and abs(kl_err) < 0.05, (b, est.ess, shift_err, kl_err)
    assert max(e.kl for e in trusted) > 1.0  # the trusted frontier reaches beyond 1 nat
    for smaller, larger in zip(frontier, frontier[1:]):  # smaller β: further out, fewer effective samples
        assert smaller.ess <= larger.ess


def test_toy_linear_campaign_beta_is_beyond_4096_designs(toy_linear_rewards):
    """At the campaign's β = 0.25 the optimum is 4.9 nats away; 4,096 designs give an ESS of
    about 40, so the estimate is refused (its numbers would be 13-22 % low), with the reason."""
    r, s2 = toy_linear_rewards
    est = estimate_optimum(r, 0.25)
    assert not est.trusted and est.j_star is None and est.reward is None and est.kl is None
    assert est.ess < 100 and "effective sample size" in est.note and "beta=0.25" in est.note
    loose = estimate_optimum(r, 0.25, min_ess=0, min_ess_fraction=0)
    assert loose.kl < 0.95 * s2 / (2 * 0.25**2)  # what it would have said: biased low


def test_toy_mixture_optimum_matches_the_closed_form():
    """toy_mixture (0.9/0.1 mixture, reward 0.75·x₁, β = 1): the optimum reweights the
    components in closed form. Samples of the mixture itself, so only the estimator is tested."""
    base = DATASETS["mixture2_skewed"]
    w = LinearReward(2, 0.75, [1.0, 0.0]).w
    r = base.sample(N, np.random.default_rng(0)) @ w
    optimum = base.tilted(w, 1.0)
    reward = float(np.sum(optimum.weights * (optimum.means @ w)))
    log_z = base.log_normaliser(w, 1.0)
    mean = float(base.weights @ (base.means @ w))
    est = estimate_optimum(r, 1.0)
    assert est.trusted
    errors = ((est.reward - r.mean()) / (reward - mean) - 1, est.kl / (reward - log_z) - 1,
              (est.j_star - r.mean()) / (log_z - mean) - 1)
    assert all(abs(e) < 0.05 for e in errors), errors


def test_weights_are_stable_nan_is_dropped_and_counted():
    r = np.array([1e4, 1e4 - 1.0, np.nan, 0.0] * 50)
    est = estimate_optimum(r, 1e-2, min_ess=0)
    assert est.n == 150 and est.n_nan == 50 and math.isfinite(est.j_star)
    assert est.reward == pytest.approx(1e4) and est.kl == pytest.approx(math.log(3))
    flat = estimate_optimum(np.full(200, 2.0), 0.5)
    assert flat.trusted and flat.kl == pytest.approx(0.0, abs=1e-12) and flat.ess == pytest.approx(200)
    assert flat.j_star == pytest.approx(2.0)
    few = estimate_optimum([1.0, np.nan], 1.0)
    assert not few.trusted and "only 1 finite reward" in few.note
    with pytest.raises(ValueError, match="beta > 0"):
        estimate_optimum(r, 0.0)


def test_campaign_block_untrusted_and_without_beta():
    r = np.random.default_rng(1).normal(size=500)
    block = campaign_optimum(r, 0.05, reward_mean=1.0, kl=2.0, kl_note="path KL")
    assert block["optimum"]["trusted"] is False and block["optimum"]["j_star"] is None
    assert block["achievable_gain_fraction"] is None and "untrusted" in block["achievable_gain_note"]
    assert block["objective_j"] == pytest.approx(1.0 - 0.05 * 2.0)
    assert all(len(p) == 4 for p in block["optimum"]["frontier"])
    none = campaign_optimum(r, None, reward_mean=1.0, kl=2.0, kl_note="bound")
    assert set(none) == {"optimum"} and none["optimum"]["beta"] is None and none["optimum"]["frontier"]
    ok = campaign_optimum(r, 2.0, reward_mean=0.2, kl=0.01, kl_note="path KL")
    j_ref = r.mean()
    assert ok["achievable_gain_fraction"] == pytest.approx((0.2 - 0.02 - j_ref) / (ok["optimum"]["j_star"] - j_ref))


def test_summary_and_report_place_the_run_against_the_optimum(tmp_path):
    """A campaign reports the optimum estimated from its own reference evaluation designs
    (no oracle call beyond the evaluation), J, and the fraction of the achievable gain."""
    trainer = vardbio.Trainer("toy", "toy_linear", vardbio.VARDConfig(beta=1.0, lr=1e-3, value_samples=64,
                                                                       batch_size=16),
                              model_options={"dataset": "gaussian8"}, iterations=3, eval_samples=512,
                              out_dir=tmp_path, progress=False)
    summary = trainer.train()
    assert summary["eval_oracle_calls"] == 1024 and summary["oracle_calls"] == 64
    optimum = summary["optimum"]
    assert optimum["beta"] == 1.0 and optimum["trusted"] and optimum["n"] == 512
    assert optimum["reward"] == pytest.approx(summary["analytic"]["reward_optimum"], rel=0.1)
    assert summary["objective_j"] == pytest.approx(summary["reward_final"]["mean"] - summary["kl_to_reference"])
    assert "lower bound" in summary["objective_kl_note"]
    j_ref = summary["reward_initial"]["mean"]
    assert summary["achievable_gain_fraction"] == pytest.approx(
        (summary["objective_j"] - j_ref) / (optimum["j_star"] - j_ref))
    assert json.loads((tmp_path / "summary.json").read_text())["optimum"]["frontier"] == optimum["frontier"]
    figs = figures(tmp_path)
    line = next(l for l in figs["optimum"].axes[0].lines if l.get_gid() == "frontier")
    np.testing.assert_allclose(line.get_xydata(), frontier_points(summary))
    assert "estimated optimum at β = 1" in (tmp_path / "report.md").read_text()
    for fig in figs.values():
        fig.clf()


def test_a_sampler_run_reports_its_inference_cost(tmp_path):
    summary = vardbio.Trainer("toy", "toy_linear", SVDDConfig(candidates=4, alpha=1.0, value_samples=64),
                              model_options={"dataset": "gaussian8"}, eval_samples=128, out_dir=tmp_path,
                              progress=False, report=False).train()
    assert summary["algorithm"] == "svdd" and summary["oracle_calls"] == 64
    assert summary["inference"]["value_calls_per_design"] == 80 and summary["optimum"]["beta"] == 1.0
    assert summary["kl_to_reference"] == pytest.approx(summary["inference"]["kl_mean"])


def test_bench_sweeps_settings_and_keeps_every_point(tmp_path):
    from vardbio.campaign.bench import bench_configs, run_bench

    configs, out_dir = bench_configs([
        "campaign=toy_linear", f"out_dir={tmp_path}", "progress=false", "report=false",
        "campaign.iterations=2", "campaign.eval_samples=256", "campaign.oracle_budget=64",
        "bench.algorithms=[vard]", "sweep.vard.beta=[0.5, 1.0]", "sweep.svdd.alpha=2.0",
        "sweep.svdd.candidates=2,4"])
    assert list(configs) == ["vard[beta=0.5]", "vard[beta=1.0]", "svdd[alpha=2.0,candidates=2]",
                             "svdd[alpha=2.0,candidates=4]"]
    assert configs["vard[beta=1.0]"].algorithm["beta"] == 1.0
    assert configs["vard[beta=1.0]"].algorithm["lr"] == 1e-3, "the campaign's tuning file still applies"
    assert configs["svdd[alpha=2.0,candidates=4]"].out_dir == str(tmp_path / "svdd_alpha2.0_candidates4")
    result = run_bench(configs, out_dir)
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert [p["label"] for p in bench["points"]] == list(configs)
    assert [p["beta"] for p in bench["points"]] == [0.5, 1.0, 2.0, 2.0]
    assert all(p["oracle_calls"] <= 64 for p in bench["points"])
    assert bench["points"][3]["inference"]["value_calls_per_design"] == 80
    assert bench["frontier"] and bench["frontier"] == result["frontier"]
    assert (tmp_path / "bench.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="sweep.<algorithm>.<key>"):
        bench_configs(["sweep.beta=[1]"])
