"""3D small molecules: EDM-style joint diffusion of coordinates and atom types with an EGNN.

State: a point cloud x (B, N, F) with a node mask (B, N), N = `max_atoms` heavy atoms.
Features per atom (F = 3 + len(ELEMENTS) + len(H_COUNTS) = 13):
    [0:3]   coordinates in Å, kept at zero centre of mass over the real atoms;
    [3:9]   one-hot element (C N O F S Cl) times FEATURE_SCALE (0.25, as EDM scales categories);
    [9:13]  one-hot number of attached hydrogens (0..3) times FEATURE_SCALE.
Hydrogens are implicit in the state and added back at decode: this halves the number of
nodes (and quarters the edges) relative to explicit-H diffusion, which is what makes
training on one CPU core possible. Decode puts each heavy atom's predicted hydrogens in 3D
(RDKit's AddHs with coordinates) and perceives bonds from the full 3D structure, hydrogens
included, with rdDetermineBonds.

Noise: GaussianProcess with com_dims=3 (exact densities on the zero-CoM subspace), a
linear schedule and ε-prediction. Denoiser: an EGNN (Satorras et al. 2021) of the core's
layers (vardbio.geometry.EGNNLayer) on an edge list fully connecting the atoms of each
molecule, built with plain torch from the mask. It is equivariant to rotations, translations
and atom permutations; the value head (same layers, mean-pooled) is invariant to all three.

Decoding: heavy atoms closer than 0.7 × their covalent radii are a clash (failure);
connectivity takes candidate bonds shortest first while both atoms have valence left after
their predicted hydrogens; hydrogens are then placed in 3D and bond orders assigned by
rdDetermineBonds. With the option repair_hydrogens (the campaigns use it), a sample that
fails with its predicted hydrogen counts is tried once more with counts made consistent
with its connectivity (repair_hydrogens); sample_quality reports strict and repaired
figures separately.

Designs: an RDKit Mol with explicit hydrogens and a 3D conformer when the sample decodes to
a sanitisable, single-fragment, closed-shell, neutral molecule; otherwise a DecodeFailure
carrying the reason (every oracle scores it NaN with a reason; it never becomes a 0).

Evaluate a checkpoint: `python -m vardbio_models.molecule evaluate --samples 1000`.
"""
from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from rdkit import Chem, DataStructs, RDLogger, rdBase
from rdkit.Chem import AllChem, rdDetermineBonds, rdFingerprintGenerator
from torch import nn

from vardbio.geometry import EdgeGraph, EGNNLayer, cat_padded, random_rotations
from vardbio.model.checkpoint import save_model
from vardbio.model.diffusion import DiffusionModel, Layout
from vardbio.model.plugin import ModelPlugin
from vardbio.model.training import pretrain_loop
from vardbio.nn import TimeEmbedding, mlp
from vardbio.processes.gaussian import GaussianProcess, GaussianProcessConfig
from vardbio.value.heads import ValueHead

RDLogger.DisableLog("rdApp.*")

WEIGHTS = Path(__file__).parent / "weights"
ELEMENTS = ("C", "N", "O", "F", "S", "Cl")
H_COUNTS = (0, 1, 2, 3)
FEATURE_SCALE = 0.25
NUM_FEATURES = 3 + len(ELEMENTS) + len(H_COUNTS)
# the most bonds (heavy neighbours + hydrogens) a neutral atom of each element may have
MAX_VALENCE = {"C": 4, "N": 3, "O": 2, "F": 1, "S": 6, "Cl": 1}
SATURATED = {"C": (4,), "N": (3,), "O": (2,), "F": (1,), "S": (2,), "Cl": (1,)}
DATASET_FORMAT = "moses-small-3d-1"


