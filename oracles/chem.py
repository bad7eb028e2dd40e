"""Chemistry oracles on RDKit molecules.

Design: an RDKit `Mol` (or a SMILES string, parsed here). The 3D oracle (MMFF strain) needs
a conformer with 3D coordinates; hydrogens are added with coordinates when missing. In every
oracle here, `chem_validity` included, a design that fails gets NaN with the reason, never
a number: "unparsable SMILES ...", "sanitisation failed: <RDKit's message>", "empty SMILES",
"empty molecule", "no molecule (None)", or the wrong type. `chem_validity` scores 1.0 for a
valid molecule, so its mean over designs that did not fail is 1; count validity with the
NaNs (e.g. `np.isfinite(values).mean()`).

Cost: all are sub-millisecond per molecule except SA score (~1 ms), the PAINS/alerts filter
(~1 ms) and MMFF strain (10-100 ms, more with a conformer search).
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from vardbio.extras import require

require("rdkit", extra="chem", what="the chemistry oracles")

from rdkit import Chem, RDLogger  # noqa: E402
from rdkit.Chem import QED, Crippen, Descriptors, Lipinski  # noqa: E402
from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams  # noqa: E402

from vardbio.reward.oracle import OracleError, PerDesignOracle  # noqa: E402

RDLogger.DisableLog("rdApp.*")


def to_mol(design: Any) -> Chem.Mol:
    """A sanitised copy of an RDKit Mol or the Mol of a SMILES; OracleError if impossible."""
    if isinstance(design, str):
        if not design.strip():
            raise OracleError("empty SMILES")
        mol = Chem.MolFromSmiles(design)
        if mol is None:  # either the text does not parse or the molecule does not sanitise
            raw = Chem.MolFromSmiles(design, sanitize=False)
            if raw is None:
                raise OracleError(f"unparsable SMILES {design!r}")
            sanitise(raw)
            raise OracleError(f"sanitisation failed: SMILES {design!r} does not sanitise")
    elif isinstance(design, Chem.Mol):
        mol = Chem.Mol(design)
        sanitise(mol)
    elif design is None:
        raise OracleError("no molecule (None)")
    else:
        raise OracleError(_not_a_molecule(design, "expected an RDKit Mol or a SMILES string"))
    if mol.GetNumAtoms() == 0:
        raise OracleError("empty molecule")
    return mol


def sanitise(mol: Chem.Mol) -> None:
    """RDKit's SanitizeMol in place; OracleError("sanitisation failed: <RDKit's message>")."""
    try:
        Chem.SanitizeMol(mol)
    except Exception as err:  # noqa: BLE001 - RDKit raises several types
        raise OracleError(f"sanitisation failed: {' '.join(str(err).split())}") from err


def _not_a_molecule(design: Any, need: str) -> str:
    """Why `design` cannot be scored: a model's decoding failure (an object with a `reason`,
    such as the molecule model's DecodeFailure) in its own words, otherwise `need`."""
    reason = getattr(design, "reason", None)
    if isinstance(reason, str):
        return f"the sample did not decode to a molecule: {reason}"
    return f"{need}, got {type(design).__name__}"


def to_mol_3d(design: Any, need: str) -> Chem.Mol:
    """to_mol for a design that must carry finite 3D coordinates; `need` starts the error
    for a design that is not an RDKit Mol at all."""
    if not isinstance(design, Chem.Mol):
        raise OracleError(_not_a_molecule(design, need))
    mol = to_mol(design)
    if mol.GetNumConformers() == 0:
        raise OracleError("molecule has no conformer (3D coordinates needed)")
    pos = mol.GetConformer().GetPositions()
    if not np.isfinite(pos).all():
        raise OracleError("conformer has non-finite coordinates")
    if not mol.GetConformer().Is3D() and np.ptp(pos[:, 2]) == 0:
        raise OracleError("conformer is 2D (3D coordinates needed)")
    return mol

def smiles_key(design: Any) -> str:
    """Canonical isomeric SMILES of a design (the raw text if it does not parse)."""
    if isinstance(design, str):
        mol = Chem.MolFromSmiles(design)
        return "smi:" + Chem.MolToSmiles(mol) if mol is not None else "raw:" + design
    if isinstance(design, Chem.Mol):
        return "smi:" + Chem.MolToSmiles(design)
    return f"{type(design).__name__}:{design!r}"


