"""The PMO benchmark objectives that need only RDKit, as one oracle with a `task` parameter.

PMO (Gao, Fu, Sun & Coley, "Sample Efficiency Matters: A Benchmark for Practical Molecular
Optimization", NeurIPS 2022 Datasets and Benchmarks) has 23 tasks; the 20 here are the ones
that need no trained model (DRD2, GSK3B and JNK3 do, and are left out). PMO scores them
with TDC's oracles, which restate the goal-directed objectives of GuacaMol (Brown et al.,
"GuacaMol: Benchmarking Models for de Novo Molecular Design", J. Chem. Inf. Model. 2019,
suite v2) plus RDKit's QED. The definitions here follow GuacaMol's, term by term:

- similarity: Tanimoto similarity of count fingerprints — ECFP4 / ECFP6 (Morgan radius
  2 / 3), FCFP4 (Morgan radius 2 on feature invariants), AP (atom pairs up to distance 10) —
  or of the Gobbi 2D pharmacophore fingerprint (PHCO, deco_hop and scaffold_hop);
- modifiers: a Gaussian exp(-(x - mu)^2 / (2 sigma^2)); its one-sided forms that are 1 below
  mu (`_at_most`) or above it (`_at_least`); a clipped ramp min(max(x / u, 0), 1);
- isomer score for a formula: geometric mean of a Gaussian (sigma 1) on the count of each
  element, hydrogens included, and a Gaussian (sigma 2) on the total atom count;
- SMARTS terms: 1 when the pattern is present (absent, for an unwanted pattern), else 0;
- MPO tasks: the geometric or arithmetic mean of their terms, as GuacaMol defines each.

The scores agree with GuacaMol 0.5.5's to 1e-6 (tests/test_oracles_pmo.py measures ~1e-16),
and TDC's current code computes the same objectives. PyTDC 0.3.6, the version PMO's code
(wenhao-gao/mol_opt) pins, differs on four tasks: its isomer term took the total atom count
from the SMILES text read as a formula, not from the molecule (isomers_c7h8n2o2,
isomers_c9h10n2o2pf2cl, zaleplon_mpo, sitagliptin_mpo), and its sitagliptin_mpo applied no
modifier to the similarity, logP and TPSA terms. TDC fixed the latter in April 2022 and the
former in August 2022 (keeping it as the *_prev oracles), so published PMO numbers for those
four tasks may come from a different objective than this one.

Design: an RDKit Mol or a SMILES string. Like PMO, which scores the canonical SMILES of each
design, a design is written to canonical SMILES and read back before scoring, so explicit
hydrogens, conformers and atom order do not change a score. A design that cannot be parsed
or sanitised gets NaN with the reason (PMO's convention of 0 for invalid designs is the
campaign's to apply, not the oracle's). Scores lie in [0, 1], higher is better.

Cost per molecule on one core: ~0.1-1 ms for most tasks (ECFP/FCFP/AP fingerprints,
descriptors, QED); a few ms for deco_hop and scaffold_hop (the pharmacophore fingerprint).
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Callable

from rdkit import Chem, DataStructs
from rdkit.Chem import QED, Descriptors, rdFingerprintGenerator, rdMolDescriptors
from rdkit.Chem.Pharm2D import Gobbi_Pharm2D
from rdkit.Chem.Pharm2D import Generate as Pharm2DGenerate

from vardbio.reward.oracle import OracleError
from vardbio_oracles.chem import MolOracle, to_mol


class _Features:
    """What the terms of one objective read from one molecule, each computed at most once."""

    def __init__(self, mol: Chem.Mol):
        self.mol = mol
        self._fps: dict[str, object] = {}
        self._with_hs: Chem.Mol | None = None

    def fingerprint(self, kind: str):
        if kind not in self._fps:
            self._fps[kind] = _fingerprint(self.mol, kind)
        return self._fps[kind]

    @property
    def with_hs(self) -> Chem.Mol:
        if self._with_hs is None:
            self._with_hs = Chem.AddHs(self.mol)
        return self._with_hs


Term = Callable[[_Features], float]


@lru_cache(maxsize=None)
def _generator(kind: str):
    if kind == "ECFP4":
        return rdFingerprintGenerator.GetMorganGenerator(radius=2)
    if kind == "ECFP6":
        return rdFingerprintGenerator.GetMorganGenerator(radius=3)
    if kind == "FCFP4":
        return rdFingerprintGenerator.GetMorganGenerator(
            radius=2, atomInvariantsGenerator=rdFingerprintGenerator.GetMorganFeatureAtomInvGen())
    if kind == "AP":
        return rdFingerprintGenerator.GetAtomPairGenerator(maxDistance=10)
    raise ValueError(f"unknown fingerprint kind {kind!r}")


def _fingerprint(mol: Chem.Mol, kind: str):
    if kind == "PHCO":
        return Pharm2DGenerate.Gen2DFingerprint(mol, Gobbi_Pharm2D.factory)
    return _generator(kind).GetSparseCountFingerprint(mol)


# Modifiers: x -> score in [0, 1].
def _gaussian(mu: float, sigma: float) -> Callable[[float], float]:
    return lambda x: math.exp(-0.5 * ((x - mu) / sigma) ** 2)


def _at_most(mu: float, sigma: float) -> Callable[[float], float]:
    """1 for x <= mu, a Gaussian tail above (GuacaMol's MinGaussianModifier)."""
    g = _gaussian(mu, sigma)
    return lambda x: g(max(x, mu))


def _at_least(mu: float, sigma: float) -> Callable[[float], float]:
    """1 for x >= mu, a Gaussian tail below (GuacaMol's MaxGaussianModifier)."""
    g = _gaussian(mu, sigma)
    return lambda x: g(min(x, mu))


def _ramp(upper: float) -> Callable[[float], float]:
    """0 at x = 0 rising linearly to 1 at x = upper, clipped (GuacaMol's ClippedScoreModifier)."""
    return lambda x: min(max(x / upper, 0.0), 1.0)


def _identity(x: float) -> float:
    return x


# Terms: _Features -> float.
def _similarity(target: str, kind: str, modifier: Callable[[float], float] = _identity) -> Term:
    ref = _fingerprint(Chem.MolFromSmiles(target), kind)
    return lambda f: modifier(DataStructs.TanimotoSimilarity(f.fingerprint(kind), ref))


def _descriptor(fn: Callable[[Chem.Mol], float], modifier: Callable[[float], float]) -> Term:
    return lambda f: modifier(fn(f.mol))


def _smarts(pattern: str, present: bool) -> Term:
    query = Chem.MolFromSmarts(pattern)
    hit, miss = (1.0, 0.0) if present else (0.0, 1.0)
    return lambda f: hit if f.mol.HasSubstructMatch(query) else miss


def _isomer(formula: str) -> Term:
    counts = [(el, int(n) if n else 1) for el, n in re.findall(r"([A-Z][a-z]*)(\d*)", formula)]
    per_element = [(el, _gaussian(n, 1.0)) for el, n in counts]
    total = _gaussian(sum(n for _, n in counts), 2.0)

    def score(f: _Features) -> float:
        symbols = [a.GetSymbol() for a in f.with_hs.GetAtoms()]
        parts = [g(symbols.count(el)) for el, g in per_element] + [total(len(symbols))]
        return _geometric(parts)
    return score


def _geometric(values: list[float]) -> float:
    product = math.prod(values)
    return product ** (1.0 / len(values))


def _geometric_mean(*terms: Term) -> Term:
    return lambda f: _geometric([t(f) for t in terms])


def _arithmetic_mean(*terms: Term) -> Term:
    return lambda f: sum(t(f) for t in terms) / len(terms)


def _mol_property_gaussian(smiles: str, fn: Callable[[Chem.Mol], float], sigma: float) -> Term:
    """Gaussian on a descriptor, centred on its value for a reference molecule."""
    return _descriptor(fn, _gaussian(fn(Chem.MolFromSmiles(smiles)), sigma))


def _count_element(symbol: str) -> Callable[[Chem.Mol], int]:
    return lambda mol: sum(1 for a in mol.GetAtoms() if a.GetSymbol() == symbol)


_logp, _tpsa, _bertz = Descriptors.MolLogP, Descriptors.TPSA, Descriptors.BertzCT

# Reference molecules, as GuacaMol (and TDC) write them.
_SITAGLIPTIN = "Fc1cc(c(F)cc1F)CC(N)CC(=O)N3Cc2nnc(n2CC3)C(F)(F)F"
_SITAGLIPTIN_VALSARTAN = "NC(CC(=O)N1CCn2c(nnc2C(F)(F)F)C1)Cc1cc(F)c(F)cc1F"
_HOP_START = "CCCOc1cc2ncnc(Nc3ccc4ncsc4c3)c2cc1S(=O)(=O)C(C)(C)C"
_QUINAZOLINE_SCAFFOLD = "[#7]-c1n[c;h1]nc2[c;h1]c(-[#8])[c;h0][c;h1]c12"
_OSIMERTINIB = "COc1cc(N(C)CCN(C)C)c(NC(=O)C=C)cc1Nc2nccc(n2)c3cn(C)c4ccccc34"
_RANOLAZINE = "COc1ccccc1OCC(O)CN2CCN(CC(=O)Nc3c(C)cccc3C)CC2"

# task name -> builder of its objective (built on first use, then cached).
_TASKS: dict[str, Callable[[], Term]] = {
    "albuterol_similarity": lambda: _similarity(
        "CC(C)(C)NCC(O)c1ccc(O)c(CO)c1", "FCFP4", _ramp(0.75)),
    "amlodipine_mpo": lambda: _geometric_mean(
        _similarity(r"Clc1ccccc1C2C(=C(/N/C(=C2/C(=O)OCC)COCCN)C)\C(=O)OC", "ECFP4"),
        _descriptor(rdMolDescriptors.CalcNumRings, _gaussian(3, 0.5))),
    "celecoxib_rediscovery": lambda: _similarity(
        "CC1=CC=C(C=C1)C1=CC(=NN1C1=CC=C(C=C1)S(N)(=O)=O)C(F)(F)F", "ECFP4"),
    "deco_hop": lambda: _arithmetic_mean(
        _similarity(_HOP_START, "PHCO", _ramp(0.85)),
        _smarts("CS([#6])(=O)=O", present=False),
        _smarts("[#7]-c1ccc2ncsc2c1", present=False),
        _smarts(_QUINAZOLINE_SCAFFOLD, present=True)),
    "fexofenadine_mpo": lambda: _geometric_mean(
        _similarity("CC(C)(C(=O)O)c1ccc(cc1)C(O)CCCN2CCC(CC2)C(O)(c3ccccc3)c4ccccc4", "AP",
                    _ramp(0.8)),
        _descriptor(_tpsa, _at_least(90, 10)),
        _descriptor(_logp, _at_most(4, 1))),
    "isomers_c7h8n2o2": lambda: _isomer("C7H8N2O2"),
    "isomers_c9h10n2o2pf2cl": lambda: _isomer("C9H10N2O2PF2Cl"),
    "median1": lambda: _geometric_mean(
        _similarity("CC(C)C1CCC(C)CC1O", "ECFP4"),          # menthol
        _similarity("CC1(C)C2CCC1(C)C(=O)C2", "ECFP4")),    # camphor
    "median2": lambda: _geometric_mean(
        _similarity("O=C1N(CC(N2C1CC3=C(C2C4=CC5=C(OCO5)C=C4)NC6=C3C=CC=C6)=O)C", "ECFP6"),
        _similarity("CCCC1=NN(C2=C1N=C(NC2=O)C3=C(C=CC(=C3)S(=O)(=O)N4CCN(CC4)C)OCC)C", "ECFP6")),
    "mestranol_similarity": lambda: _similarity(
        "COc1ccc2[C@H]3CC[C@@]4(C)[C@@H](CC[C@@]4(O)C#C)[C@@H]3CCc2c1", "AP", _ramp(0.75)),
    "osimertinib_mpo": lambda: _geometric_mean(
        _similarity(_OSIMERTINIB, "FCFP4", _ramp(0.8)),
        _similarity(_OSIMERTINIB, "ECFP6", _at_most(0.85, 0.1)),
        _descriptor(_tpsa, _at_least(100, 10)),
        _descriptor(_logp, _at_most(1, 1))),
    "perindopril_mpo": lambda: _geometric_mean(
        _similarity("O=C(OCC)C(NC(C(=O)N1C(C(=O)O)CC2CCCCC12)C)CCC", "ECFP4"),
        _descriptor(rdMolDescriptors.CalcNumAromaticRings, _gaussian(2, 0.5))),
    "qed": lambda: _descriptor(QED.qed, _identity),
    "ranolazine_mpo": lambda: _geometric_mean(
        _similarity(_RANOLAZINE, "AP", _ramp(0.7)),
        _descriptor(_logp, _at_least(7, 1)),
        _descriptor(_count_element("F"), _gaussian(1, 1.0)),
        _descriptor(_tpsa, _at_least(95, 20))),
    "scaffold_hop": lambda: _arithmetic_mean(
        _similarity(_HOP_START, "PHCO", _ramp(0.75)),
        _smarts("[#6]-[#6]-[#6]-[#8]-[#6]~[#6]~[#6]~[#6]~[#6]-[#7]-c1ccc2ncsc2c1", present=True),
        _smarts(_QUINAZOLINE_SCAFFOLD, present=False)),
    "sitagliptin_mpo": lambda: _geometric_mean(
        _similarity(_SITAGLIPTIN, "ECFP4", _gaussian(0, 0.1)),
        _mol_property_gaussian(_SITAGLIPTIN, _logp, 0.2),
        _mol_property_gaussian(_SITAGLIPTIN, _tpsa, 5),
        _isomer("C16H15F6N5O")),
    "thiothixene_rediscovery": lambda: _similarity(
        "CN(C)S(=O)(=O)c1ccc2Sc3ccccc3C(=CCCN4CCN(C)CC4)c2c1", "ECFP4"),
    "troglitazone_rediscovery": lambda: _similarity(
        "Cc1c(C)c2OC(C)(COc3ccc(CC4SC(=O)NC4=O)cc3)CCc2c(C)c1O", "ECFP4"),
    "valsartan_smarts": lambda: _geometric_mean(
        _smarts("CN(C=O)Cc1ccc(c2ccccc2)cc1", present=True),
        _mol_property_gaussian(_SITAGLIPTIN_VALSARTAN, _logp, 0.2),
        _mol_property_gaussian(_SITAGLIPTIN_VALSARTAN, _tpsa, 5),
        _mol_property_gaussian(_SITAGLIPTIN_VALSARTAN, _bertz, 30)),
    "zaleplon_mpo": lambda: _geometric_mean(
        _similarity("O=C(C)N(CC)C1=CC=CC(C2=CC=NC3=C(C=NN23)C#N)=C1", "ECFP4"),
        _isomer("C19H17N3O2")),
}

TASKS: tuple[str, ...] = tuple(sorted(_TASKS))


@lru_cache(maxsize=None)
def _objective(task: str) -> Term:
    return _TASKS[task]()


class PMOOracle(MolOracle):
    """One PMO task (see the module docstring): score in [0, 1], higher is better.

    task: one of TASKS, named as PMO names it (e.g. "osimertinib_mpo", "median1").
    Cost: ~0.1-1 ms per molecule, a few ms for deco_hop and scaffold_hop.
    """

    name = "pmo"
    version = "1"
    units = "PMO task score (0-1)"
    higher_is_better = True

    def __init__(self, task: str):
        if task not in _TASKS:
            raise ValueError(f"unknown PMO task {task!r}; valid tasks: {', '.join(TASKS)}")
        self.task = task

    def params(self):
        return {"task": self.task}

    def score_one(self, design):
        smiles = Chem.MolToSmiles(to_mol(design))
        canonical = Chem.MolFromSmiles(smiles)
        if canonical is None:
            raise OracleError(f"the design's canonical SMILES does not parse: {smiles!r}")
        return _objective(self.task)(_Features(canonical))
