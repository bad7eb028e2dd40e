"""From a sample to a molecule: bond perception on heavy-atom coordinates with predicted
hydrogen counts, optional hydrogen repair, and the designs oracles see.

Decoding: heavy atoms closer than 0.7 × their covalent radii are a clash (failure);
connectivity takes candidate bonds shortest first while both atoms have valence left after
their predicted hydrogens; hydrogens are then placed in 3D and bond orders assigned by
rdDetermineBonds. With repair (the option repair_hydrogens), a sample that fails with its
predicted hydrogen counts is tried once more with counts made consistent with its
connectivity (repair_hydrogens).

Designs: an RDKit Mol with explicit hydrogens and a 3D conformer when the sample decodes to
a sanitisable, single-fragment, closed-shell, neutral molecule; otherwise a DecodeFailure
carrying the reason (every oracle scores it NaN with a reason; it never becomes a 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import rdDetermineBonds

from vardbio_models.molecule.state import ELEMENTS, H_COUNTS, state_parts

# the most bonds (heavy neighbours + hydrogens) a neutral atom of each element may have
MAX_VALENCE = {"C": 4, "N": 3, "O": 2, "F": 1, "S": 6, "Cl": 1}
SATURATED = {"C": (4,), "N": (3,), "O": (2,), "F": (1,), "S": (2,), "Cl": (1,)}


@dataclass(frozen=True)
class DecodeFailure:
    """A sample that is not a molecule, with why. Oracles score it NaN (it is neither an
    RDKit Mol nor a SMILES string); `reason` is kept in the design files."""

    reason: str
    smiles: str | None = None

    def __repr__(self) -> str:
        return f"DecodeFailure({self.reason!r})"


def _neutralise_sulfur_oxides(mol: Chem.RWMol) -> None:
    """[S+]-[O-] pairs (how bond perception writes sulfoxides) become S=O."""
    for bond in mol.GetBonds():
        a, b = bond.GetBeginAtom(), bond.GetEndAtom()
        if a.GetSymbol() == "O":
            a, b = b, a
        if (bond.GetBondType() == Chem.BondType.SINGLE and a.GetSymbol() == "S" and b.GetSymbol() == "O"
                and a.GetFormalCharge() == 1 and b.GetFormalCharge() == -1 and b.GetDegree() == 1):
            bond.SetBondType(Chem.BondType.DOUBLE)
            a.SetFormalCharge(0)
            b.SetFormalCharge(0)


CONNECTIVITY = ("capped", "radii")
COVALENT_FACTOR = 1.3  # a bond is possible below 1.3 × the sum of covalent radii (RDKit's default)
CLASH_FACTOR = 0.7  # atoms closer than 0.7 × the sum of covalent radii (a triple bond is ~0.79)


def _clash(mol: Chem.Mol, positions: np.ndarray) -> str | None:
    """A reason if two heavy atoms are closer than any bond allows, else None."""
    table = Chem.GetPeriodicTable()
    radii = np.array([table.GetRcovalent(a.GetAtomicNum()) for a in mol.GetAtoms()])
    dist = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    ratio = dist / (radii[:, None] + radii[None]) + 10.0 * np.eye(len(radii))
    i, j = np.unravel_index(np.argmin(ratio), ratio.shape)
    if ratio[i, j] < CLASH_FACTOR:
        return f"clash: atoms {min(i, j)} and {max(i, j)} are {dist[i, j]:.2f} Å apart"
    return None


def capped_connectivity(mol: Chem.Mol, positions: np.ndarray) -> Chem.Mol:
    """Single bonds between heavy atoms: candidate pairs closer than COVALENT_FACTOR × the sum
    of their covalent radii, accepted shortest first (relative to the radii sum) while both
    atoms have valence left after their hydrogens (C 4, N 3, O 2, S 4 neighbours, F Cl 1)."""
    table = Chem.GetPeriodicTable()
    atoms = list(mol.GetAtoms())
    radii = np.array([table.GetRcovalent(a.GetAtomicNum()) for a in atoms])
    left = [min(MAX_VALENCE[a.GetSymbol()], 4) - a.GetNumExplicitHs() for a in atoms]
    dist = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    ratio = dist / (radii[:, None] + radii[None])
    i_idx, j_idx = np.triu_indices(len(atoms), 1)
    order = np.argsort(ratio[i_idx, j_idx], kind="stable")
    rw = Chem.RWMol(mol)
    for k in order:
        i, j = int(i_idx[k]), int(j_idx[k])
        if ratio[i, j] >= COVALENT_FACTOR:
            break
        if left[i] > 0 and left[j] > 0:
            rw.AddBond(i, j, Chem.BondType.SINGLE)
            left[i] -= 1
            left[j] -= 1
    return rw.GetMol()


def _heavy_atoms(positions: np.ndarray, elements: Sequence[int], hcounts: Sequence[int]) -> Chem.Mol:
    """A bondless molecule of the heavy atoms with their hydrogen counts and 3D conformer."""
    rw = Chem.RWMol()
    conf = Chem.Conformer(len(elements))
    for i, (e, h) in enumerate(zip(elements, hcounts)):
        atom = Chem.Atom(ELEMENTS[int(e)])
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(int(H_COUNTS[int(h)]) if int(h) < len(H_COUNTS) else int(h))
        rw.AddAtom(atom)
        conf.SetAtomPosition(i, positions[i].tolist())
    rw.AddConformer(conf, assignId=True)
    return rw.GetMol()


def repair_hydrogens(positions: np.ndarray, elements: Sequence[int], hcounts: Sequence[int]) -> list[int]:
    """Hydrogen counts made consistent with the perceived (capped) connectivity.

    Each atom takes the smallest standard valence (C 4, N 3, O 2, F Cl 1, S 2/4/6) that its
    heavy neighbours fit; predicted hydrogens beyond it are dropped; the valence left is
    paired into double/triple bonds greedily (atoms with the fewest partners first, then the
    shortest bond); what cannot be paired is filled with hydrogens. Returns counts per atom.
    """
    mol = capped_connectivity(_heavy_atoms(positions, elements, [0] * len(elements)), positions)
    table = Chem.GetPeriodicTable()
    atoms = list(mol.GetAtoms())
    free, hyd = [], []
    for a, h in zip(atoms, hcounts):
        deg = a.GetDegree()
        allowed = (2, 4, 6) if a.GetSymbol() == "S" else (MAX_VALENCE[a.GetSymbol()],)
        v = next((x for x in allowed if x >= deg), allowed[-1])
        hh = max(0, min(int(H_COUNTS[int(h)]), v - deg))
        hyd.append(hh)
        free.append(max(0, v - deg - hh))
    radii = {a.GetIdx(): table.GetRcovalent(a.GetAtomicNum()) for a in atoms}
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    length = {(i, j): float(np.linalg.norm(positions[i] - positions[j])) / (radii[i] + radii[j]) for i, j in bonds}
    while True:
        open_bonds = [(i, j) for i, j in bonds if free[i] > 0 and free[j] > 0]
        if not open_bonds:
            break
        partners = {k: sum(k in b for b in open_bonds) for k in range(len(atoms))}
        i, j = min(open_bonds, key=lambda b: (min(partners[b[0]], partners[b[1]]), length[b]))
        free[i] -= 1
        free[j] -= 1
    return [h + f for h, f in zip(hyd, free)]


def perceive(positions: np.ndarray, elements: Sequence[int], hcounts: Sequence[int],
             connectivity: str = "capped") -> tuple[Chem.Mol | None, str | None, list[bool]]:
    """Bond perception of one molecule from heavy-atom 3D coordinates and hydrogen counts.

    Connectivity: 'capped' (the decoder's) takes bonds shortest first while the atoms have
    valence left (capped_connectivity); 'radii' is rdDetermineBonds.DetermineConnectivity
    (every pair within 1.3 × the covalent radii, as EDM-style distance rules do), which can
    give an atom more neighbours than its valence. Hydrogens are then placed in 3D and bond
    orders assigned by rdDetermineBonds.DetermineBondOrders on the molecule with hydrogens. Returns (molecule with explicit H or None,
    failure reason or None, per-heavy-atom stability). An atom is stable when it is neutral
    and closed-shell after bond-order perception; where perception could not run (an atom
    over its valence, or rdDetermineBonds failing), only atoms that single bonds and their
    hydrogens saturate exactly count as stable.
    """
    n = len(elements)
    if n == 0:
        return None, "no atoms", []
    if not np.isfinite(positions).all():
        return None, "non-finite coordinates", [False] * n
    mol = _heavy_atoms(positions, elements, hcounts)
    clash = _clash(mol, positions)
    if clash:
        return None, clash, [False] * n
    if connectivity == "capped":
        mol = capped_connectivity(mol, positions)
    elif connectivity == "radii":
        try:
            rdDetermineBonds.DetermineConnectivity(mol)
        except Exception as err:  # noqa: BLE001 - RDKit raises several types
            return None, f"connectivity perception failed: {err}", [False] * n
    else:
        raise ValueError(f"unknown connectivity '{connectivity}'; expected one of {CONNECTIVITY}")
    # without bond orders, an atom is known to be stable only when single bonds saturate it
    saturated = [a.GetDegree() + a.GetNumExplicitHs() in SATURATED[a.GetSymbol()] for a in mol.GetAtoms()]
    over = [a.GetDegree() + a.GetNumExplicitHs() > MAX_VALENCE[a.GetSymbol()] for a in mol.GetAtoms()]
    if any(over):
        i = over.index(True)
        a = mol.GetAtomWithIdx(i)
        return None, (f"over valence: atom {i} ({a.GetSymbol()}) has {a.GetDegree()} neighbours "
                      f"and {a.GetNumExplicitHs()} H"), saturated
    mol.UpdatePropertyCache(strict=False)
    mol = Chem.AddHs(mol, addCoords=True)
    try:
        rdDetermineBonds.DetermineBondOrders(mol, charge=0, allowChargedFragments=True)
    except Exception as err:  # noqa: BLE001
        return None, f"bond order perception failed: {err}", saturated
    rw = Chem.RWMol(mol)
    _neutralise_sulfur_oxides(rw)
    heavy = [a for a in rw.GetAtoms() if a.GetAtomicNum() > 1]
    stable = [a.GetFormalCharge() == 0 and a.GetNumRadicalElectrons() == 0 for a in heavy]
    mol = rw.GetMol()
    try:
        Chem.SanitizeMol(mol)
    except Exception as err:  # noqa: BLE001
        return mol, f"sanitisation failed: {err}", stable
    return mol, None, stable


@dataclass
class Perceived:
    """What decoding found for one sample. mol: the sanitised molecule (with H) or None;
    reason: why it is not a valid design (None when valid); atom_stable: (n,) bools."""

    mol: Chem.Mol | None
    reason: str | None
    atom_stable: list[bool]
    sanitised: bool
    repaired: bool = False

    @property
    def design(self) -> Any:
        if self.reason is None:
            return self.mol
        return DecodeFailure(self.reason, None if self.mol is None or not self.sanitised else
                             Chem.MolToSmiles(Chem.RemoveHs(self.mol, sanitize=False), isomericSmiles=False))


def perceive_state(positions, elements, hcounts, connectivity: str = "capped",
                   repair: bool = False) -> Perceived:
    """Perceive one sample; with `repair`, a sample that is not a valid molecule with its
    predicted hydrogens is perceived again with repair_hydrogens' counts (atom stability is
    always that of the predicted hydrogens)."""
    found = _perceive_checked(positions, elements, hcounts, connectivity)
    if (repair and found.reason is not None and connectivity == "capped" and np.isfinite(positions).all()
            and not found.reason.startswith("clash")):
        fixed = repair_hydrogens(positions, elements, hcounts)
        second = _perceive_checked(positions, elements, fixed, connectivity)
        if second.reason is None:
            return Perceived(second.mol, None, found.atom_stable, True, repaired=True)
    return found


def _perceive_checked(positions, elements, hcounts, connectivity: str) -> Perceived:
    mol, reason, stable = perceive(positions, elements, hcounts, connectivity)
    sanitised = mol is not None and (reason is None or not reason.startswith("sanitisation"))
    if reason is None:
        if len(Chem.GetMolFrags(mol)) > 1:
            reason = f"{len(Chem.GetMolFrags(mol))} fragments"
        elif not all(stable):
            reason = "charged or open-shell atoms after bond perception"
    if reason is None:
        Chem.AssignStereochemistryFrom3D(mol)
    return Perceived(mol, reason, stable, sanitised)


def decode_molecules(x0: torch.Tensor, mask: torch.Tensor | None, repair: bool = False) -> list[Any]:
    """B designs from states (B, N, F): RDKit Mols (explicit H, 3D) or DecodeFailures."""
    return [perceive_state(*parts, repair=repair).design for parts in state_parts(x0, mask)]


class MoleculeDecoder:
    """The model's decoder: decode_molecules with or without hydrogen repair."""

    def __init__(self, repair: bool = False):
        self.repair = bool(repair)

    def __call__(self, x0: torch.Tensor, mask: torch.Tensor | None) -> list[Any]:
        return decode_molecules(x0, mask, self.repair)


def canonical(mol: Chem.Mol) -> str:
    """Canonical non-isomeric SMILES without hydrogens (the training set's form)."""
    return Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False)