def data_dir() -> Path:
    """The project's data/ folder ($VARDBIO_DATA_DIR overrides it)."""
    import os

    env = os.environ.get("VARDBIO_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data"


# ----------------------------------------------------------------------------- dataset

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
        p = Path(self.smiles_file)
        return p if p.is_absolute() else data_dir() / p

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


def featurise(mol: Chem.Mol, max_atoms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heavy-atom positions (n, 3), element indices (n,) and hydrogen counts (n,) of a 3D
    molecule with explicit hydrogens; ValueError for elements or H counts out of range."""
    heavy = [a for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    if len(heavy) > max_atoms:
        raise ValueError(f"{len(heavy)} heavy atoms > max_atoms={max_atoms}")
    pos = mol.GetConformer().GetPositions()[[a.GetIdx() for a in heavy]]
    elements, hcounts = [], []
    for a in heavy:
        if a.GetSymbol() not in ELEMENTS:
            raise ValueError(f"element {a.GetSymbol()} not in {ELEMENTS}")
        h = a.GetTotalNumHs(includeNeighbors=True)
        if h not in H_COUNTS:
            raise ValueError(f"atom with {h} hydrogens")
        elements.append(ELEMENTS.index(a.GetSymbol()))
        hcounts.append(h)
    return pos, np.array(elements), np.array(hcounts)


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
    """Padded tensors of the processed set. positions: (M, N, 3) centred, Å; elements,
    hcounts: (M, N) long; mask: (M, N) bool; smiles: M canonical non-isomeric SMILES."""

    positions: torch.Tensor
    elements: torch.Tensor
    hcounts: torch.Tensor
    mask: torch.Tensor
    smiles: list[str]
    record: dict[str, Any]

    def __len__(self) -> int:
        return len(self.smiles)

    def states(self, index: torch.Tensor) -> torch.Tensor:
        """Model states (b, N, F) of molecules `index`, padding zero."""
        return encode_state(self.positions[index], self.elements[index], self.hcounts[index],
                            self.mask[index])


def build_dataset(params: DatasetParams, cache: Path | None = None, log=print) -> MoleculeDataset:
    """The processed dataset, from `cache` when it was made with the same parameters.

    A cache made with different parameters (or another input file or RDKit) is rebuilt and
    overwritten, never silently reused.
    """
    cache = cache or data_dir() / "molecules" / "processed" / "moses_small_3d.pt"
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
    elements = torch.zeros(len(smiles), n_max, dtype=torch.long)
    hcounts = torch.zeros(len(smiles), n_max, dtype=torch.long)
    mask = torch.zeros(len(smiles), n_max, dtype=torch.bool)
    kept, skipped = [], 0
    started = time.perf_counter()
    for i, smi in enumerate(smiles):
        try:
            p, e, h = featurise(embed(smi, params.seed + i, params.mmff_iterations), n_max)
        except ValueError:
            skipped += 1
            continue
        j, n = len(kept), len(e)
        pos[j, :n] = torch.as_tensor(p - p.mean(0), dtype=torch.float32)
        elements[j, :n] = torch.as_tensor(e)
        hcounts[j, :n] = torch.as_tensor(h)
        mask[j, :n] = True
        kept.append(Chem.MolToSmiles(Chem.MolFromSmiles(smi), isomericSmiles=False))
        if (i + 1) % 1000 == 0:
            log(f"embedded {i + 1}/{len(smiles)} molecules in {time.perf_counter() - started:.0f} s")
    m = len(kept)
    tensors = {"positions": pos[:m], "elements": elements[:m], "hcounts": hcounts[:m], "mask": mask[:m]}
    record = {**record, "skipped": skipped}
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"record": params.record(), "stats": record, "tensors": tensors, "smiles": kept}, cache)
    return MoleculeDataset(**tensors, smiles=kept, record=params.record())


def encode_state(positions: torch.Tensor, elements: torch.Tensor, hcounts: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """(B, N, F) states from positions (B, N, 3), element and H-count indices (B, N), mask."""
    m = mask.to(positions.dtype).unsqueeze(-1)
    centre = (positions * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
    onehot_e = nn.functional.one_hot(elements, len(ELEMENTS)).to(positions.dtype)
    onehot_h = nn.functional.one_hot(hcounts, len(H_COUNTS)).to(positions.dtype)
    x = torch.cat([positions - centre, FEATURE_SCALE * onehot_e, FEATURE_SCALE * onehot_h], -1)
    return x * m


# ----------------------------------------------------------------------------- networks

# the parts of the shared EGNN layer under the names this network has always saved
LAYER_NAMES = {"edge_i": "lin_i", "edge_j": "lin_j", "edge_e": "lin_d", "edge_mlp": "phi_e", "gate": "gate",
               "node_mlp": "phi_h", "coord_mlp": "phi_x", "norm": "norm"}


def molecule_layer(hidden: int) -> EGNNLayer:
    """The molecule EGNN layer: edge invariants |r_ij|² and the input's |r_ij|², gated
    messages, LayerNorm before the node update, coordinate steps bounded as 15·tanh(·)."""
    return EGNNLayer(hidden, edge_features=1, gate=True, edge_activation=True, norm=True, coord_scale=15.0,
                     coord_bias=False, coord_init_gain=0.001, names=LAYER_NAMES)


class EGNN(nn.Module):
    """EGNN trunk on padded molecules: states (B, N, F), times (B,), mask (B, N) ->
    hidden features (B, N, H) (invariant) and updated coordinates (B, N, 3) (equivariant)."""

    def __init__(self, hidden: int, layers: int, time_dim: int = 16):
        super().__init__()
        self.time = TimeEmbedding(time_dim)
        self.embed = nn.Linear(NUM_FEATURES - 3 + time_dim, hidden)
        self.layers = nn.ModuleList(molecule_layer(hidden) for _ in range(layers))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None):
        b, n, f = x_t.shape
        if f != NUM_FEATURES:
            raise ValueError(f"molecule states need {NUM_FEATURES} features per atom, got {f}")
        if mask is None:
            raise ValueError("molecule states need a node mask (B, N)")
        mask = mask.bool()
        m = mask.to(x_t.dtype).unsqueeze(-1)
        pos = x_t[..., :3] * m
        feats = x_t[..., 3:] / FEATURE_SCALE
        temb = self.time(t).to(x_t.dtype).unsqueeze(1).expand(b, n, -1)
        h = self.embed(torch.cat([feats, temb], -1)).reshape(b * n, -1)
        x = pos.reshape(b * n, 3)
        graph = EdgeGraph.complete(mask)
        _, d0 = graph.displacements(x)  # the input's squared distances, an edge feature of every layer
        for layer in self.layers:
            h, x, _ = layer(h, x, d0, graph)
        return h.reshape(b, n, -1), x.reshape(b, n, 3)


class EGNNDenoiser(nn.Module):
    """ε-prediction for molecule states: (B, N, F), (B,), (B, N) -> (B, N, F).

    The coordinate part is the EGNN's displacement of the input coordinates (equivariant,
    translation invariant); the feature part is a linear map of the invariant hidden state.
    """

    def __init__(self, hidden: int = 64, layers: int = 4):
        super().__init__()
        self.trunk = EGNN(hidden, layers)
        self.out = mlp([hidden, hidden, NUM_FEATURES - 3])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h, x = self.trunk(x_t, t, mask)
        m = mask.to(x_t.dtype).unsqueeze(-1)
        return torch.cat([x - x_t[..., :3], self.out(h)], -1) * m


class MoleculeValueNet(nn.Module):
    """Invariant value network: EGNN features mean-pooled over real atoms, then an MLP with
    the time features: (B, N, F), (B,), (B, N) -> (B,)."""

    def __init__(self, hidden: int = 64, layers: int = 3, time_dim: int = 16):
        super().__init__()
        self.trunk = EGNN(hidden, layers)
        self.time = TimeEmbedding(time_dim)
        self.head = mlp([hidden + time_dim + 1, hidden, hidden, 1])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h, _ = self.trunk(x_t, t, mask)
        m = mask.to(x_t.dtype).unsqueeze(-1)
        count = m.sum(1)
        pooled = (h * m).sum(1) / count.clamp(min=1)
        size = count / 20.0
        return self.head(torch.cat([pooled, self.time(t).to(x_t.dtype), size], -1)).squeeze(-1)


class MoleculeSetValueNet(nn.Module):
    """A small invariant value network (a Deep Set of atom environments): each atom is
    described by its element and hydrogen features and radial-basis counts of its neighbours
    (exp(-(d_ij - μ_k)² / 0.5), μ_k from 0.5 to 8 Å), mapped by an MLP, mean-pooled over
    real atoms, and read out with the time features and the atom count:
    (B, N, F), (B,), (B, N) -> (B,). Far fewer parameters than the EGNN head, which
    matters when only a few dozen scored molecules are valid."""

    def __init__(self, hidden: int = 32, layers: int = 2, time_dim: int = 16, rbf: int = 16):
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.5, 8.0, rbf), persistent=False)
        self.time = TimeEmbedding(time_dim)
        self.atom = mlp([NUM_FEATURES - 3 + rbf] + [hidden] * layers)
        self.head = mlp([hidden + time_dim + 1, hidden, 1])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            raise ValueError("molecule states need a node mask (B, N)")
        m = mask.to(x_t.dtype)
        pos = x_t[..., :3]
        d = torch.cdist(pos, pos)  # (B, N, N)
        pair = m.unsqueeze(1) * m.unsqueeze(2) * (1 - torch.eye(pos.shape[1], dtype=x_t.dtype))
        basis = torch.exp(-(d.unsqueeze(-1) - self.centres).pow(2) / 0.5)  # (B, N, N, K)
        env = (basis * pair.unsqueeze(-1)).sum(2)  # (B, N, K)
        h = self.atom(torch.cat([x_t[..., 3:] / FEATURE_SCALE, env], -1))
        count = m.sum(1, keepdim=True)
        pooled = (h * m.unsqueeze(-1)).sum(1) / count.clamp(min=1)
        return self.head(torch.cat([pooled, self.time(t).to(x_t.dtype), count / 20.0], -1)).squeeze(-1)


class AtomCountPrior(nn.Module):
    """layout(n, generator): heavy-atom counts drawn from the training histogram (a buffer,
    saved with the model), as masks over `max_atoms` slots."""

    def __init__(self, histogram: Sequence[int]):
        super().__init__()
        self.register_buffer("counts", torch.as_tensor(list(histogram), dtype=torch.float64))

    @property
    def max_atoms(self) -> int:
        return len(self.counts) - 1

    def forward(self, n: int, generator: torch.Generator | None = None) -> Layout:
        sizes = torch.multinomial(self.counts.float(), n, replacement=True, generator=generator)
        mask = torch.arange(self.max_atoms).unsqueeze(0) < sizes.unsqueeze(1)
        return Layout((n, self.max_atoms, NUM_FEATURES), mask)


# ----------------------------------------------------------------------------- decoding

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


def state_parts(x0: torch.Tensor, mask: torch.Tensor | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(positions, element indices, H counts) of the real atoms of each state (B, N, F).

    Without a mask, real atoms are the rows with any non-zero feature (padding is exactly 0
    in every state the process produces)."""
    if mask is None:
        mask = (x0 != 0).any(-1)
    out = []
    for x, m in zip(x0.detach().cpu().double(), mask.cpu().bool()):
        x = x[m]
        out.append((x[:, :3].numpy(), x[:, 3:3 + len(ELEMENTS)].argmax(-1).numpy(),
                    x[:, 3 + len(ELEMENTS):].argmax(-1).numpy()))
    return out


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


# ----------------------------------------------------------------------------- metrics

def canonical(mol: Chem.Mol) -> str:
    """Canonical non-isomeric SMILES without hydrogens (the training set's form)."""
    return Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False)


