"""From a sample to a molecule and back: the predicted atoms and bonds become an RDKit
molecule (no distance-based bond perception), and a kekulised RDKit molecule becomes the
graph the state encodes.

Decoding builds an RWMol from the argmax atom types (element and formal charge) and bond
orders of the real atoms, lets RDKit add implicit hydrogens by valence, sanitises it and
keeps the sampled coordinates as its conformer. A design is that molecule with explicit
hydrogens placed in 3D when it sanitises and is one fragment; otherwise a DecodeFailure with
the reason (every oracle scores it NaN with a reason; it never becomes a 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rdkit import Chem

from vardbio.processes.joint import JointProcess
from vardbio_models.molecule.state import ATOM_TYPES, MoleculeGraph, state_graphs

BOND_ORDERS = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
MAX_VALENCE = {("C", 0): 4, ("N", 0): 3, ("O", 0): 2, ("F", 0): 1, ("S", 0): 6, ("Cl", 0): 1, ("N", 1): 4,
               ("O", -1): 1}
"""The largest sum of heavy-atom bond orders each atom type may carry (hydrogens fill the rest)."""
if set(MAX_VALENCE) != set(ATOM_TYPES):
    raise RuntimeError("MAX_VALENCE must cover exactly the atom types of the state")


@dataclass(frozen=True)
class DecodeFailure:
    """A sample that is not a molecule, with why. Oracles score it NaN (it is neither an
    RDKit Mol nor a SMILES string); `reason` is kept in the design files; `smiles` holds
    the sanitised fragments when there are several."""

    reason: str
    smiles: str | None = None

    def __repr__(self) -> str:
        return f"DecodeFailure({self.reason!r})"


@dataclass
class Decoded:
    """What decoding found for one sample. mol: the sanitised molecule (heavy atoms, implicit
    H, 3D conformer) or None; reason: why it is not a valid design (None when valid);
    atom_stable: (n,) bools, an atom's bond orders within its type's MAX_VALENCE;
    sanitised: RDKit sanitised it (fragments allowed); fragments: how many (0 unsanitised)."""

    mol: Chem.Mol | None
    reason: str | None
    atom_stable: list[bool]
    sanitised: bool
    fragments: int

    @property
    def design(self) -> Any:
        """The design oracles see: the molecule with explicit hydrogens in 3D, or a DecodeFailure."""
        if self.reason is not None:
            return DecodeFailure(self.reason, canonical(self.mol) if self.sanitised else None)
        mol = Chem.AddHs(self.mol, addCoords=True)
        Chem.AssignStereochemistryFrom3D(mol)
        return mol


def build_molecule(graph: MoleculeGraph) -> Decoded:
    """The molecule of one sample's graph: atoms with their charges, explicit bond orders,
    implicit hydrogens by valence, sanitised, the sample's coordinates as its conformer."""
    n = len(graph.atoms)
    if n == 0:
        return Decoded(None, "no atoms", [], False, 0)
    valence = graph.bonds.clamp(min=0).sum(1).tolist()
    stable = [int(a) >= 0 and valence[i] <= MAX_VALENCE[ATOM_TYPES[int(a)]] for i, a in enumerate(graph.atoms)]
    if (graph.atoms < 0).any() or (graph.bonds < 0).any():
        return Decoded(None, "mask token left in the final state", stable, False, 0)
    if not torch.isfinite(graph.positions).all():
        return Decoded(None, "non-finite coordinates", stable, False, 0)
    rw = Chem.RWMol()
    conf = Chem.Conformer(n)
    for i, (a, pos) in enumerate(zip(graph.atoms.tolist(), graph.positions.tolist())):
        element, charge = ATOM_TYPES[a]
        atom = Chem.Atom(element)
        atom.SetFormalCharge(charge)
        rw.AddAtom(atom)
        conf.SetAtomPosition(i, pos)
    for i, j in zip(*np.triu_indices(n, 1)):
        order = int(graph.bonds[i, j])
        if order:
            rw.AddBond(int(i), int(j), BOND_ORDERS[order])
    rw.AddConformer(conf, assignId=True)
    mol = rw.GetMol()
    try:
        Chem.SanitizeMol(mol)
    except Exception as err:  # noqa: BLE001 - RDKit raises several types
        return Decoded(None, f"sanitisation failed: {err}", stable, False, 0)
    fragments = len(Chem.GetMolFrags(mol))
    reason = f"{fragments} fragments" if fragments > 1 else None
    return Decoded(mol, reason, stable, True, fragments)


def decode_graphs(process: JointProcess, x0: torch.Tensor, mask: torch.Tensor) -> list[Decoded]:
    """build_molecule of every final state (B, D) with node mask (B, N)."""
    if mask is None:
        raise ValueError("molecule states need a node mask (B, N)")
    return [build_molecule(g) for g in state_graphs(process, x0, mask)]


class MoleculeDecoder:
    """The model's decoder: final states (B, D), mask (B, N) -> B designs (RDKit Mols with
    explicit hydrogens and the sampled 3D conformer, or DecodeFailures)."""

    def __init__(self, process: JointProcess):
        self.process = process

    def __call__(self, x0: torch.Tensor, mask: torch.Tensor | None) -> list[Any]:
        return [d.design for d in decode_graphs(self.process, x0, mask)]


def molecule_graph(mol: Chem.Mol) -> MoleculeGraph:
    """The graph of a molecule with a 3D conformer (hydrogens, if any, are dropped): positions
    (n, 3), atom-type indices (n,) and kekulised bond orders (n, n). ValueError for an atom
    type outside ATOM_TYPES or an atom with a radical."""
    heavy = Chem.RemoveHs(mol)
    Chem.Kekulize(heavy, clearAromaticFlags=True)
    atoms = []
    for a in heavy.GetAtoms():
        kind = (a.GetSymbol(), a.GetFormalCharge())
        if kind not in ATOM_TYPES:
            raise ValueError(f"atom type {kind[0]}{kind[1]:+d} not in the vocabulary")
        if a.GetNumRadicalElectrons():
            raise ValueError(f"atom {a.GetIdx()} has a radical")
        atoms.append(ATOM_TYPES.index(kind))
    n = heavy.GetNumAtoms()
    bonds = torch.zeros(n, n, dtype=torch.long)
    for b in heavy.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        bonds[i, j] = bonds[j, i] = int(b.GetBondTypeAsDouble())
    positions = torch.as_tensor(heavy.GetConformer().GetPositions(), dtype=torch.float64)
    return MoleculeGraph(positions, torch.as_tensor(atoms, dtype=torch.long), bonds)


def canonical(mol: Chem.Mol) -> str:
    """Canonical non-isomeric SMILES without hydrogens (the training set's form)."""
    return Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False), isomericSmiles=False)
