"""The molecule networks: an EGNN of the core's layers (vardbio.geometry.EGNNLayer) on the
complete graph of each molecule's real atoms (EdgeGraph.complete) that carries an edge
hidden state read from the noisy bond types, the denoiser built on it (equivariant
coordinates, invariant atom and bond logits), the invariant value network, and the
atom-count prior that lays out samples.

Every network reads the packed state (B, D) of vardbio_models.molecule.state through the
process's split, accepts relaxed one-hots (VARD's straight-through Gumbel-softmax draws) as
well as one-hots, and never reads padding: padded atoms are no nodes of the graph.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from vardbio.geometry import EdgeGraph, EGNNLayer
from vardbio.model.diffusion import Layout
from vardbio.nn import TimeEmbedding, mlp
from vardbio.processes.joint import JointProcess
from vardbio_models.molecule.state import NUM_ATOM_TYPES, NUM_BOND_TYPES


def pair_index(n: int) -> torch.Tensor:
    """(n, n) long: the index of the unordered pair {i, j} in torch.triu_indices order
    (symmetric; the diagonal, which is no pair, holds 0)."""
    i, j = torch.triu_indices(n, n, 1)
    table = torch.zeros(n, n, dtype=torch.long)
    table[i, j] = torch.arange(len(i))
    return table + table.T


class BondedEGNN(nn.Module):
    """EGNN trunk on packed molecule states.

    Nodes start from the atom-type channels (mask token included) and the time; each
    directed edge (target i, source j) starts from the noisy bond channels of pair {i, j}.
    Each layer passes messages with the edge hidden state e_ij as edge feature, then updates
    e_ij ← e_ij + φ([e_ij, h_i + h_j, ρ(|r_ij|)]), which keeps e symmetric and invariant;
    ρ expands the distance in `rbf` Gaussians exp(-(d - μ_k)² / 0.5), μ_k from 0 to 8 Å
    (bounded features: a raw |r_ij|² would magnify float32 rounding in the bond logits).

    forward(x_t (B, D), t (B,), mask (B, N)) -> h (B, N, H) invariant node features,
    x (B, N, 3) updated coordinates (equivariant), e (B, N, N, H) edge features (invariant,
    symmetric, zero where i = j or an atom is padding).
    """

    def __init__(self, process: JointProcess, hidden: int = 64, layers: int = 4, time_dim: int = 16,
                 rbf: int = 16):
        super().__init__()
        self.process = process
        self.register_buffer("centres", torch.linspace(0.0, 8.0, rbf), persistent=False)
        self.time = TimeEmbedding(time_dim)
        self.embed = nn.Linear(NUM_ATOM_TYPES + 1 + time_dim, hidden)
        self.edge_embed = nn.Linear(NUM_BOND_TYPES + 1, hidden)
        self.layers = nn.ModuleList(
            EGNNLayer(hidden, edge_features=hidden, gate=True, edge_activation=True, norm=True, coord_scale=15.0,
                      coord_bias=False, coord_init_gain=0.001) for _ in range(layers))
        self.edge_updates = nn.ModuleList(mlp([2 * hidden + rbf, hidden, hidden]) for _ in range(layers))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None):
        if mask is None:
            raise ValueError("molecule states need a node mask (B, N)")
        parts = self.process.split(x_t)
        coords, atoms, bonds = parts["coords"], parts["atoms"], parts["bonds"]
        b, n, _ = coords.shape
        real = mask.bool()
        temb = self.time(t).to(x_t.dtype).unsqueeze(1).expand(b, n, -1)
        h = self.embed(torch.cat([atoms, temb], -1)).reshape(b * n, -1)
        x = (coords * real.unsqueeze(-1).to(x_t.dtype)).reshape(b * n, 3)
        graph = EdgeGraph.complete(real)
        mol, i, j = graph.target // n, graph.target % n, graph.source % n
        e = self.edge_embed(bonds[mol, pair_index(n).to(x_t.device)[i, j]])  # (E, H)
        for layer, update in zip(self.layers, self.edge_updates):
            h, x, _ = layer(h, x, e, graph)
            _, d2 = graph.displacements(x)
            basis = torch.exp(-((d2 + 1e-8).sqrt() - self.centres.to(x.dtype)).pow(2) / 0.5)
            e = e + update(torch.cat([e, graph.pair(h, h), basis], -1))
        dense = e.new_zeros(b, n, n, e.shape[-1]).index_put((mol, i, j), e)
        return h.reshape(b, n, -1), x.reshape(b, n, 3), dense


class MoleculeDenoiser(nn.Module):
    """The joint denoiser: x_t (B, D), t (B,), mask (B, N) -> packed outputs (B, D_out) in
    the process's order: ε̂ of the coordinates (B, N, 3) (the trunk's displacement of the
    input, equivariant and translation invariant, zero at padding), atom-type logits
    (B, N, A) and bond-type logits (B, P, E) from a symmetric head on e_ij + e_ji of the
    pairs i < j (both invariant)."""

    def __init__(self, process: JointProcess, hidden: int = 64, layers: int = 4):
        super().__init__()
        self.trunk = BondedEGNN(process, hidden, layers)
        self.atom_head = mlp([hidden, hidden, NUM_ATOM_TYPES])
        self.bond_head = mlp([hidden, hidden, NUM_BOND_TYPES])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h, x, e = self.trunk(x_t, t, mask)
        n = h.shape[1]
        m = mask.to(x_t.dtype).unsqueeze(-1)
        coords = self.trunk.process.split(x_t)["coords"]
        i, j = torch.triu_indices(n, n, 1, device=x_t.device)
        bonds = self.bond_head(e[:, i, j] + e[:, j, i])
        return torch.cat([((x - coords) * m).flatten(1), self.atom_head(h).flatten(1), bonds.flatten(1)], 1)


class MoleculeValueNet(nn.Module):
    """Invariant value network: a bonded trunk's node features and edge features, each
    mean-pooled over the real atoms (pairs), then an MLP with the time features and the
    atom count: x_t (B, D), t (B,), mask (B, N) -> (B,). Invariant to rotations,
    translations and atom permutations. `trunk`: a fresh BondedEGNN, or a copy of the
    pretrained denoiser's (every weight of it fitted with the head)."""

    def __init__(self, trunk: BondedEGNN, time_dim: int = 16):
        super().__init__()
        self.trunk = trunk
        hidden = trunk.embed.out_features
        self.time = TimeEmbedding(time_dim)
        self.head = mlp([2 * hidden + time_dim + 1, hidden, hidden, 1])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h, _, e = self.trunk(x_t, t, mask)
        m = mask.to(x_t.dtype)
        count = m.sum(1, keepdim=True)
        nodes = (h * m.unsqueeze(-1)).sum(1) / count.clamp(min=1)
        edges = e.sum((1, 2)) / (count * (count - 1)).clamp(min=1)
        return self.head(torch.cat([nodes, edges, self.time(t).to(x_t.dtype), count / 20.0], -1)).squeeze(-1)


class AtomCountPrior(nn.Module):
    """layout(n, generator): heavy-atom counts drawn from the training histogram (a buffer,
    saved with the model), as node masks (n, N) over N = `max_atoms` slots, for packed
    states (n, state_size)."""

    def __init__(self, histogram: Sequence[int], state_size: int):
        super().__init__()
        self.register_buffer("counts", torch.as_tensor(list(histogram), dtype=torch.float64))
        self.state_size = int(state_size)

    @property
    def max_atoms(self) -> int:
        return len(self.counts) - 1

    def forward(self, n: int, generator: torch.Generator | None = None) -> Layout:
        sizes = torch.multinomial(self.counts.float(), n, replacement=True, generator=generator)
        mask = torch.arange(self.max_atoms).unsqueeze(0) < sizes.unsqueeze(1)
        return Layout((n, self.state_size), mask)
