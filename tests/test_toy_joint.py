"""The toy joint domain (a Gaussian vector and a masked categorical sequence on one
JointProcess clock): the shipped model, its reward, VARD against the exact optimum, and
DDPO and best-of-N running on the joint process unchanged."""
import numpy as np
import pytest

from vardbio.campaign.runner import run_campaign
from vardbio.cli import compose_config
from vardbio.testing import check_model_contract, check_oracle_contract
from vardbio_models.toy_joint import JointDesign, JointScore, plugin
from vardbio_models.toy_sequence import tilted_categoricals


def _campaign(tmp_path, *overrides) -> dict:
    return run_campaign(compose_config("config", ["campaign=toy_joint", f"out_dir={tmp_path}", "progress=false",
                                                  *overrides]))


def test_shipped_toy_joint_checkpoint_passes_the_contract():
    model = check_model_contract(plugin, {}, model=plugin.load({}))
    assert model.process.state_size == 2 + 4 * 4 and model.num_steps == 20


def test_joint_score_contract_and_value():
    oracle = JointScore(dim=2, length=3, vocab=2, table=[[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]], direction=[3.0, 4.0])
    good = [JointDesign(np.array([1.0, 1.0]), "ACA"), JointDesign(np.zeros(2), "CCC")]
    bad = [JointDesign(np.array([1.0, 1.0]), "ACD"), JointDesign(np.array([np.nan, 0.0]), "AAA"),
           JointDesign(np.zeros(3), "AAA"), "ACA"]
    check_oracle_contract(oracle, good, bad)
    assert oracle.score(good).values.tolist() == pytest.approx([0.6 + 0.8 + 1.0 + 2.0 + 0.5, 0.0 + 2.0 + 0.5])


def test_tilted_categoricals_match_brute_force():
    """The factorised optimum equals p* ∝ p·exp(r/β) computed over all 2³ sequences."""
    rng = np.random.default_rng(0)
    p, table, beta = rng.dirichlet(np.ones(2), size=3), rng.standard_normal((3, 2)), 0.7
    p_star, reward, kl = tilted_categoricals(p, table, beta)
    seqs = np.array(np.meshgrid(*[range(2)] * 3, indexing="ij")).reshape(3, -1).T  # (8, 3)
    base = np.prod(p[np.arange(3), seqs], axis=1)
    r = table[np.arange(3), seqs].sum(1)
    star = base * np.exp(r / beta)
    star /= star.sum()
    assert reward == pytest.approx(float(star @ r)) and kl == pytest.approx(float(star @ np.log(star / base)))
    assert np.allclose(p_star[0], [star[seqs[:, 0] == v].sum() for v in range(2)])


def test_vard_on_the_joint_process_reaches_the_exact_optimum(tmp_path):
    """The shipped campaign: final reward within 10% of the analytic shift, KL within 25%,
    and each part moved toward its own tilt."""
    s = _campaign(tmp_path)
    initial, final = s["reward_initial"]["mean"], s["reward_final"]["mean"]
    optimum, kl_opt = s["analytic"]["reward_optimum"], s["analytic"]["kl_optimum"]
    parts = s["analytic"]["parts"]
    assert min(parts["vector"]["kl_optimum"], parts["sequence"]["kl_optimum"]) > 0.5, "both parts must move"
    assert abs(final - optimum) <= 0.10 * abs(optimum - initial)
    assert abs(s["kl_to_reference"] - kl_opt) <= 0.25 * kl_opt
    for name, part in parts.items():
        moved = (part["reward_final"] - part["reward_initial"]) / (part["reward_optimum"] - part["reward_initial"])
        assert moved > 0.7, f"part '{name}' covers only {moved:.0%} of its own reward shift"
    assert s["oracle_calls"] <= 1024


def test_ddpo_and_best_of_n_run_on_the_joint_process(tmp_path):
    ddpo = _campaign(tmp_path / "ddpo", "algorithm=ddpo", "algorithm.batch_size=32", "algorithm.kl_weight=0.5",
                     "campaign.iterations=4", "campaign.eval_samples=64", "campaign.oracle_budget=128")
    assert ddpo["algorithm"] == "ddpo" and ddpo["oracle_calls"] == 128
    assert np.isfinite(ddpo["reward_final"]["mean"]) and ddpo["kl_to_reference"] > 0
    best = _campaign(tmp_path / "bon", "algorithm=best_of_n", "campaign.eval_samples=64",
                     "campaign.oracle_budget=512")
    assert best["algorithm"] == "best_of_n"
    assert best["reward_final"]["mean"] > best["reward_initial"]["mean"] + 1.0


def test_guidance_on_the_joint_process_moves_both_parts_toward_the_optimum(tmp_path):
    """Guidance at strength 1 (β = 1, the campaign's): the tilt is split by part, so each part
    moves toward its own exact tilt and the KL is about the optimum's."""
    s = _campaign(tmp_path, "algorithm=guidance", "algorithm.strength=1.0", "algorithm.value_samples=1024",
                  "campaign.eval_samples=1024")
    initial, final = s["reward_initial"]["mean"], s["reward_final"]["mean"]
    optimum, kl_opt = s["analytic"]["reward_optimum"], s["analytic"]["kl_optimum"]
    assert (final - initial) / (optimum - initial) > 0.8  # measured 0.87
    assert 0.6 * kl_opt < s["kl_to_reference"] < 1.4 * kl_opt  # measured 1.56 against 1.73
    for name, part in s["analytic"]["parts"].items():
        moved = (part["reward_final"] - part["reward_initial"]) / (part["reward_optimum"] - part["reward_initial"])
        assert moved > 0.6, f"part '{name}' covers only {moved:.0%} of its own reward shift"
    assert s["oracle_calls"] == 1024, "only the value fit calls the oracle"  # parts moved 0.93 and 0.72