def coords_key(design: Any) -> str:
    """SMILES plus a hash of the first conformer's coordinates rounded to 0.001 Å."""
    key = smiles_key(design)
    if isinstance(design, Chem.Mol) and design.GetNumConformers():
        pos = np.round(design.GetConformer().GetPositions(), 3) + 0.0  # no -0.0
        key += "|xyz:" + hashlib.sha1(pos.tobytes()).hexdigest()
    return key


class MolOracle(PerDesignOracle):
    """Base of the 2D chemistry oracles: canonical SMILES as the cache key."""

    def design_key(self, design: Any) -> str:
        return smiles_key(design)


class ChemValidity(MolOracle):
    """1.0 if the design parses and sanitises (and is one fragment if `single_fragment`);
    otherwise NaN with the reason (unparsable SMILES, sanitisation failed: ..., more than one
    fragment, ...), never 0. The fraction of valid designs is the fraction of finite scores.
    ~0.1 ms.

    Version 2: version 1 scored an invalid molecule 0.0 (a cache keeps the versions apart).
    """

    name = "chem_validity"
    version = "2"
    units = "1 when valid (NaN otherwise)"

    def __init__(self, single_fragment: bool = False):
        self.single_fragment = bool(single_fragment)

    def params(self):
        return {"single_fragment": self.single_fragment}

    def score_one(self, design):
        mol = to_mol(design)
        if self.single_fragment:
            n = len(Chem.GetMolFrags(mol))
            if n > 1:
                raise OracleError(f"more than one fragment ({n}; single_fragment is set)")
        return 1.0


class QEDOracle(MolOracle):
    """Quantitative estimate of drug-likeness (Bickerton et al. 2012), in [0, 1], higher is
    better, ~0.5 ms."""

    name = "qed"
    units = "QED (0-1)"

    def score_one(self, design):
        return QED.qed(to_mol(design))


class SAScore(MolOracle):
    """Synthetic accessibility (Ertl & Schuffenhauer 2009, rdkit.Contrib), 1 (easy) to
    10 (hard): lower is better, ~1 ms. Scored on the molecule without explicit hydrogens.

    Version 2: version 1 scored explicit hydrogens as atoms of the molecule, which raised the
    score of a 3D design with hydrogens by about 4 (CC(=O)Nc1nccs1: 6.50 instead of 2.04).
    """

    name = "sa_score"
    version = "2"
    units = "SA score (1-10)"
    higher_is_better = False
    _scorer = None

    def score_one(self, design):
        if SAScore._scorer is None:
            import os
            import sys

            from rdkit.Chem import RDConfig
            sys.path.append(os.path.join(RDConfig.RDContribDir, "SA_Score"))
            import sascorer  # noqa: E402 - ships in rdkit.Contrib, not as a module
            SAScore._scorer = sascorer
        return SAScore._scorer.calculateScore(Chem.RemoveHs(to_mol(design)))


class LogP(MolOracle):
    """Crippen logP (octanol/water). No preferred direction: use a transform (e.g. a
    double sigmoid window). ~0.2 ms."""

    name = "logp"
    units = "log10 partition coefficient"
    higher_is_better = None

    def score_one(self, design):
        return Crippen.MolLogP(to_mol(design))


class MolWeight(MolOracle):
    """Average molecular weight in daltons. No preferred direction: use a transform. ~0.1 ms."""

    name = "mol_weight"
    units = "Da"
    higher_is_better = None

    def score_one(self, design):
        return Descriptors.MolWt(to_mol(design))


class LipinskiViolations(MolOracle):
    """Number of Lipinski rule-of-five violations (MW > 500, Crippen logP > 5, H-bond donors
    > 5, H-bond acceptors > 10), 0-4, lower is better, ~0.3 ms."""

    name = "lipinski_violations"
    units = "count (0-4)"
    higher_is_better = False

    def score_one(self, design):
        mol = to_mol(design)
        return float(sum([Descriptors.MolWt(mol) > 500, Crippen.MolLogP(mol) > 5,
                          Lipinski.NumHDonors(mol) > 5, Lipinski.NumHAcceptors(mol) > 10]))


