"""The molscore oracle: MolScore objectives against RDKit computed here and our own oracles,
bad inputs, presets by name, refusals of what would not run offline or would depend on
history, the cache identity, pickling and clean-up.

Needs the `molscore` extra (installed by `make install` with the test extra); importing
MolScore takes ~5 s once.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import QED, Descriptors, rdFingerprintGenerator

from vardbio.testing import check_oracle_contract
from vardbio_oracles import molscore_oracle
from vardbio_oracles.chem import QEDOracle
from vardbio_oracles.pmo import PMOOracle

if importlib.util.find_spec("molscore") is None:
    pytest.fail("the molscore oracle tests need molscore: run `make install`, or "
                "`.venv/bin/pip install 'vardbio[molscore]'`", pytrace=False)

from vardbio_oracles.molscore_oracle import MolScoreOracle  # noqa: E402

MOSES = Path(__file__).resolve().parents[1] / "data" / "molecules" / "moses_small.smi"
CELECOXIB = "Cc1ccc(-c2cc(C(F)(F)F)nn2-c2ccc(S(N)(=O)=O)cc2)cc1"


def _molecules() -> list[str]:
    lines = [ln.split()[0] for ln in MOSES.read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    return lines[:17] + [CELECOXIB, "c1ccccc1", "[2H]C([2H])([2H])c1ccccc1N", "CC(=O)[O-].[Na+]"]


MOLS = _molecules()
BAD = ["C1CC", "not a smiles", "", "c1cccc1", None, 42]


def _config(functions, metrics, method="single", **extra):
    return {"task": "test", "scoring_functions": functions,
            "scoring": {"method": method, "metrics": metrics}, **extra}


QED_CONFIG = _config(
    [{"name": "RDKitDescriptors", "run": True, "parameters": {"prefix": "desc"}}],
    [{"name": "desc_QED", "weight": 1, "modifier": "raw", "parameters": {}}])

SIMILARITY = {"name": "TanimotoSimilarity", "run": True,
              "parameters": {"prefix": "cx", "ref_smiles": [CELECOXIB], "fp": "ECFP4c",
                             "method": "max"}}
SIMILARITY_CONFIG = _config([SIMILARITY], [{"name": "cx_Sim", "weight": 1.0, "modifier": "raw",
                                            "parameters": {}}])

# similarity through a ramp, TPSA through a one-sided Gaussian, their geometric mean, times
# a filter metric that is 1 only for molecules with a benzene ring
MPO_CONFIG = _config(
    [SIMILARITY, {"name": "RDKitDescriptors", "run": True, "parameters": {"prefix": "desc"}},
     {"name": "SubstructureMatch", "run": True,
      "parameters": {"prefix": "ring", "smarts": ["c1ccccc1"], "method": "any"}}],
    [{"name": "cx_Sim", "weight": 1.0, "modifier": "lin_thresh",
      "parameters": {"objective": "maximize", "upper": 0.5, "lower": 0.0, "buffer": 0.5}},
     {"name": "desc_TPSA", "weight": 1.0, "modifier": "gauss",
      "parameters": {"objective": "maximize", "mu": 80.0, "sigma": 15.0}},
     {"name": "ring_substruct_match", "filter": True, "weight": 1.0, "modifier": "raw",
      "parameters": {}}],
    method="gmean")


def _ecfp4_similarity(smiles: str) -> float:
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2)
    fp = gen.GetSparseCountFingerprint(Chem.MolFromSmiles(smiles))
    ref = gen.GetSparseCountFingerprint(Chem.MolFromSmiles(CELECOXIB))
    return DataStructs.TanimotoSimilarity(fp, ref)


def _mpo_by_hand(smiles: str) -> float:
    mol = Chem.MolFromSmiles(smiles)
    ramp = min(max(_ecfp4_similarity(smiles) / 0.5, 0.0), 1.0)
    tpsa = Descriptors.TPSA(mol)
    gauss = 1.0 if tpsa >= 80 else math.exp(-0.5 * ((tpsa - 80) / 15) ** 2)
    terms = [max(t, 1e-6) for t in (ramp, gauss)]  # MolScore floors every term at 1e-6
    ring = float(mol.HasSubstructMatch(Chem.MolFromSmarts("c1ccccc1")))
    return math.sqrt(terms[0] * terms[1]) * ring


@pytest.fixture(scope="module")
def qed_oracle():
    return MolScoreOracle(config=QED_CONFIG)


def test_qed_config_matches_rdkit_and_qed_oracle(qed_oracle):
    got = qed_oracle.score(MOLS)
    assert np.isfinite(got.values).all(), got.reasons
    direct = [QED.qed(Chem.MolFromSmiles(s)) for s in MOLS]
    np.testing.assert_allclose(got.values, direct, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.values, QEDOracle().score(MOLS).values, rtol=0, atol=1e-6)


def test_similarity_config_matches_pmo_celecoxib():
    got = MolScoreOracle(config=SIMILARITY_CONFIG).score(MOLS).values
    np.testing.assert_allclose(got, [_ecfp4_similarity(s) for s in MOLS], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, PMOOracle("celecoxib_rediscovery").score(MOLS).values,
                               rtol=0, atol=1e-6)
    assert got[MOLS.index(CELECOXIB)] == pytest.approx(1.0)


def test_mpo_config_modifiers_aggregation_and_filter():
    got = MolScoreOracle(config=MPO_CONFIG).score(MOLS).values
    expected = [_mpo_by_hand(s) for s in MOLS]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert (np.asarray(expected) == 0).any() and (np.asarray(expected) > 0.5).any()


def test_invalid_designs_get_nan_and_the_reason(qed_oracle):
    result = qed_oracle.score(["CCO"] + BAD)
    assert np.isfinite(result.values[0]) and np.isnan(result.values[1:]).all()
    assert result.reasons[0] is None
    assert all(r and r.startswith("invalid molecule") for r in result.reasons[1:])
    assert "unparsable SMILES 'C1CC'" in result.reasons[1]
    assert "sanitisation failed" in result.reasons[4]
    assert "None" in result.reasons[5] and "int" in result.reasons[6]


def test_oracle_contract_on_a_preset():
    oracle = MolScoreOracle(benchmark="GuacaMol", task="Celecoxib_rediscovery")
    check_oracle_contract(oracle, MOLS[:8], BAD)


def test_mol_designs_score_as_their_smiles(qed_oracle):
    mols = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in MOLS[:5]]
    np.testing.assert_allclose(qed_oracle.score(mols).values, qed_oracle.score(MOLS[:5]).values,
                               rtol=0, atol=0)
    assert qed_oracle.design_key(mols[0]) == qed_oracle.design_key(MOLS[0])


@pytest.mark.parametrize("benchmark, task, pmo_task", [
    ("MolOpt", "QED", "qed"),
    ("GuacaMol", "Albuterol_similarity", "albuterol_similarity"),
    ("MolOpt", "Mestranol_similarity", "mestranol_similarity"),
])
def test_benchmark_task_by_name(benchmark, task, pmo_task):
    oracle = MolScoreOracle(benchmark=benchmark, task=task)
    assert oracle.params()["benchmark"] == benchmark and oracle.params()["task"] == task
    np.testing.assert_allclose(oracle.score(MOLS).values, PMOOracle(pmo_task).score(MOLS).values,
                               rtol=0, atol=1e-6)


def test_presets_listed():
    presets = MolScoreOracle.presets()
    assert "Celecoxib_rediscovery" in presets["GuacaMol"] and "DRD2" in presets["MolOpt"]


def test_missing_config_file_is_one_clear_value_error(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match="MolScore config file not found") as err:
        MolScoreOracle(config=str(missing))
    assert str(missing) in str(err.value)
    with pytest.raises(ValueError, match="benchmark='GuacaMol', task='QED'"):
        MolScoreOracle(config="GuacaMol:QED")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        MolScoreOracle(config=str(bad))


@pytest.mark.parametrize("kwargs, message", [
    ({}, "either config"),
    ({"config": QED_CONFIG, "benchmark": "MolOpt", "task": "QED"}, "either config"),
    ({"benchmark": "MolOpt"}, "needs both benchmark and task"),
    ({"benchmark": "Nope", "task": "QED"}, "unknown MolScore benchmark 'Nope'; available:.*MolOpt"),
    ({"benchmark": "MolOpt", "task": "Nope"}, "unknown task 'Nope'.*Albuterol_similarity"),
    ({"config": 3}, "must be a path"),
    ({"config": {"scoring": {}}}, "no 'scoring_functions' section"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MolScoreOracle(**kwargs)


def test_tasks_needing_models_or_downloads_are_refused():
    with pytest.raises(ValueError, match="LegacyQSAR does not run offline: it creates a conda"):
        MolScoreOracle(benchmark="MolOpt", task="DRD2")
    with pytest.raises(ValueError, match="PIDGIN does not run offline: it downloads"):
        MolScoreOracle(benchmark="5HT2A_PhysChem", task="5HT2A_nodiv")
    bloom = _config([{"name": "BloomFilter", "run": True,
                      "parameters": {"prefix": "zinc", "preset": "zinc20"}}],
                    [{"name": "zinc_inside", "weight": 1, "modifier": "raw", "parameters": {}}])
    with pytest.raises(ValueError, match="BloomFilter does not run offline: its preset 'zinc20'"):
        MolScoreOracle(config=bloom)


@pytest.mark.parametrize("change, message", [
    ({"method": "auto_wsum"}, "scores a molecule against the rest of its batch"),
    ({"method": "median"}, "unknown aggregation 'median'"),
    ({"modifier": "norm"}, "'norm' modifier needs fixed 'min' and 'max'"),
    ({"modifier": "squash"}, "unknown modifier 'squash'"),
    ({"metric": "desc_QEDD"}, "no number for the probe molecule CCO: MolScore"),
    ({"function": "NoSuchFunction"}, "'NoSuchFunction' is not a MolScore .* scoring function"),
])
def test_history_dependent_or_broken_objectives_are_refused(change, message):
    cfg = json.loads(json.dumps(QED_CONFIG))
    metric = cfg["scoring"]["metrics"][0]
    cfg["scoring"]["method"] = change.get("method", "single")
    metric["modifier"] = change.get("modifier", "raw")
    metric["name"] = change.get("metric", "desc_QED")
    cfg["scoring_functions"][0]["name"] = change.get("function", "RDKitDescriptors")
    if metric["modifier"] == "norm":
        metric["parameters"] = {"objective": "maximize"}
    with pytest.raises(ValueError, match=message):
        MolScoreOracle(config=cfg)


def test_norm_with_fixed_range_does_not_depend_on_history():
    cfg = json.loads(json.dumps(QED_CONFIG))
    cfg["scoring"]["metrics"][0].update(
        modifier="norm", parameters={"objective": "maximize", "min": 0.2, "max": 0.7})
    oracle = MolScoreOracle(config=cfg)
    first = oracle.score(MOLS).values
    np.testing.assert_allclose(oracle.score(MOLS[::-1]).values[::-1], first, rtol=0, atol=0)
    qed = np.array([QED.qed(Chem.MolFromSmiles(s)) for s in MOLS])
    np.testing.assert_allclose(first, np.maximum((qed - 0.2) / 0.5, 1e-6), rtol=0, atol=1e-9)


def test_diversity_filter_and_budget_are_not_applied_but_reported():
    cfg = dict(QED_CONFIG, budget=100, diversity_filter={
        "run": True, "name": "ScaffoldSimilarityECFP",
        "parameters": {"nbmax": 1, "minscore": 0.0, "minsimilarity": 0.1, "radius": 2,
                       "useFeatures": False, "bits": 1024, "outputmode": "binary"}})
    with pytest.warns(UserWarning, match="diversity_filter"):
        oracle = MolScoreOracle(config=cfg)
    assert oracle.ignored == {"diversity_filter": "ScaffoldSimilarityECFP", "budget": 100}
    plain = MolScoreOracle(config=QED_CONFIG)
    # repeats and scaffold-mates would be penalised by the filter: here they score alike
    twice = MOLS + MOLS
    np.testing.assert_allclose(oracle.score(twice).values, plain.score(twice).values)
    np.testing.assert_allclose(oracle.score(MOLS).values, plain.score(MOLS).values)
    assert oracle.identity() == plain.identity()


def test_params_identify_the_objective(tmp_path):
    path = tmp_path / "qed.json"
    path.write_text(json.dumps(QED_CONFIG, indent=2))
    from_file = MolScoreOracle(config=str(path))
    from_dict = MolScoreOracle(config=QED_CONFIG)
    assert from_file.params()["config"] == str(path)
    assert from_dict.params()["config"]["scoring"]["metrics"][0]["name"] == "desc_QED"
    assert from_file.params()["objective_sha256"] == from_dict.params()["objective_sha256"]
    assert from_file.params()["molscore_version"] == molscore_oracle._import_molscore()["version"]
    assert from_file.version == "1" and "molscore@1" in from_file.identity()
    cfg = json.loads(json.dumps(QED_CONFIG))
    cfg["scoring"]["metrics"][0].update(modifier="gauss", parameters={
        "objective": "range", "mu": 0.5, "sigma": 0.1})
    path.write_text(json.dumps(cfg))
    changed = MolScoreOracle(config=str(path))
    assert changed.identity() != from_file.identity()
    assert json.loads(json.dumps(changed.params())) == changed.params()


def test_files_named_by_the_objective_are_hashed(tmp_path):
    refs = tmp_path / "refs.smi"
    refs.write_text(CELECOXIB + "\n")
    cfg = json.loads(json.dumps(SIMILARITY_CONFIG))
    cfg["scoring_functions"][0]["parameters"]["ref_smiles"] = str(refs)
    before = MolScoreOracle(config=cfg)
    assert before.score([CELECOXIB]).values[0] == pytest.approx(1.0)
    refs.write_text("c1ccccc1\n")
    after = MolScoreOracle(config=cfg)
    assert after.params()["objective_sha256"] != before.params()["objective_sha256"]


def test_pickles_and_cleans_up(qed_oracle):
    oracle = MolScoreOracle(config=QED_CONFIG)
    folder = oracle._tmp
    assert folder and os.path.isdir(folder)
    clone = pickle.loads(pickle.dumps(oracle))
    np.testing.assert_array_equal(clone.score(MOLS[:4]).values, oracle.score(MOLS[:4]).values)
    assert clone._tmp != folder
    clone_folder = clone._tmp
    oracle.close()
    clone.close()
    assert not os.path.exists(folder) and not os.path.exists(clone_folder)
    assert np.isfinite(oracle.score(MOLS[:2]).values).all()  # rebuilt on use
    oracle.close()


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(molscore_oracle, "_IMPORTED", {})
    for name in [m for m in sys.modules if m == "molscore" or m.startswith("molscore.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "molscore", None)  # what an absent package looks like
    with pytest.raises(ImportError, match=r"pip install 'vardbio\[molscore\]'"):
        MolScoreOracle(config=QED_CONFIG)


def test_registered_as_an_oracle():
    from vardbio.reward import build_oracle
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        oracle = build_oracle("molscore", {"benchmark": "MolOpt", "task": "QED"})
    assert isinstance(oracle, MolScoreOracle)


def test_molscore_timeout_is_nan_not_zero():
    cfg = json.loads(json.dumps(SIMILARITY_CONFIG))
    cfg["scoring_functions"][0]["name"] = "MolecularSimilarity"
    oracle = MolScoreOracle(config=cfg)
    oracle.objective["scoring_functions"][0]["parameters"]["timeout"] = 1e-9
    oracle.close()  # the next call rebuilds MolScore with the tiny timeout
    many = [ln.split()[0] for ln in MOSES.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")][:300]  # ~0.1 s: far past the timeout
    result = oracle.score(many)
    assert np.isnan(result.values).all()
    assert all("MolScore: Timeout" in r for r in result.reasons)