_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


def diversity(mols: Sequence[Chem.Mol]) -> float:
    """Mean pairwise Tanimoto distance of Morgan fingerprints (radius 2, 2048 bits); NaN
    for fewer than two molecules."""
    if len(mols) < 2:
        return float("nan")
    fps = [_MORGAN.GetFingerprint(m) for m in mols]
    total, pairs = 0.0, 0
    for i in range(1, len(fps)):
        sims = DataStructs.BulkTanimotoSimilarity(fps[i], fps[:i])
        total += len(sims) - sum(sims)
        pairs += len(sims)
    return total / pairs


def sample_quality(states: torch.Tensor, mask: torch.Tensor | None,
                   training_smiles: set[str] | None = None, connectivity: str = "capped",
                   repair: bool = False) -> dict[str, Any]:
    """The standard 3D-generation metrics on decoded samples.

    atom_stability: fraction of heavy atoms that are stable (see `perceive`: neutral and
        closed-shell after bond perception with their predicted hydrogens; hydrogens are
        implicit in the state, so this counts heavy atoms only);
    molecule_stability: fraction of samples whose every atom is stable;
    validity: fraction that RDKit sanitises (EDM's definition, fragments allowed);
    valid_fraction: fraction that are usable designs (sanitised, one fragment, stable);
    uniqueness: distinct canonical SMILES among the valid designs / valid designs;
    novelty: fraction of the distinct valid SMILES not in the training set.
    connectivity: 'capped' (what the decoder does) or 'radii' (stricter: see `perceive`);
    repair: decode as a model with repair_hydrogens does (validity, valid_fraction,
        uniqueness, novelty and diversity then count repaired molecules; `repaired` is
        their fraction of all samples). Atom and molecule stability always use the
        predicted hydrogens.
    """
    found = [perceive_state(*parts, connectivity=connectivity, repair=repair)
             for parts in state_parts(states, mask)]
    atoms = [s for p in found for s in p.atom_stable]
    valid = [p.mol for p in found if p.reason is None]
    smiles = [canonical(m) for m in valid]
    unique = set(smiles)
    out: dict[str, Any] = {
        "samples": len(found),
        "atom_stability": float(np.mean(atoms)) if atoms else float("nan"),
        "molecule_stability": float(np.mean([bool(p.atom_stable) and all(p.atom_stable) and p.mol is not None
                                             and not p.repaired for p in found])),
        "validity": float(np.mean([p.sanitised for p in found])),
        "valid_fraction": len(valid) / max(len(found), 1),
        "uniqueness": len(unique) / len(valid) if valid else float("nan"),
        "diversity": diversity(valid),
        "repaired": float(np.mean([p.repaired for p in found])) if found else float("nan"),
    }
    if training_smiles is not None:
        out["novelty"] = len(unique - training_smiles) / len(unique) if unique else float("nan")
    reasons: dict[str, int] = {}
    for p in found:
        if p.reason:
            key = p.reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    out["failure_reasons"] = reasons
    return out