class StructuralAlerts(MolOracle):
    """Number of structural-alert matches from RDKit's filter catalogs (PAINS by default;
    also BRENK, NIH, ZINC, ...). Count, lower is better (0 = clean), ~1 ms."""

    name = "structural_alerts"
    units = "count"
    higher_is_better = False

    def __init__(self, catalogs: tuple[str, ...] | list[str] = ("PAINS",)):
        cats = FilterCatalogParams.FilterCatalogs
        self.catalogs = tuple(str(c).upper() for c in catalogs)
        if not self.catalogs:
            raise ValueError("structural_alerts needs at least one catalog")
        params = FilterCatalogParams()
        valid = {n: v for n, v in vars(cats).items() if n.isupper()}
        for c in self.catalogs:
            if c not in valid:
                raise ValueError(f"unknown filter catalog '{c}'; choose from {sorted(valid)}")
            params.AddCatalog(valid[c])
        self._catalog = None
        self._params = params

    def __getstate__(self):
        return {"catalogs": self.catalogs}

    def __setstate__(self, state):
        self.__init__(state["catalogs"])

    def params(self):
        return {"catalogs": list(self.catalogs)}

    def score_one(self, design):
        if self._catalog is None:
            self._catalog = FilterCatalog(self._params)
        return float(len(self._catalog.GetMatches(to_mol(design))))


class MMFFStrain(PerDesignOracle):
    """MMFF94 strain energy per heavy atom of a 3D molecule, kcal/mol per heavy atom, lower
    is better.

    strain = (E(given conformer) - E(relaxed)) / heavy atoms, where E(relaxed) is the lowest
    MMFF94 energy among the given conformer minimised and, if `n_conformers` > 0, that many
    ETKDG conformers (seeded) minimised. Hydrogens missing from the design are added with
    coordinates (their positions are first relaxed with heavy atoms fixed, so missing H do not
    count as strain). ~20-100 ms per molecule, more with a conformer search.
    """

    name = "mmff_strain"
    units = "kcal/mol per heavy atom"
    higher_is_better = False

    def __init__(self, n_conformers: int = 0, max_iters: int = 2000, seed: int = 0):
        if n_conformers < 0 or max_iters < 1:
            raise ValueError("mmff_strain needs n_conformers >= 0 and max_iters >= 1")
        self.n_conformers, self.max_iters, self.seed = int(n_conformers), int(max_iters), int(seed)

    def params(self):
        return {"n_conformers": self.n_conformers, "max_iters": self.max_iters, "seed": self.seed}

    def design_key(self, design):
        return coords_key(design)

    def score_one(self, design):
        from rdkit.Chem import AllChem
        from rdkit.Chem import rdForceFieldHelpers as ffh

        mol = to_mol_3d(design, "mmff_strain needs an RDKit Mol with 3D coordinates")
        n_given = mol.GetNumAtoms()
        mol = Chem.AddHs(mol, addCoords=True)
        props = ffh.MMFFGetMoleculeProperties(mol)
        if props is None:
            raise OracleError("MMFF94 has no parameters for this molecule")
        ff = ffh.MMFFGetMoleculeForceField(mol, props, confId=0)
        # relax only the hydrogens that were added here
        if mol.GetNumAtoms() > n_given:
            for i in range(n_given):
                ff.AddFixedPoint(i)
            ff.Minimize(maxIts=self.max_iters)
            ff = ffh.MMFFGetMoleculeForceField(mol, props, confId=0)
        e_given = ff.CalcEnergy()
        relaxed = Chem.Mol(mol)
        ff_r = ffh.MMFFGetMoleculeForceField(relaxed, props, confId=0)
        ff_r.Minimize(maxIts=self.max_iters)
        energies = [ff_r.CalcEnergy()]
        if self.n_conformers:
            search = Chem.Mol(mol)
            search.RemoveAllConformers()
            cids = AllChem.EmbedMultipleConfs(search, self.n_conformers, randomSeed=self.seed)
            for cid, (_, e) in zip(cids, ffh.MMFFOptimizeMoleculeConfs(
                    search, maxIters=self.max_iters)):
                energies.append(e)
        n_heavy = mol.GetNumHeavyAtoms()
        return (e_given - min(energies)) / n_heavy
