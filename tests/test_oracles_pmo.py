"""PMO oracles: every task against GuacaMol's own scoring functions, bad inputs, batching.

The reference is guacamol 0.5.5 (installed with --no-deps by `make install`). Its benchmark
objectives are taken from its own suites by name, so the test does not restate any
definition. Two import shims: recent SciPy dropped `scipy.histogram`, and guacamol's
distribution-learning module imports `fcd` (a different package from fcd-torch), which the
goal-directed objectives never use.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

from vardbio_oracles.pmo import TASKS, PMOOracle

MOSES = Path(__file__).resolve().parents[1] / "data" / "molecules" / "moses_small.smi"

# PMO task -> (GuacaMol suite, benchmark name in it).
REFERENCE_NAMES = {
    "albuterol_similarity": ("v2", "Albuterol similarity"),
    "amlodipine_mpo": ("v2", "Amlodipine MPO"),
    "celecoxib_rediscovery": ("v2", "Celecoxib rediscovery"),
    "deco_hop": ("v2", "Deco Hop"),
    "fexofenadine_mpo": ("v2", "Fexofenadine MPO"),
    "isomers_c7h8n2o2": ("trivial", "C7H8N2O2"),
    "isomers_c9h10n2o2pf2cl": ("v2", "C9H10N2O2PF2Cl"),
    "median1": ("v2", "Median molecules 1"),
    "median2": ("v2", "Median molecules 2"),
    "mestranol_similarity": ("v2", "Mestranol similarity"),
    "osimertinib_mpo": ("v2", "Osimertinib MPO"),
    "perindopril_mpo": ("v2", "Perindopril MPO"),
    "qed": ("trivial", "QED"),
    "ranolazine_mpo": ("v2", "Ranolazine MPO"),
    "scaffold_hop": ("v2", "Scaffold Hop"),
    "sitagliptin_mpo": ("v2", "Sitagliptin MPO"),
    "thiothixene_rediscovery": ("v2", "Thiothixene rediscovery"),
    "troglitazone_rediscovery": ("v2", "Troglitazone rediscovery"),
    "valsartan_smarts": ("v2", "Valsartan SMARTS"),
    "zaleplon_mpo": ("v2", "Zaleplon MPO"),
}

# Hand-picked molecules for the terms that random drug-like molecules rarely reach.
EDGE_CASES = [
    # the task targets and reference molecules themselves
    "CC1=CC=C(C=C1)C1=CC(=NN1C1=CC=C(C=C1)S(N)(=O)=O)C(F)(F)F",
    "Cc1c(C)c2OC(C)(COc3ccc(CC4SC(=O)NC4=O)cc3)CCc2c(C)c1O",
    "CN(C)S(=O)(=O)c1ccc2Sc3ccccc3C(=CCCN4CCN(C)CC4)c2c1",
    "CC(C)(C)NCC(O)c1ccc(O)c(CO)c1",
    "COc1ccc2[C@H]3CC[C@@]4(C)[C@@H](CC[C@@]4(O)C#C)[C@@H]3CCc2c1",
    "CC1(C)C2CCC1(C)C(=O)C2", "CC(C)C1CCC(C)CC1O",
    "O=C1N(CC(N2C1CC3=C(C2C4=CC5=C(OCO5)C=C4)NC6=C3C=CC=C6)=O)C",
    "CCCC1=NN(C2=C1N=C(NC2=O)C3=C(C=CC(=C3)S(=O)(=O)N4CCN(CC4)C)OCC)C",
    "COc1cc(N(C)CCN(C)C)c(NC(=O)C=C)cc1Nc2nccc(n2)c3cn(C)c4ccccc34",
    "CC(C)(C(=O)O)c1ccc(cc1)C(O)CCCN2CCC(CC2)C(O)(c3ccccc3)c4ccccc4",
    "COc1ccccc1OCC(O)CN2CCN(CC(=O)Nc3c(C)cccc3C)CC2",
    "O=C(OCC)C(NC(C(=O)N1C(C(=O)O)CC2CCCCC12)C)CCC",
    r"Clc1ccccc1C2C(=C(/N/C(=C2/C(=O)OCC)COCCN)C)\C(=O)OC",
    "Fc1cc(c(F)cc1F)CC(N)CC(=O)N3Cc2nnc(n2CC3)C(F)(F)F",
    "O=C(C)N(CC)C1=CC=CC(C2=CC=NC3=C(C=NN23)C#N)=C1",
    "CCCOc1cc2ncnc(Nc3ccc4ncsc4c3)c2cc1S(=O)(=O)C(C)(C)C",
    # deco/scaffold hop SMARTS: quinazoline scaffold with other decorations (gefitinib,
    # erlotinib), the decoration on another scaffold, the start without its sulfone
    "COc1cc2ncnc(Nc3ccc(F)c(Cl)c3)c2cc1OCCCN1CCOCC1",
    "COCCOc1cc2ncnc(Nc3cccc(C#C)c3)c2cc1OCCOC",
    "CCCOc1ccc2c(Nc3ccc4ncsc4c3)ncnc2c1",
    "CCCOc1cc2ncnc(Nc3ccc4ncsc4c3)c2cc1C",
    "CCCOc1ccc(Nc2ccc3ncsc3c2)cc1",
    # valsartan and a valsartan_smarts hit with properties near sitagliptin's, a MOSES
    # molecule that scores 0.28 on sitagliptin_mpo, exact isomers of the three formulas
    "CCCCC(=O)N(Cc1ccc(-c2ccccc2-c2nn[nH]n2)cc1)[C@@H](C(C)C)C(=O)O",
    "CN(C(=O)CF)Cc1ccc(-c2ccccc2-c2nn[nH]n2)cc1", "CC(C)(CNC(=O)Nc1cccnn1)c1ccncc1",
    "Cc1ccc(N)c([N+](=O)[O-])c1", "NCc1ccc([N+](=O)[O-])cc1",
    "CNC(=O)c1cc(Cl)c(N)cc1CP(=O)(F)F",
    "CC(=O)N(CC)c1cccc(-c2ccnc3c(C(=O)N)cnn23)c1",
    # explicit and isotopic hydrogens, charges, fragments, stereo, fluorine
    "[H]OC([H])([H])C([H])([H])[H]", "[2H]C([2H])([2H])c1ccccc1N",
    "CC(=O)[O-].[Na+]", "C[N+](C)(C)CC(=O)[O-]", "F/C=C/F", "FC(F)(F)c1ccc(O)cc1",
    "C", "O",
]


@lru_cache(maxsize=1)
def _guacamol_objectives() -> dict[str, object]:
    if importlib.util.find_spec("guacamol") is None:
        pytest.fail("the PMO reference check needs guacamol: run `make install`, or "
                    "`.venv/bin/pip install --no-deps guacamol==0.5.5`", pytrace=False)
    import scipy

    if not hasattr(scipy, "histogram"):
        scipy.histogram = np.histogram
    if importlib.util.find_spec("fcd") is None:
        sys.modules.setdefault("fcd", types.ModuleType("fcd"))
    from guacamol.benchmark_suites import goal_directed_suite_trivial, goal_directed_suite_v2

    suites = {"v2": goal_directed_suite_v2(), "trivial": goal_directed_suite_trivial()}
    by_name = {s: {b.name: b.objective for b in bs} for s, bs in suites.items()}
    return {task: by_name[suite][name] for task, (suite, name) in REFERENCE_NAMES.items()}


@lru_cache(maxsize=1)
def _molecules() -> list[str]:
    lines = [ln.split()[0] for ln in MOSES.read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    return lines[:100] + EDGE_CASES


def test_task_list_is_pmos_twenty():
    assert set(TASKS) == set(REFERENCE_NAMES)
    assert len(TASKS) == 20


@pytest.mark.parametrize("task", sorted(REFERENCE_NAMES))
def test_task_matches_guacamol(task):
    reference = _guacamol_objectives()[task]
    smiles = _molecules()
    # PMO scores each design's canonical SMILES; the reference gets those too.
    canonical = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in smiles]
    expected = np.array(reference.score_list(canonical), dtype=float)
    assert (expected >= 0).all(), "GuacaMol flagged a test molecule as invalid (-1)"
    assert np.ptp(expected) > 0.2, "the test molecules must spread over the task's range"
    got = PMOOracle(task).score(smiles).values
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)  # tiny scores too


def test_hand_checked_values():
    """SMARTS, isomer and rediscovery terms on molecules whose values are known by hand."""
    def score(task, smi):
        return PMOOracle(task).score([smi]).values[0]

    start = "CCCOc1cc2ncnc(Nc3ccc4ncsc4c3)c2cc1S(=O)(=O)C(C)(C)C"
    assert score("scaffold_hop", start) == pytest.approx((1 + 1 + 0) / 3)
    assert score("deco_hop", start) == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert score("isomers_c7h8n2o2", "Cc1ccc(N)c([N+](=O)[O-])c1") == pytest.approx(1.0)
    assert score("isomers_c9h10n2o2pf2cl", "CNC(=O)c1cc(Cl)c(N)cc1CP(=O)(F)F") == \
        pytest.approx(1.0)
    assert score("valsartan_smarts", "CCO") == 0.0
    valsartan = "CCCCC(=O)N(Cc1ccc(-c2ccccc2-c2nn[nH]n2)cc1)[C@@H](C(C)C)C(=O)O"
    assert score("valsartan_smarts", valsartan) > 0.0
    for task, target in zip(["celecoxib_rediscovery", "troglitazone_rediscovery",
                             "thiothixene_rediscovery"], EDGE_CASES[:3]):
        assert score(task, target) == 1.0


def test_mol_and_explicit_hydrogens_score_like_smiles():
    smi = "COc1cc(N(C)CCN(C)C)c(NC(=O)C=C)cc1Nc2nccc(n2)c3cn(C)c4ccccc34"
    with_hs = Chem.AddHs(Chem.MolFromSmiles(smi))
    for task in ("osimertinib_mpo", "isomers_c9h10n2o2pf2cl", "deco_hop"):
        values = PMOOracle(task).score([smi, with_hs, Chem.MolFromSmiles(smi)]).values
        assert values[0] == values[1] == values[2]


def test_bad_designs_are_nan_with_a_reason():
    unsanitisable = Chem.MolFromSmiles("CC(C)(C)(C)(C)C", sanitize=False)
    result = PMOOracle("median1").score([None, "not a smiles", "C1CC", "", unsanitisable, 7])
    assert np.isnan(result.values).all()
    assert all(result.reasons)
    assert "None" in result.reasons[0] and "unparsable" in result.reasons[1]


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(ValueError, match="drd2") as err:
        PMOOracle("drd2")
    assert "osimertinib_mpo" in str(err.value) and "zaleplon_mpo" in str(err.value)


def test_params_registry_and_contract():
    """Entry point, params, and the oracle contract (NaN on bad input, determinism,
    batch = singles) for every task."""
    from vardbio.registry import load
    from vardbio.testing import check_oracle_contract

    oracle = load("oracle", "pmo")(task="zaleplon_mpo")
    assert oracle.params() == {"task": "zaleplon_mpo"}
    assert oracle.name == "pmo" and oracle.higher_is_better
    assert PMOOracle("qed").identity() != PMOOracle("median1").identity()
    good = _molecules()[:5] + [Chem.MolFromSmiles("c1ccncc1")]
    for task in TASKS:
        check_oracle_contract(PMOOracle(task), good, [None, "not a smiles", 42])