# ----------------------------------------------------------------------------- plugin

DEFAULTS = {"hidden": 64, "layers": 4, "max_atoms": 20, "num_train_steps": 1000, "schedule": "linear",
            "prediction": "eps", "sampling_steps": 50, "eta": 1.0,
            "smiles_file": "molecules/moses_small.smi", "repair_hydrogens": False}
ARCHITECTURE = ("hidden", "layers", "max_atoms", "num_train_steps", "schedule", "prediction")
DATA = {"max_molecules": 10000, "eval_samples": 1000, "eval_batch": 250, "log": None, "dataset_cache": None}
# the shared loop (PretrainConfig): a wall-clock budget, a constant learning rate unless
# final_lr_fraction < 1, weight average, a learning-curve point every 200 steps
TRAINING = {"steps": 1_000_000, "minutes": 55.0, "batch_size": 64, "lr": 7e-4, "final_lr_fraction": 1.0,
            "ema": 0.999, "checkpoint_minutes": 5.0, "log_every": 200}


class MoleculePlugin(ModelPlugin):
    """3D small molecules (≤ 20 heavy atoms, C N O F S Cl, hydrogens implicit in the state)."""

    name = "molecule"
    defaults, data_defaults, training_defaults = DEFAULTS, DATA, TRAINING
    test_options = ({"hidden": 16, "layers": 2, "sampling_steps": 6},)

    def check_options(self, options: dict[str, Any]) -> None:
        for key in ("hidden", "layers", "max_atoms", "sampling_steps"):
            if int(options[key]) < 1:
                raise ValueError(f"molecule option {key} must be >= 1, got {options[key]}")

    def build(self, options: dict[str, Any]) -> DiffusionModel:
        opts = self.options(options)
        process = GaussianProcess(GaussianProcessConfig.from_options(opts, com_dims=3))
        denoiser = EGNNDenoiser(opts["hidden"], opts["layers"])
        layout = AtomCountPrior(atom_count_histogram(opts["smiles_file"], opts["max_atoms"]))
        architecture = {k: opts[k] for k in ARCHITECTURE}
        return DiffusionModel(denoiser, process, layout, MoleculeDecoder(opts["repair_hydrogens"]),
                              spec={"plugin": self.name, "options": architecture})

    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> ValueHead:
        """kind: 'egnn' (MoleculeValueNet, default) or 'set' (MoleculeSetValueNet); hidden, layers."""
        unknown = set(options) - {"kind", "hidden", "layers"}
        if unknown:
            raise ValueError(f"unknown molecule value-head options {sorted(unknown)}; valid: kind, hidden, layers")
        kind = options.get("kind", "egnn")
        if kind == "egnn":
            return ValueHead(MoleculeValueNet(int(options.get("hidden", 64)), int(options.get("layers", 3))))
        if kind == "set":
            return ValueHead(MoleculeSetValueNet(int(options.get("hidden", 32)), int(options.get("layers", 2))))
        raise ValueError(f"unknown molecule value-head kind '{kind}'; expected 'egnn' or 'set'")

    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        return WEIGHTS / "molecule.pt"

    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        """Train on the curated MOSES subset with the shared loop (by default under a
        wall-clock budget, `minutes`), each batch turned by uniform random rotations; ends
        with the sample-quality metrics of `eval_samples` samples. Dataset messages and the
        final metrics go to `log` (default: the checkpoint path with .log)."""
        opts, data_opts, config = self.split(options)
        log_path = Path(data_opts["log"]) if data_opts["log"] else Path(out_path).with_suffix(".log")
        log_path.parent.mkdir(parents=True, exist_ok=True)

        def log(msg: str) -> None:
            with log_path.open("a") as fh:
                fh.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        params = DatasetParams(smiles_file=opts["smiles_file"], max_molecules=int(data_opts["max_molecules"]),
                               max_atoms=opts["max_atoms"], seed=seed)
        started = time.perf_counter()
        cache = Path(data_opts["dataset_cache"]) if data_opts["dataset_cache"] else None
        data = build_dataset(params, cache, log)
        data_seconds = time.perf_counter() - started
        log(f"dataset: {len(data)} molecules ready in {data_seconds:.0f} s")

        def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.randint(0, len(data), (config.batch_size,), generator=generator)
            pos = torch.einsum("bij,bnj->bni", random_rotations(len(idx), generator), data.positions[idx])
            return encode_state(pos, data.elements[idx], data.hcounts[idx], data.mask[idx]), data.mask[idx]

        model, metrics = pretrain_loop(self.build(opts), batch, config, out_path, generator)
        eval_started = time.perf_counter()
        states, masks = sample_final_states(model, int(data_opts["eval_samples"]),
                                            torch.Generator().manual_seed(seed + 1), int(data_opts["eval_batch"]))
        metrics.update({
            **sample_quality(states, masks, set(data.smiles)),
            "dataset_seconds": round(data_seconds, 1), "eval_seconds": round(time.perf_counter() - eval_started, 1),
            "dataset_molecules": len(data), "dataset": data.record, "options": opts, "data": data_opts,
            "seed": seed, "torch_threads": torch.get_num_threads(),
        })
        log("metrics " + json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}))
        save_model(model, out_path, pretrain_metrics=metrics)
        return metrics

    def write_designs(self, designs, rewards, out_stem):
        """`<stem>.sdf` with every valid molecule (3D, explicit H; properties: index, smiles,
        reward) and `<stem>.csv` with one row per design (index, smiles, reward, failure); no
        SDF when no design is a valid molecule."""
        out_stem = Path(out_stem)
        out_stem.parent.mkdir(parents=True, exist_ok=True)
        sdf, table = out_stem.with_suffix(".sdf"), out_stem.with_suffix(".csv")
        writer = Chem.SDWriter(str(sdf))
        written = 0
        with table.open("w", newline="") as fh:
            rows = csv.writer(fh)
            rows.writerow(["index", "smiles", "reward", "failure"])
            for i, design in enumerate(designs):
                reward = float("nan") if rewards is None else float(rewards[i])
                if isinstance(design, Chem.Mol):
                    mol = Chem.Mol(design)
                    smi = canonical(mol)
                    mol.SetProp("_Name", f"design_{i}")
                    mol.SetIntProp("index", i)
                    mol.SetProp("smiles", smi)
                    if rewards is not None:
                        mol.SetDoubleProp("reward", reward)
                    writer.write(mol)
                    written += 1
                    rows.writerow([i, smi, f"{reward:.6g}", ""])
                else:
                    why = design.reason if isinstance(design, DecodeFailure) else f"not a molecule: {design!r}"
                    rows.writerow([i, getattr(design, "smiles", "") or "", f"{reward:.6g}", why])
        writer.close()
        if written == 0:  # no valid molecule: no SDF, the CSV says why
            sdf.unlink()
            return [table]
        return [sdf, table]

    def summary_extras(self, model, reference_samples, final_samples, reward_terms, beta):
        """valid_fraction, diversity and uniqueness of the final designs (and `_initial` of the
        reference model's), as defined in sample_quality."""
        extras: dict[str, Any] = {}
        for suffix, states in (("", final_samples), ("_initial", reference_samples)):
            q = sample_quality(states, None, repair=model.decoder.repair)
            for key in ("valid_fraction", "diversity", "uniqueness", "atom_stability", "molecule_stability",
                        "repaired"):
                extras[key + suffix] = q[key]
        return extras


