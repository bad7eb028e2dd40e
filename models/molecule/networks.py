"""The molecule networks: an EGNN (Satorras et al. 2021) of the core's layers
(vardbio.geometry.EGNNLayer) on an edge list fully connecting the atoms of each molecule,
built with plain torch from the mask; the ε-prediction denoiser (equivariant to rotations,
translations and atom permutations), two invariant value networks, and the atom-count prior
that lays out samples. Parameter names are those the shipped weights were saved with."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from vardbio.geometry import EdgeGraph, EGNNLayer
from vardbio.model.diffusion import Layout
from vardbio.nn import TimeEmbedding, mlp
from vardbio_models.molecule.state import FEATURE_SCALE, NUM_FEATURES

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
