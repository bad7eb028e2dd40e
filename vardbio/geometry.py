"""3D geometry shared by every 3D model plugin: uniform random rotations, one E(n)-equivariant
message-passing layer (EGNN, Satorras et al. 2021) on a dense or an edge-list graph, the
Gram features of per-node vectors, and concatenation of variable-size point sets.

Graphs. An EGNN layer reads its neighbourhoods from a graph object:
- DenseGraph: padded sets, nodes (B, N, ·), edges (B, N, N, ·) indexed [target i, source j]
  and an edge mask (B, N, N);
- EdgeGraph: flattened nodes (M, ·), edges (E, ·) and an index (2, E) of (source j, target i).
Messages are averaged over each node's incoming edges. Both give the same layer; each keeps
its own order of floating-point operations, so a network keeps bit-identical outputs.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from vardbio.nn import mlp


def random_rotations(n: int, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, 3, 3) rotation matrices drawn uniformly (Haar measure on SO(3)).

    QR of Gaussian matrices with R's diagonal made positive is Haar on O(3) (Mezzadri 2007);
    a draw with det -1 has its first column negated, a fixed reflection that maps that half
    of O(3) onto SO(3) and keeps the measure uniform. Every matrix is orthogonal, det +1."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=generator, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)
    det = torch.linalg.det(q)
    q[:, :, 0] = q[:, :, 0] * det.unsqueeze(-1)
    return q


def rotate_vectors(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate every 3-vector of states x (B, N, 3k) (k vectors per node, features
    [3i:3i+3]) by its chain's rotation (B, 3, 3); returns (B, N, 3k)."""
    if x.shape[-1] % 3:
        raise ValueError(f"expected k 3-vectors per node, got {x.shape[-1]} features")
    vecs = x.reshape(*x.shape[:2], x.shape[-1] // 3, 3)
    return torch.einsum("bij,blaj->blai", rotations.to(x.dtype), vecs).reshape(x.shape)


def vector_gram(v: torch.Tensor) -> torch.Tensor:
    """Rotation-invariant node features of k vectors per node v (..., k, 3): the upper
    triangle of their Gram matrix v·vᵀ, (..., k(k+1)/2), row by row."""
    i, j = torch.triu_indices(v.shape[-2], v.shape[-2]).tolist()
    return torch.einsum("...ac,...dc->...ad", v, v)[..., i, j]


def cat_padded(tensors: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """Concatenate along `dim`, zero-padding the dimension after it (the node dimension of
    variable-size designs: states (B, N, F) or masks (B, N)) to the widest part."""
    width = max(t.shape[dim + 1] for t in tensors)
    tail = lambda t: [0, 0] * (t.dim() - dim - 2) + [0, width - t.shape[dim + 1]]  # noqa: E731
    return torch.cat([nn.functional.pad(t, tail(t)) for t in tensors], dim)


# ----------------------------------------------------------------------------- graphs

class DenseGraph:
    """Every pair of nodes of padded sets: edge_mask (B, N, N), 1 where target i receives
    from source j (real nodes, no self-loops unless set)."""

    def __init__(self, edge_mask: torch.Tensor):
        self.edge_mask = edge_mask
        self.degree = edge_mask.sum(2, keepdim=True).clamp(min=1)  # (B, N, 1)

    @classmethod
    def complete(cls, mask: torch.Tensor) -> "DenseGraph":
        """All ordered pairs of distinct real nodes of a node mask (B, N)."""
        eye = torch.eye(mask.shape[1], device=mask.device, dtype=mask.dtype)
        return cls(mask[:, :, None] * mask[:, None, :] * (1 - eye))

    def pair(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a_i + b_j for node tensors (B, N, H): (B, N, N, H)."""
        return a[:, :, None] + b[:, None]

    def displacements(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """r_ij = x_i - x_j (B, N, N, 3) and |r_ij|² (B, N, N, 1) for positions (B, N, 3)."""
        r = x[:, :, None] - x[:, None, :]
        return r, (r * r).sum(-1, keepdim=True)

    def vector_dots(self, r: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """r_ij·v_i and r_ij·v_j for node vectors v (B, N, k, 3): two (B, N, N, k)."""
        return torch.einsum("bijc,biac->bija", r, v), torch.einsum("bijc,bjac->bija", r, v)

    def masked(self, e: torch.Tensor) -> torch.Tensor:
        """Edge tensor (B, N, N, ·) with the non-edges zeroed."""
        return e * self.edge_mask[..., None]

    def mean(self, e: torch.Tensor) -> torch.Tensor:
        """Mean over incoming edges of masked edge tensors (B, N, N, H): (B, N, H)."""
        return e.sum(2) / self.degree

    def mean_vector(self, unit: torch.Tensor, w: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Mean over incoming edges of unit_ij · w_ij · scale: unit (B, N, N, 3), masked edge
        weights w (B, N, N, 1) -> (B, N, 3)."""
        return torch.einsum("bijc,bij->bic", unit, w[..., 0]) * scale / self.degree

    def mean_vectors(self, unit: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The same for k weights per edge w (B, N, N, k): (B, N, k, 3)."""
        return torch.einsum("bijc,bija->biac", unit, w) / self.degree[..., None]


class EdgeGraph:
    """An edge list over flattened nodes: index (2, E) of (source j, target i) rows into
    M = B·N nodes."""

    def __init__(self, index: torch.Tensor, num_nodes: int):
        self.source, self.target = index[0], index[1]
        self.num_nodes = num_nodes
        count = torch.zeros(num_nodes, device=index.device)
        self._count = count.scatter_add_(0, self.target, torch.ones(index.shape[1], device=index.device)).clamp(min=1)

    @classmethod
    def complete(cls, mask: torch.Tensor) -> "EdgeGraph":
        """Every ordered pair of distinct real nodes within each set of a node mask (B, N)
        (bool), over the flattened B·N nodes. Plain torch (no pyg-lib needed)."""
        b, n = mask.shape
        pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=mask.device)
        mol, tgt, src = pair.nonzero(as_tuple=True)
        return cls(torch.stack([mol * n + src, mol * n + tgt]), b * n)

    def pair(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a_i + b_j for node tensors (M, H): (E, H)."""
        return a.index_select(0, self.target) + b.index_select(0, self.source)

    def displacements(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """r_ij = x_i - x_j (E, 3) and |r_ij|² (E, 1) for positions (M, 3)."""
        r = x.index_select(0, self.target) - x.index_select(0, self.source)
        return r, r.pow(2).sum(-1, keepdim=True)

    def vector_dots(self, r: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """r_ij·v_i and r_ij·v_j for node vectors v (M, k, 3): two (E, k)."""
        return (torch.einsum("ec,eac->ea", r, v.index_select(0, self.target)),
                torch.einsum("ec,eac->ea", r, v.index_select(0, self.source)))

    def masked(self, e: torch.Tensor) -> torch.Tensor:
        return e

    def mean(self, e: torch.Tensor) -> torch.Tensor:
        """Mean over incoming edges of edge tensors (E, ...): (M, ...)."""
        index = self.target.view(-1, *([1] * (e.dim() - 1))).expand_as(e)
        out = e.new_zeros((self.num_nodes, *e.shape[1:])).scatter_add_(0, index, e)
        return out / self._count.to(e.dtype).view(-1, *([1] * (e.dim() - 1)))

    def mean_vector(self, unit: torch.Tensor, w: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Mean over incoming edges of unit_ij · w_ij · scale: unit (E, 3), w (E, 1) -> (M, 3)."""
        return self.mean(unit * w * scale)

    def mean_vectors(self, unit: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The same for k weights per edge w (E, k): (M, k, 3)."""
        return self.mean(w[..., None] * unit[:, None, :])


Graph = DenseGraph | EdgeGraph


# ----------------------------------------------------------------------------- EGNN layer

ROLES = ("edge_i", "edge_j", "edge_e", "edge_mlp", "gate", "node_mlp", "coord_mlp", "vector_mix", "norm")


class EGNNLayer(nn.Module):
    """One E(n)-equivariant message-passing layer.

    For every edge (target i, source j), with r_ij = x_i - x_j:
        m_ij = φ_e(W_i h_i + W_j h_j + W_e [|r_ij|², r_ij·v_i, r_ij·v_j, e_ij])  (· gate(m_ij))
        h_i ← h_i + φ_h([LN(h_i) or h_i, mean_j m_ij, Gram(v_i)])
        x_i ← x_i + mean_j r_ij / (|r_ij| + 1) · φ_x(m_ij)_0            (tanh(·)·scale if set)
        v_ia ← v_ia + mean_j r_ij / (|r_ij| + 1) · φ_x(m_ij)_a,  then v_i ← v_i + M(h_i) v_i
    Messages and h are invariant; x and v rotate with the input (x also translates).
    The first edge layer is split by input (W_i h_i + W_j h_j computed once per node).

    hidden: width H of h and m; edge_features: e_ij's width; vectors: k vectors v per node
    besides the position (0 = none; their dots with r_ij are edge invariants, their Gram
    matrix a node invariant, and they are moved along r_ij and mixed per node by M(h_i));
    update_coords: move x (and v) at all; gate: messages scaled by a sigmoid gate;
    edge_activation: a SiLU after φ_e's linear layer; norm: LayerNorm on h_i in φ_h;
    coord_scale: bound coordinate weights as tanh(·)·coord_scale (None: unbounded);
    coord_bias, coord_init_gain: bias of φ_x's last layer, and a xavier-uniform gain for its
    weights (None: PyTorch's default initialisation);
    names: the attribute name of each part (keys from ROLES), so networks written before
    this layer keep their parameter names and checkpoints.
    """

    def __init__(self, hidden: int, edge_features: int, vectors: int = 0, update_coords: bool = True,
                 gate: bool = False, edge_activation: bool = False, norm: bool = False,
                 coord_scale: float | None = None, coord_bias: bool = True,
                 coord_init_gain: float | None = None, names: Mapping[str, str] | None = None):
        super().__init__()
        unknown = set(names or {}) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown EGNN layer parts {sorted(unknown)}; valid: {list(ROLES)}")
        self.names = {**{r: r for r in ROLES}, **dict(names or {})}
        self.vectors, self.update_coords, self.coord_scale = int(vectors), update_coords, coord_scale
        self.has_gate, self.has_norm = gate, norm
        k = self.vectors
        self._add("edge_i", nn.Linear(hidden, hidden))
        self._add("edge_j", nn.Linear(hidden, hidden, bias=False))
        self._add("edge_e", nn.Linear(1 + 2 * k + edge_features, hidden, bias=False))
        self._add("edge_mlp", nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden),
                                            *([nn.SiLU()] if edge_activation else [])))
        if gate:
            self._add("gate", nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid()))
        self._add("node_mlp", mlp([2 * hidden + k * (k + 1) // 2, hidden, hidden]))
        if update_coords:
            coord = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1 + k, bias=coord_bias))
            if coord_init_gain is not None:
                nn.init.xavier_uniform_(coord[-1].weight, gain=coord_init_gain)
            self._add("coord_mlp", coord)
            if k:
                mix = nn.Linear(hidden, k * k)  # vectors mixed among themselves, per node
                nn.init.zeros_(mix.weight)
                nn.init.zeros_(mix.bias)
                self._add("vector_mix", mix)
        if norm:
            self._add("norm", nn.LayerNorm(hidden))

    def _add(self, role: str, module: nn.Module) -> None:
        setattr(self, self.names[role], module)

    def part(self, role: str) -> nn.Module:
        """The submodule playing `role` (one of ROLES)."""
        return getattr(self, self.names[role])

    def forward(self, h: torch.Tensor, x: torch.Tensor, edge_attr: torch.Tensor, graph: Graph,
                v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """h: node features (nodes, H); x: positions (nodes, 3); edge_attr: (edges, e);
        v: (nodes, k, 3) when the layer carries vectors. Returns updated (h, x, v)."""
        r, d2 = graph.displacements(x)
        invariants = [d2]
        if self.vectors:
            invariants += list(graph.vector_dots(r, v))
        pre = graph.pair(self.part("edge_i")(h), self.part("edge_j")(h)) + self.part("edge_e")(
            torch.cat([*invariants, edge_attr], -1))
        m = self.part("edge_mlp")(pre)
        if self.has_gate:
            m = m * self.part("gate")(m)
        m = graph.masked(m)
        node_in = [self.part("norm")(h) if self.has_norm else h, graph.mean(m)]
        if self.vectors:
            node_in.append(vector_gram(v))
        h = h + self.part("node_mlp")(torch.cat(node_in, -1))
        if not self.update_coords:
            return h, x, v
        w = self.part("coord_mlp")(m)
        if self.coord_scale is not None:
            w = torch.tanh(w)
        w = graph.masked(w)
        unit = r / ((d2 + 1e-8).sqrt() + 1.0)  # +1: bounded steps; eps: finite gradient at i = j
        x = x + graph.mean_vector(unit, w[..., :1], 1.0 if self.coord_scale is None else self.coord_scale)
        if self.vectors:
            v = v + graph.mean_vectors(unit, w[..., 1:])
            mix = self.part("vector_mix")(h).view(*h.shape[:-1], self.vectors, self.vectors)
            v = v + torch.einsum("...ad,...dc->...ac", mix, v)
        return h, x, v
