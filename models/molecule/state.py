"""The molecule state: heavy atoms with implicit hydrogens, their coordinates, atom types
and kekulised bond types, diffused jointly on one clock (vardbio.processes.joint).

N = max_atoms node slots, P = N(N-1)/2 unordered pairs i < j in torch.triu_indices order.
The packed state (B, D) holds three parts, in this order:
    coords  (N, 3)       coordinates in Å, zero centre of mass over the real atoms (Gaussian,
                         its time is the joint clock);
    atoms   (N, A + 1)   one-hot atom type from ATOM_TYPES (element and formal charge), the
                         last channel the mask token (masked categorical, node mask);
    bonds   (P, E + 1)   one-hot bond type from BOND_TYPES (none, single, double, triple) of
                         each pair, the last channel the mask token (masked categorical, pair
                         mask: real where both atoms are).
Padding slots and pairs hold the mask token (what the prior puts everywhere) and zero
coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from vardbio.processes.gaussian import GaussianProcessConfig
from vardbio.processes.joint import JointPart, JointProcess, JointProcessConfig, pack, pair_mask
from vardbio.processes.masked import MaskedDiffusionConfig

ATOM_TYPES = (("C", 0), ("N", 0), ("O", 0), ("F", 0), ("S", 0), ("Cl", 0), ("N", 1), ("O", -1))
"""(element, formal charge) of each atom type; charges are folded into the vocabulary."""
BOND_TYPES = ("none", "single", "double", "triple")
"""Bond types of a pair, by bond order 0..3 (kekulised: no aromatic type)."""
NUM_ATOM_TYPES, NUM_BOND_TYPES = len(ATOM_TYPES), len(BOND_TYPES)


def num_pairs(n: int) -> int:
    """P = n(n-1)/2, the unordered pairs of n nodes."""
    return n * (n - 1) // 2


@dataclass(frozen=True)
class LossWeights:
    """Weights of the parts' denoising losses (MiDi's ratio: coordinates 3, atoms 0.4, bonds 2)."""

    coords: float = 3.0
    atoms: float = 0.4
    bonds: float = 2.0


def molecule_process(max_atoms: int, sampling_steps: int, num_train_steps: int = 1000, schedule: str = "linear",
                     prediction: str = "eps", eta: float = 1.0, weights: LossWeights = LossWeights()) -> JointProcess:
    """The joint process over (coords, atoms, bonds) for `max_atoms` slots (see the module
    docstring): DDPM/DDIM coordinates on the zero-CoM subspace and two masked categoricals
    with a linear masking schedule, all with `sampling_steps` steps."""
    gaussian = GaussianProcessConfig(num_train_steps=num_train_steps, schedule=schedule, prediction=prediction,
                                     sampling_steps=sampling_steps, eta=eta, com_dims=3)
    return JointProcess(JointProcessConfig([
        JointPart("coords", gaussian, (max_atoms, 3), mask="node", loss_weight=weights.coords),
        JointPart("atoms", MaskedDiffusionConfig(vocab_size=NUM_ATOM_TYPES, sampling_steps=sampling_steps),
                  (max_atoms, NUM_ATOM_TYPES + 1), mask="node", loss_weight=weights.atoms),
        JointPart("bonds", MaskedDiffusionConfig(vocab_size=NUM_BOND_TYPES, sampling_steps=sampling_steps),
                  (num_pairs(max_atoms), NUM_BOND_TYPES + 1), mask="pair", loss_weight=weights.bonds),
    ]))


def _one_hot_masked(index: torch.Tensor, real: torch.Tensor, vocab: int, dtype: torch.dtype) -> torch.Tensor:
    """One-hot (B, L, vocab + 1) of indices (B, L), the mask token (channel vocab) where real is False."""
    return F.one_hot(torch.where(real, index, torch.full_like(index, vocab)), vocab + 1).to(dtype)


def encode_state(positions: torch.Tensor, atoms: torch.Tensor, bonds: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """Packed states (B, D) from positions (B, N, 3) in Å, atom-type indices (B, N) into
    ATOM_TYPES, bond-type indices (B, P) into BOND_TYPES and the node mask (B, N) bool:
    coordinates centred on the real atoms, padding as described in the module docstring."""
    real = mask.bool()
    m = real.to(positions.dtype).unsqueeze(-1)
    centre = (positions * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
    coords = (positions - centre) * m
    return pack([coords, _one_hot_masked(atoms, real, NUM_ATOM_TYPES, positions.dtype),
                 _one_hot_masked(bonds, pair_mask(real.long()).bool(), NUM_BOND_TYPES, positions.dtype)])


@dataclass
class MoleculeGraph:
    """One decoded sample's real atoms: positions (n, 3) Å, atom-type indices (n,) (-1 where
    a mask token is left), and bond orders (n, n) symmetric, zero diagonal (-1 for a mask
    token left)."""

    positions: torch.Tensor
    atoms: torch.Tensor
    bonds: torch.Tensor


def state_graphs(process: JointProcess, x0: torch.Tensor, mask: torch.Tensor) -> list[MoleculeGraph]:
    """The graph of each final state (B, D) with node mask (B, N): argmax atom and bond types
    over the real channels (a position still holding the mask token gives -1)."""
    if mask.shape[0] != x0.shape[0]:
        raise ValueError(f"{x0.shape[0]} states but {mask.shape[0]} node masks")
    parts = process.split(x0.detach().cpu().double())
    n = mask.shape[1]
    i, j = torch.triu_indices(n, n, 1)

    def types(onehot: torch.Tensor) -> torch.Tensor:
        kind = onehot[..., :-1].argmax(-1)
        return torch.where(onehot[..., -1] > onehot[..., :-1].max(-1).values, torch.full_like(kind, -1), kind)

    atoms, bonds = types(parts["atoms"]), types(parts["bonds"])
    out = []
    for b, real in enumerate(mask.cpu().bool()):
        dense = torch.zeros(n, n, dtype=torch.long)
        dense[i, j] = bonds[b]
        dense = dense + dense.T
        out.append(MoleculeGraph(parts["coords"][b][real], atoms[b][real], dense[real][:, real]))
    return out
