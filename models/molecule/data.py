"""The training set: curated MOSES SMILES (data/molecules/moses_small.smi, found through
vardbio.data) embedded in 3D (ETKDGv3 + MMFF94), as heavy-atom graphs (coordinates, atom
types, kekulised bond orders) that round-trip through decoding, cached with the parameters
that made it."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem

from vardbio.data import data_dir, data_path
from vardbio_models.molecule.decoding import build_molecule, canonical, molecule_graph
from vardbio_models.molecule.state import MoleculeGraph, encode_state, num_pairs

DATASET_FORMAT = "moses-small-3d-bonds-1"


@dataclass(frozen=True)
class DatasetParams:
    """Everything that changes the processed 3D dataset; recorded in the cache file.

    smiles_file: curated SMILES (data/molecules/moses_small.smi by default);
    max_molecules: how many of them are embedded (a subset drawn with `seed`);
    max_atoms: heavy-atom limit (molecules above it are skipped);
    seed: ETKDG random seed base (molecule i uses seed + i);
    mmff_iterations: MMFF94 relaxation iterations after ETKDGv3 embedding.
    """

    smiles_file: str = "molecules/moses_small.smi"
    max_molecules: int = 10000
    max_atoms: int = 20
    seed: int = 0
    mmff_iterations: int = 200

    def path(self) -> Path:
        return data_path(self.smiles_file)

    def record(self) -> dict[str, Any]:
        """The parameters plus the input file's hash and the tool versions."""
        return {"format": DATASET_FORMAT, "smiles_file": self.smiles_file,
                "smiles_sha1": hashlib.sha1(self.path().read_bytes()).hexdigest(),
                "max_molecules": self.max_molecules, "max_atoms": self.max_atoms,
                "seed": self.seed, "mmff_iterations": self.mmff_iterations,
                "embedding": "ETKDGv3 + MMFF94", "rdkit": rdBase.rdkitVersion}


def read_smiles(path: Path) -> list[str]:
    """SMILES lines of a curated file (lines starting with '#' are comments)."""
    return [s.strip() for s in path.read_text().splitlines() if s.strip() and not s.startswith("#")]


@lru_cache(maxsize=4)
def atom_count_histogram(smiles_file: str, max_atoms: int) -> tuple[int, ...]:
    """(max_atoms + 1,) counts of molecules by heavy-atom number in a curated SMILES file."""
    counts = [0] * (max_atoms + 1)
    path = DatasetParams(smiles_file=smiles_file).path()
    for smi in read_smiles(path):
        mol = Chem.MolFromSmiles(smi)
        if mol is not None and mol.GetNumAtoms() <= max_atoms:
            counts[mol.GetNumAtoms()] += 1
    if not any(counts):
        raise ValueError(f"no molecule of at most {max_atoms} heavy atoms in {path}")
    return tuple(counts)


def featurise(mol: Chem.Mol, max_atoms: int) -> MoleculeGraph:
    """The graph (positions, atom types, bond orders) of a 3D molecule, checked to decode
    back to the same canonical SMILES; ValueError for more than max_atoms heavy atoms, an
    atom type outside the vocabulary, or a graph that does not round-trip."""
    graph = molecule_graph(mol)
    if len(graph.atoms) > max_atoms:
        raise ValueError(f"{len(graph.atoms)} heavy atoms > max_atoms={max_atoms}")
    back = build_molecule(graph)
    if back.mol is None or canonical(back.mol) != canonical(mol):
        raise ValueError(f"the graph of {canonical(mol)} does not decode back to it ({back.reason})")
    return graph