plugin = MoleculePlugin()


def evaluate(checkpoint: str | Path | None = None, samples: int = 1000, batch: int = 250, seed: int = 1,
             sampling_steps: int | None = None) -> dict[str, Any]:
    """sample_quality of `samples` samples of a checkpoint (default: the shipped one), with
    novelty against the training SMILES recorded in the checkpoint's dataset, and timing."""
    from vardbio.model.checkpoint import read_checkpoint

    path = Path(checkpoint) if checkpoint else plugin.default_checkpoint({})
    extra = read_checkpoint(path).get("extra", {})
    options = {} if sampling_steps is None else {"sampling_steps": int(sampling_steps)}
    model = plugin.load(options, path).eval()
    started = time.perf_counter()
    states_t, masks_t = sample_final_states(model, samples, torch.Generator().manual_seed(seed), batch)
    sampling = time.perf_counter() - started
    training = _training_smiles(extra)
    metrics = sample_quality(states_t, masks_t, training)
    strict = sample_quality(states_t, masks_t, training, connectivity="radii")
    metrics["radii_connectivity"] = {k: v for k, v in strict.items() if k != "failure_reasons"}
    repaired = sample_quality(states_t, masks_t, training, repair=True)
    metrics["with_hydrogen_repair"] = {k: v for k, v in repaired.items() if k != "failure_reasons"}
    metrics.update({"sampling_seconds": round(sampling, 1), "sampling_steps": model.num_steps,
                    "checkpoint": str(path), "seed": seed})
    return metrics


@torch.no_grad()
def sample_final_states(model: DiffusionModel, n: int, generator: torch.Generator,
                        batch: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """Final states (n, N, F) and masks (n, N) of n samples drawn in batches of `batch`."""
    parts = [model.rollout(min(batch, n - start), generator) for start in range(0, n, batch)]
    return cat_padded([p.final for p in parts]), cat_padded([p.mask for p in parts])


def _training_smiles(extra: dict[str, Any]) -> set[str] | None:
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


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m vardbio_models.molecule evaluate [--checkpoint P] [--samples 1000]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vardbio_models.molecule")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="sample-quality metrics of a checkpoint")
    ev.add_argument("--checkpoint", default=None)
    ev.add_argument("--samples", type=int, default=1000)
    ev.add_argument("--batch", type=int, default=250)
    ev.add_argument("--seed", type=int, default=1)
    ev.add_argument("--sampling-steps", type=int, default=None)
    ev.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(evaluate(args.checkpoint, args.samples, args.batch, args.seed, args.sampling_steps),
                     indent=2))


if __name__ == "__main__":
    main()
