"""Reward composition: transforms, weights, aggregation, NaN policy, building from config."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException

from vardbio.campaign.config import compose_run_config
from vardbio.reward import (Clip, InProcessEvaluator, OracleRuntime, Reward, RewardTerm,
                            build_reward, build_runtime, build_transform)
from vardbio.reward.compose import RewardTermConfig, build_term
from vardbio.reward.oracle import FunctionOracle
from vardbio.registry import UnknownPluginError

NAN = float("nan")


def test_transforms():
    x = np.array([-12.0, -8.0, -4.0, 0.0, NAN])
    lin = build_transform({"type": "linear", "low": -4.0, "high": -12.0})
    np.testing.assert_allclose(lin(x)[:4], [1.0, 0.5, 0.0, 0.0])
    assert np.isnan(lin(x)[4])
    unclipped = build_transform({"type": "linear", "low": 0, "high": 2, "clip": False})
    np.testing.assert_allclose(unclipped(np.array([4.0])), [2.0])
    sig = build_transform({"type": "sigmoid", "center": -8.0, "scale": -1.0})
    np.testing.assert_allclose(sig(x)[:4], 1 / (1 + np.exp((x[:4] + 8.0))))
    assert sig(np.array([1e6]))[0] == 0.0  # no overflow warning, saturates
    ds = build_transform({"type": "double_sigmoid", "low": 200, "high": 500,
                          "scale_low": 20, "scale_high": 20})
    v = ds(np.array([100.0, 350.0, 700.0]))
    assert v[1] > 0.99 and v[0] < 0.01 and v[2] < 0.01
    assert ds(np.array([200.0]))[0] == pytest.approx(0.5, abs=1e-3)
    clip = build_transform({"type": "clip", "low": 0.0})
    np.testing.assert_array_equal(clip(np.array([-1.0, 2.0])), [0.0, 2.0])
    th = build_transform({"type": "threshold", "threshold": 0.5, "above": False})
    np.testing.assert_array_equal(th(np.array([0.2, 0.5, 0.9])), [1.0, 1.0, 0.0])
    assert build_transform(None)(np.array([3.0]))[0] == 3.0
    # direction: does y follow x up (1), down (-1) or neither (0)? checked on a grid
    grid = np.linspace(-20.0, 800.0, 2001)
    for transform in (lin, unclipped, sig, ds, clip, th, build_transform(None),
                      build_transform({"type": "sigmoid", "center": 1.0, "scale": 2.0})):
        steps = np.diff(transform(grid))
        found = 1 if (steps >= 0).all() else -1 if (steps <= 0).all() else 0
        assert transform.direction == found, transform


def test_a_term_pushing_an_oracle_against_its_direction_is_warned_about():
    import warnings

    lower = FunctionOracle(lambda x: float(x), name="energy", higher_is_better=False, units="kcal/mol")
    with pytest.warns(UserWarning, match=r"'energy' rewards higher energy scores \(kcal/mol\)"):
        Reward([RewardTerm(lower)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Reward([RewardTerm(lower, -1.0)])
        Reward([RewardTerm(lower, 2.0, build_transform({"type": "linear", "low": -4.0, "high": -12.0}))])
        Reward([RewardTerm(FunctionOracle(lambda x: float(x), name="logp_like", higher_is_better=None))])


@pytest.mark.parametrize("cfg,match", [
    ({"type": "nope"}, "unknown transform type"),
    ({"type": "linear", "low": 1, "high": 1}, "low != high"),
    ({"type": "linear", "low": 1}, "bad arguments"),
    ({"type": "sigmoid", "center": 0, "scale": 0}, "non-zero scale"),
    ({"type": "double_sigmoid", "low": 5, "high": 1}, "low < high"),
    ({"type": "clip"}, "low, high or both"),
    ("linear", "mapping"),
])
def test_bad_transform_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_transform(cfg)


def _oracle(name, table):
    return FunctionOracle(lambda d: table[d], name=name)


def test_weighted_sum_with_transforms_and_drop_policy():
    a = _oracle("a", {"x": 1.0, "y": 3.0, "z": NAN})
    b = _oracle("b", {"x": -8.0, "y": -4.0, "z": -6.0})
    reward = Reward([RewardTerm(a, 2.0),
                     RewardTerm(b, 1.0, build_transform({"type": "linear", "low": -4, "high": -12}))])
    out = reward(["x", "y", "z"])
    np.testing.assert_allclose(out.values[:2], [2 * 1 + 0.5, 2 * 3 + 0.0])
    assert np.isnan(out.values[2]) and out.n_failed == 1
    assert out.reasons[2].startswith("a: ") and out.reasons[0] is None
    np.testing.assert_array_equal(out.components["b"], [-8, -4, -6])  # raw scores kept
    np.testing.assert_allclose(out.transformed["b"], [0.5, 0.0, 0.25])
    assert out.provenance["a"]["oracle"] == "a"
    assert reward.ledger.total_calls == 6


def test_penalty_policy_is_stated_not_zero():
    a = _oracle("a", {"x": 1.0, "z": NAN})
    out = Reward([RewardTerm(a)], nan_policy="penalty", nan_penalty=-5.0)(["x", "z"])
    np.testing.assert_array_equal(out.values, [1.0, -5.0])
    assert out.failed.tolist() == [False, True] and out.n_failed == 1
    assert "a:" in out.reasons[1]
    with pytest.raises(ValueError, match="finite nan_penalty"):
        Reward([RewardTerm(a)], nan_policy="penalty")
    with pytest.raises(ValueError, match="only used"):
        Reward([RewardTerm(a)], nan_penalty=0.0)
    with pytest.raises(ValueError, match="unknown nan_policy"):
        Reward([RewardTerm(a)], nan_policy="zero")


def test_geometric_mean():
    a = _oracle("a", {"x": 0.25, "y": 0.0, "z": 2.0})
    b = _oracle("b", {"x": 1.0, "y": 0.5, "z": -1.0})
    reward = Reward([RewardTerm(a, 1.0), RewardTerm(b, 3.0)], aggregation="geometric")
    out = reward(["x", "y", "z"])
    assert out.values[0] == pytest.approx(math.exp((math.log(0.25) + 3 * math.log(1.0)) / 4))
    assert out.values[1] == 0.0
    assert np.isnan(out.values[2]) and "geometric mean" in out.reasons[2]
    with pytest.raises(ValueError, match="positive weights"):
        Reward([RewardTerm(a, -1.0)], aggregation="geometric")
    with pytest.raises(ValueError, match="unknown aggregation"):
        Reward([RewardTerm(a)], aggregation="max")


def test_duplicate_names_need_a_label():
    a = _oracle("a", {"x": 1.0})
    with pytest.raises(ValueError, match="distinct names"):
        Reward([RewardTerm(a), RewardTerm(a)])
    out = Reward([RewardTerm(a), RewardTerm(a, 2.0, name="a2")])(["x"])
    assert out.values[0] == 3.0 and set(out.components) == {"a", "a2"}


def test_build_reward_from_config_dicts(tmp_path):
    terms = [
        {"oracle": "qed", "weight": 1.0},
        {"oracle": "sa_score", "weight": 0.5,
         "transform": {"type": "linear", "low": 10.0, "high": 1.0}},
        {"oracle": "mol_weight", "params": {}, "weight": 1.0, "name": "mw_window",
         "transform": {"type": "double_sigmoid", "low": 150, "high": 500,
                       "scale_low": 10, "scale_high": 10}},
        RewardTermConfig(oracle="structural_alerts", params={"catalogs": ["PAINS"]},
                         weight=-1.0),
    ]
    runtime = build_runtime({"executor": "inprocess", "cache": str(tmp_path / "c.sqlite")})
    reward = build_reward(terms, evaluator=runtime)
    smiles = ["CC(=O)Oc1ccccc1C(=O)O", "not a smiles", "CC(=O)Oc1ccccc1C(=O)O"]
    out = reward(smiles)
    assert np.isfinite(out.values[0]) and np.isnan(out.values[1])
    assert out.values[2] == out.values[0]
    assert set(out.components) == {"qed", "sa_score", "mw_window", "structural_alerts"}
    assert out.provenance["structural_alerts"]["params"] == {"catalogs": ["PAINS"]}
    assert reward.ledger.total_calls == 8 and reward.ledger.cache_hits["qed"] == 1
    # a second identical reward on the same cache makes no real call
    again = build_reward(terms, evaluator=build_runtime({"executor": "inprocess",
                                                         "cache": str(tmp_path / "c.sqlite")}))
    np.testing.assert_array_equal(again(smiles).values, out.values)
    assert again.ledger.total_calls == 0


def test_a_transform_can_be_set_from_the_command_line_on_a_term_that_has_none():
    """The campaign's term has no transform; `+campaign.reward.0.transform={...}` gives it
    one (it used to stop with "'NoneType' object has no attribute 'get'"), the plain form is
    refused by Hydra with the `+` form in its message, and an empty or null transform is none."""
    plain = compose_run_config(["campaign=toy_linear"]).campaign.reward[0]
    assert build_term(plain).transform is None
    set_one = compose_run_config(["campaign=toy_linear", "+campaign.reward.0.transform={type: clip, low: -2.0}"])
    term = build_term(set_one.campaign.reward[0])
    assert isinstance(term.transform, Clip) and term.transform.low == -2.0
    with pytest.raises(ConfigCompositionException, match=r"\+campaign\.reward\.0\.transform"):
        compose_run_config(["campaign=toy_linear", "campaign.reward.0.transform={type: clip, low: -2.0}"])
    cleared = compose_run_config(["campaign=toy_linear", "campaign.reward.0.transform=null"])
    assert build_term(cleared.campaign.reward[0]).transform is None


@pytest.mark.parametrize("terms,err,match", [
    ([], ValueError, "non-empty"),
    ([{"oracle": "no_such_oracle"}], UnknownPluginError, "available"),
    ([{"oracle": "qed", "params": {"bogus": 1}}], ValueError, "bad params"),
    ([{"oracle": "qed", "wieght": 1}], ValueError, "unknown keys"),
    ([{"oracle": "qed", "weight": "heavy"}], ValueError, "weight must be a number"),
    ([{"oracle": "qed", "transform": {"type": "nope"}}], ValueError, "unknown transform"),
    ([{"weight": 1.0}], ValueError, "needs an oracle name"),
    ([{"oracle": "vina_docking", "params": {"receptor": "/nonexistent.pdbqt",
                                             "center": [0, 0, 0], "size": [20, 20, 20]}}],
     ValueError, "does not exist"),
])
def test_bad_reward_config(terms, err, match):
    with pytest.raises(err, match=match):
        build_reward(terms)


def test_build_runtime_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys"):
        build_runtime({"executor": "process", "workers": 2})
    assert isinstance(build_runtime(None), OracleRuntime)


def test_reward_through_process_runtime_matches_inprocess():
    terms = [{"oracle": "qed"}, {"oracle": "logp", "weight": 0.1}]
    smiles = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "bad("]
    ref = build_reward(terms, evaluator=InProcessEvaluator())(smiles)
    with OracleRuntime(executor="process", max_workers=2, chunk_size=2) as rt:
        got = build_reward(terms, evaluator=rt)(smiles)
    np.testing.assert_array_equal(got.values, ref.values)
    assert got.reasons == ref.reasons


def test_pmo_counting_charges_unique_valid_designs_only():
    """Under counting='unique_valid' repeats and failed designs are free, and the history
    keeps each distinct design once, in the order it was first scored."""
    from vardbio.reward import FunctionOracle, Reward, RewardTerm
    from vardbio.reward.evaluator import InProcessEvaluator
    from vardbio.reward.ledger import OracleBudgetExceeded, OracleLedger

    def score(x):
        if x < 0:
            raise ValueError("negative design")
        return float(x)

    ledger = OracleLedger(budget=4, counting="unique_valid")
    reward = Reward([RewardTerm(FunctionOracle(score))], InProcessEvaluator(ledger))
    reward([1, 2, 2, -1, 1])
    assert ledger.spent == 2 and ledger.remaining == 2
    assert [r for _, r in ledger.history][:2] == [1.0, 2.0] and np.isnan(ledger.history[2][1])
    assert ledger.valid_history_rewards() == [1.0, 2.0]
    reward([3, -5])  # two new designs fit the remaining budget; only one counts
    assert ledger.spent == 3
    with pytest.raises(OracleBudgetExceeded, match="unique valid designs"):
        reward([7, 8])
    restored = OracleLedger()
    restored.load_state_dict(ledger.state_dict())
    assert restored.history == ledger.history and restored.spent == 3
    with pytest.raises(ValueError, match="counting"):
        OracleLedger(counting="designs")