def embed(smiles: str, seed: int, mmff_iterations: int) -> Chem.Mol:
    """A 3D conformer with explicit hydrogens: ETKDGv3 then MMFF94 relaxation."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise ValueError("ETKDG embedding failed")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=mmff_iterations)
    return mol


@dataclass
class MoleculeDataset:
    """Padded tensors of the processed set (N = max_atoms, P = N(N-1)/2). positions:
    (M, N, 3) centred, Å; atoms: (M, N) long atom-type indices; bonds: (M, P) long bond
    orders of the pairs i < j (torch.triu_indices order); mask: (M, N) bool; smiles: M
    canonical non-isomeric SMILES."""

    positions: torch.Tensor
    atoms: torch.Tensor
    bonds: torch.Tensor
    mask: torch.Tensor
    smiles: list[str]
    record: dict[str, Any]

    def __len__(self) -> int:
        return len(self.smiles)

    def states(self, index: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Packed model states (b, D) of molecules `index`, with `positions` (b, N, 3) in place
        of the stored ones when given (e.g. rotated)."""
        pos = self.positions[index] if positions is None else positions
        return encode_state(pos, self.atoms[index], self.bonds[index], self.mask[index])


def build_dataset(params: DatasetParams, cache: Path | None = None, log=print) -> MoleculeDataset:
    """The processed dataset, from `cache` when it was made with the same parameters.

    A cache made with different parameters (or another input file or RDKit) is rebuilt and
    overwritten, never silently reused.
    """
    cache = cache or data_dir() / "molecules" / "processed" / "moses_small_3d_bonds.pt"
    record = params.record()
    if cache.is_file():
        blob = torch.load(cache, map_location="cpu", weights_only=False)
        if blob.get("record") == record:
            return MoleculeDataset(**blob["tensors"], smiles=blob["smiles"], record=record)
        log(f"dataset cache {cache} was made with {blob.get('record')}; rebuilding for {record}")
    every = read_smiles(params.path())
    rng = np.random.default_rng(params.seed)
    chosen = np.sort(rng.permutation(len(every))[: params.max_molecules])
    smiles = [every[i] for i in chosen]
    n_max = params.max_atoms
    pos = torch.zeros(len(smiles), n_max, 3)
    atoms = torch.zeros(len(smiles), n_max, dtype=torch.long)
    bonds = torch.zeros(len(smiles), num_pairs(n_max), dtype=torch.long)
    mask = torch.zeros(len(smiles), n_max, dtype=torch.bool)
    kept, skipped = [], 0
    i_idx, j_idx = torch.triu_indices(n_max, n_max, 1)
    started = time.perf_counter()
    for i, smi in enumerate(smiles):
        try:
            graph = featurise(embed(smi, params.seed + i, params.mmff_iterations), n_max)
        except ValueError:
            skipped += 1
            continue
        j, n = len(kept), len(graph.atoms)
        pos[j, :n] = (graph.positions - graph.positions.mean(0)).float()
        atoms[j, :n] = graph.atoms
        dense = torch.zeros(n_max, n_max, dtype=torch.long)
        dense[:n, :n] = graph.bonds
        bonds[j] = dense[i_idx, j_idx]
        mask[j, :n] = True
        kept.append(Chem.MolToSmiles(Chem.MolFromSmiles(smi), isomericSmiles=False))
        if (i + 1) % 1000 == 0:
            log(f"embedded {i + 1}/{len(smiles)} molecules in {time.perf_counter() - started:.0f} s")
    m = len(kept)
    tensors = {"positions": pos[:m], "atoms": atoms[:m], "bonds": bonds[:m], "mask": mask[:m]}
    record = {**record, "skipped": skipped}
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"record": params.record(), "stats": record, "tensors": tensors, "smiles": kept}, cache)
    return MoleculeDataset(**tensors, smiles=kept, record=params.record())


def training_smiles(extra: dict[str, Any]) -> set[str] | None:
    """The canonical SMILES of the set a checkpoint was trained on (from its processed cache,
    rebuilt if needed), or None when the checkpoint does not record its dataset."""
    metrics = extra.get("pretrain_metrics") or {}
    record = metrics.get("dataset")
    if not record:
        return None
    params = DatasetParams(smiles_file=record["smiles_file"], max_molecules=record["max_molecules"],
                           max_atoms=record["max_atoms"], seed=record["seed"],
                           mmff_iterations=record["mmff_iterations"])
    every = read_smiles(params.path())
    rng = np.random.default_rng(params.seed)
    chosen = np.sort(rng.permutation(len(every))[: params.max_molecules])
    return {Chem.MolToSmiles(Chem.MolFromSmiles(every[i]), isomericSmiles=False) for i in chosen}
