"""Protein backbones: E(3)-equivariant Gaussian diffusion over N, CA, C, O coordinates.

State: (B, L, 12) floats per residue: the CA position divided by CA_SCALE (kept at zero
centre of mass by the process, com_dims=3), then the N-CA, C-CA and O-CA offset vectors
divided by OFFSET_SCALE (translation-free, so no centring). Rotating a backbone rotates
all four 3-vectors of every residue; translating it moves only the CA block, which the
zero-CoM projection removes. The denoiser is an EGNN (Satorras et al. 2021) of the core's
layers (vardbio.geometry.EGNNLayer on a dense graph) carrying the three offset vectors per
residue: messages use only invariants (distances,
dot products of the offsets with the CA displacement, sequence separation), coordinates
are updated along CA displacements and along the residue's own offsets, so the predicted
clean backbone x̂_0 rotates and translates with the input (tested to 1e-4).

Data: data/proteins/backbone_fragments.npz, 32-residue windows of real chains from
MDAnalysisTests (scripts/build_protein_backbones.py; provenance in data/README.md).

Designs are float (L, 4, 3) numpy arrays (N, CA, C, O in Å), the format of
vardbio_oracles.structure; the campaign writes one PDB file per design (poly-glycine,
chain A) and a CSV of scores.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from vardbio.data import data_path
from vardbio.model.checkpoint import save_model
from vardbio.model.diffusion import DiffusionModel, Layout
from vardbio.model.evaluation import DomainSummary, Evaluation, Metric, OracleScores, score_in_process
from vardbio.model.plugin import ModelPlugin, check_length
from vardbio.model.training import pretrain_loop
from vardbio.geometry import DenseGraph, EGNNLayer, random_rotations, rotate_vectors, vector_gram
from vardbio.nn import TimeEmbedding, mlp
from vardbio.processes.gaussian import GaussianProcess, GaussianProcessConfig, min_snr_weight
from vardbio.value.heads import ValueHead

WEIGHTS = Path(__file__).parent / "weights"
DATA_FILE = "proteins/backbone_fragments.npz"
CA_SCALE = 6.0
OFFSET_SCALE = 1.5
ATOMS = ("N", "CA", "C", "O")
# ideal backbone geometry (Engh & Huber 1991): bond lengths (Å) and angles (degrees)
IDEAL_BONDS = {"N-CA": 1.458, "CA-C": 1.525, "C-O": 1.231, "C-N": 1.329}
IDEAL_ANGLES = {"N-CA-C": 111.2, "CA-C-N": 116.2, "C-N-CA": 121.7}


def read_fragments(path: Path | None = None) -> np.ndarray:
    """The curated fragments as float64 (n, L, 4, 3) in Å."""
    path = path or data_path(DATA_FILE, missing="rebuild the backbone training data with "
                                                 "scripts/build_protein_backbones.py")
    if not path.is_file():
        raise FileNotFoundError(f"backbone training data not found at {path}")
    with np.load(path) as blob:
        return blob["coords"].astype(np.float64) / 100.0


def encode_backbones(backbones: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
    """States (B, L, 12) from backbones (B, L, 4, 3) or a list of (L, 4, 3) arrays (Å).

    Raises ValueError naming the problem: not four atoms per residue (missing atoms),
    non-finite coordinates, or backbones of different lengths."""
    arrays = [np.asarray(b, dtype=np.float64) for b in backbones]
    for i, b in enumerate(arrays):
        if b.ndim != 3 or b.shape[1:] != (4, 3):
            raise ValueError(f"backbone {i} has shape {b.shape}; expected (L, 4, 3) with atoms "
                             f"{', '.join(ATOMS)} (missing backbone atoms?)")
        bad = np.flatnonzero(~np.isfinite(b).all(axis=(1, 2)))
        if len(bad):
            raise ValueError(f"backbone {i} has missing or non-finite atoms at residues {bad[:10].tolist()}")
    if len({len(b) for b in arrays}) > 1:
        raise ValueError("backbones in one batch must have one length")
    x = torch.as_tensor(np.stack(arrays), dtype=torch.float32)
    ca = x[:, :, 1]
    ca = ca - ca.mean(1, keepdim=True)
    offsets = (x[:, :, [0, 2, 3]] - x[:, :, 1:2]) / OFFSET_SCALE
    return torch.cat([ca / CA_SCALE, offsets.flatten(2)], -1)


def decode_states(x0: torch.Tensor, mask: torch.Tensor | None = None) -> list[np.ndarray]:
    """(B, L, 12) states -> B float64 (L, 4, 3) arrays (N, CA, C, O in Å), real residues only."""
    ca = x0[..., :3] * CA_SCALE
    off = x0[..., 3:].reshape(*x0.shape[:2], 3, 3) * OFFSET_SCALE
    atoms = torch.stack([ca + off[:, :, 0], ca, ca + off[:, :, 1], ca + off[:, :, 2]], 2)
    lengths = [x0.shape[1]] * x0.shape[0] if mask is None else mask.sum(1).long().tolist()
    return [a[:n].double().numpy() for a, n in zip(atoms, lengths)]


# the parts of the shared EGNN layer under the names this network has always saved
LAYER_NAMES = {"edge_i": "edge_i", "edge_j": "edge_j", "edge_e": "edge_e", "edge_mlp": "edge_out",
               "node_mlp": "node", "coord_mlp": "coord", "vector_mix": "mix"}


def backbone_layer(hidden: int, edge_dim: int, update_coords: bool = True) -> EGNNLayer:
    """The backbone EGNN layer on residues: a CA position and three offset vectors (N, C, O
    minus CA) per residue, edge features of width edge_dim (the sequence separation)."""
    return EGNNLayer(hidden, edge_dim, vectors=3, update_coords=update_coords, names=LAYER_NAMES)


class BackboneEGNN(nn.Module):
    """Equivariant x0-predictor: x_t (B, L, 12), t (B,), mask (B, L) -> x̂_0 (B, L, 12)
    (the input coordinates moved by the layers: equivariant to rotations, and to
    translations in the CA block)."""

    def __init__(self, max_length: int, hidden: int = 64, layers: int = 4, max_separation: int = 8,
                 time_dim: int = 32, update_coords: bool = True):
        super().__init__()
        self.max_length, self.max_separation = max_length, max_separation
        self.position = nn.Embedding(max_length, hidden)
        self.separation = nn.Embedding(2 * max_separation + 2, 16)
        self.time = TimeEmbedding(time_dim)
        self.h_in = mlp([hidden + time_dim + 6, hidden, hidden])
        self.layers = nn.ModuleList(backbone_layer(hidden, 16, update_coords) for _ in range(layers))

    def features(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None):
        batch, length = x_t.shape[:2]
        if length > self.max_length:
            raise ValueError(f"backbones of {length} residues are longer than the model's max_length {self.max_length}")
        mask = torch.ones(batch, length, dtype=x_t.dtype, device=x_t.device) if mask is None else mask.to(x_t.dtype)
        x = x_t[..., :3]
        v = x_t[..., 3:].reshape(batch, length, 3, 3)
        idx = torch.arange(length, device=x_t.device)
        sep = (idx[None, :] - idx[:, None]).clamp(-self.max_separation, self.max_separation) + self.max_separation
        far = (idx[None, :] - idx[:, None]).abs() > self.max_separation
        sep = torch.where(far, torch.full_like(sep, 2 * self.max_separation + 1), sep)
        edge_attr = self.separation(sep)[None].expand(batch, -1, -1, -1)
        graph = DenseGraph.complete(mask)
        tf = self.time(t)[:, None].expand(-1, length, -1)
        h = self.h_in(torch.cat([self.position(idx)[None].expand(batch, -1, -1), tf, vector_gram(v)], -1))
        return h, x, v, edge_attr, graph, mask

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h, x, v, edge_attr, graph, mask = self.features(x_t, t, mask)
        for layer in self.layers:
            h, x, v = layer(h, x, edge_attr, graph, v)
        return torch.cat([x, v.flatten(2)], -1) * mask[..., None]


class BackboneValueNet(nn.Module):
    """Invariant value network: (B, L, 12), t (B,), mask -> (B,). Invariant message passing
    (no coordinate updates) and a masked mean over residues."""

    def __init__(self, hidden: int = 32, layers: int = 2, max_length: int = 64, time_dim: int = 32):
        super().__init__()
        self.body = BackboneEGNN(max_length, hidden, layers, time_dim=time_dim, update_coords=False)
        self.head = mlp([hidden + time_dim, hidden, 1])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h, x, v, edge_attr, graph, mask = self.body.features(x_t, t, mask)
        for layer in self.body.layers:
            h, _, _ = layer(h, x, edge_attr, graph, v)
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.head(torch.cat([pooled, self.body.time(t)], -1)).squeeze(-1)


ARCH = {"max_length": 32, "hidden": 64, "layers": 3, "max_separation": 8}
DEFAULTS = {**ARCH, "length": 32, "min_length": 32, "sampling_steps": 50, "num_train_steps": 1000,
            "schedule": "cosine", "eta": 1.0}
DATA = {"eval_samples": 64, "snr_cap": 5.0, "strand_oversample": 0.0}
# the shared loop (PretrainConfig): warm-up, cosine to 0 (over the clock when minutes is set)
TRAINING = {"steps": 5000, "batch_size": 16, "lr": 1e-3, "warmup": 100, "ema": 0.999, "checkpoint_minutes": 5.0}


class ProteinBackbonePlugin(ModelPlugin):
    """Backbones of `length` residues (min_length <= length <= max_length)."""

    name = "protein_backbone"
    defaults, data_defaults, training_defaults = DEFAULTS, DATA, TRAINING
    test_options = ({"max_length": 12, "length": 10, "min_length": 4, "hidden": 16, "layers": 2,
                     "sampling_steps": 5, "num_train_steps": 100},)

    def check_options(self, options: dict[str, Any]) -> None:
        check_length(self.name, options)

    def build(self, options: dict[str, Any]) -> DiffusionModel:
        opts = self.options(options)
        process = GaussianProcess(GaussianProcessConfig.from_options(opts, prediction="x0", com_dims=3))
        denoiser = BackboneEGNN(**{k: opts[k] for k in ARCH})
        length = opts["length"]

        def layout(n: int, generator: torch.Generator | None) -> Layout:
            return Layout((n, length, 12), torch.ones(n, length))

        return DiffusionModel(denoiser, process, layout, decode_states,
                              spec={"plugin": self.name, "options": {k: opts[k] for k in (*ARCH, "min_length")}})

    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> ValueHead:
        return ValueHead(BackboneValueNet(max_length=model.spec["options"]["max_length"], **options))

    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        return WEIGHTS / "protein_backbone.pt"

    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        """Train on the curated fragments, each batch turned by uniform random rotations, with
        the shared loop and the Min-SNR-weighted x0 loss (γ = snr_cap); the metrics add the
        geometry of eval_samples samples beside the data's."""
        opts, data_opts, config = self.split(options)
        frags = read_fragments()
        if frags.shape[1] < opts["max_length"]:
            raise ValueError(f"fragments have {frags.shape[1]} residues, fewer than max_length {opts['max_length']}")
        frags = frags[:, : opts["max_length"]]
        data = encode_backbones(frags)
        weights = fragment_weights(frags, float(data_opts["strand_oversample"]))
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        mask = torch.ones(config.batch_size, opts["max_length"])
        weight = min_snr_weight(float(data_opts["snr_cap"]), "x0")

        def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.multinomial(weights, config.batch_size, replacement=True, generator=g)
            return rotate_vectors(data[idx], random_rotations(config.batch_size, g)), mask

        def loss(model: DiffusionModel, x0: torch.Tensor, mask: torch.Tensor, generator: torch.Generator):
            return model.process.training_loss(model.denoiser, x0, mask, generator, weight=weight)

        model, metrics = pretrain_loop(self.build(opts), batch, config, out_path, g, loss)
        samples = []
        for start in range(0, int(data_opts["eval_samples"]), 32):
            traj = model.rollout(min(32, int(data_opts["eval_samples"]) - start), g)
            samples += model.decode(traj.final, traj.mask)
        metrics.update({"n_fragments": len(frags), "samples": geometry_report(samples, score_in_process),
                        "data": geometry_report(list(frags[:: max(1, len(frags) // 256)]), score_in_process),
                        "options": opts, "data_options": data_opts, "seed": seed})
        save_model(model, out_path, pretrain_metrics=metrics)
        return metrics

    def write_designs(self, designs, rewards, out_stem):
        """One PDB file per design under <stem>_pdb/ (poly-glycine N, CA, C, O, chain A) and a
        CSV: file, length, the `geometry` figures, reward. Oracle scores of the evaluation
        designs are in reward_terms_*.csv and the summary, paid through the runtime."""
        folder = out_stem.parent / f"{out_stem.name}_pdb"
        folder.mkdir(parents=True, exist_ok=True)
        table = out_stem.with_suffix(".csv")
        with table.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "length", *GEOMETRY] + ([] if rewards is None else ["reward"]))
            for i, bb in enumerate(designs):
                path = folder / f"design_{i:04d}.pdb"
                path.write_text(to_pdb(bb, remark=None if rewards is None else f"reward {rewards[i]:.6g}"))
                figures = geometry(bb)
                row = [path.name, len(bb), *(f"{figures[k]:.4f}" for k in GEOMETRY)]
                writer.writerow(row + ([] if rewards is None else [f"{rewards[i]:.6g}"]))
        return [table, *sorted(folder.glob("design_*.pdb"))]

    def summarize(self, evaluation: Evaluation) -> DomainSummary:
        """geometry_report of the final designs, with the reference's as initial values: DSSP
        helix and sheet fractions, CA clashes and chain breaks (scored through the
        campaign's evaluation runtime), bond-length and angle deviations from ideal, CA-CA
        distances and diversity (mean pairwise CA RMSD over up to 64 designs)."""
        score = evaluation.oracles.values
        after = geometry_report(evaluation.final.designs, score)
        before = geometry_report(evaluation.reference.designs, score)
        return DomainSummary([Metric(key, after[key], before[key], **GEOMETRY_METRICS[key]) for key in GEOMETRY_METRICS])

GEOMETRY = ("bond_deviation", "angle_deviation", "ca_ca_mean", "ca_ca_std")
"""The figures of `geometry`, in the design CSV's column order."""
STRUCTURE_ORACLES = {"helix_fraction": ("ss_fraction", {"kind": "helix"}),
                     "sheet_fraction": ("ss_fraction", {"kind": "strand"}),
                     "ca_clashes": ("ca_clashes", None), "chain_breaks": ("chain_breaks", None)}
"""The registered oracles (name, params) behind geometry_report's oracle figures."""
GEOMETRY_METRICS = {
    "helix_fraction": {"label": "helix fraction (DSSP)", "units": "fraction of residues", "higher_is_better": None},
    "sheet_fraction": {"label": "sheet fraction (DSSP)", "units": "fraction of residues", "higher_is_better": None},
    "ca_clashes": {"label": "CA clashes", "units": "count of CA pairs", "higher_is_better": False},
    "chain_breaks": {"label": "chain breaks", "units": "count", "higher_is_better": False},
    "bond_deviation": {"label": "bond-length deviation from ideal", "units": "Å", "higher_is_better": False},
    "angle_deviation": {"label": "bond-angle deviation from ideal", "units": "degrees", "higher_is_better": False},
    "ca_ca_mean": {"label": "CA-CA distance (ideal 3.80)", "units": "Å", "higher_is_better": None},
    "ca_ca_std": {"label": "CA-CA distance spread", "units": "Å", "higher_is_better": False},
    "diversity": {"label": "diversity (mean pairwise CA RMSD)", "units": "Å", "higher_is_better": True},
}
"""How the summary describes geometry_report's figures (Metric's label, units, direction)."""


def fragment_weights(fragments: np.ndarray, strand_oversample: float) -> torch.Tensor:
    """(n,) sampling weights of training fragments (n, L, 4, 3): 1 + strand_oversample × the
    fragment's DSSP strand fraction, so sheets, which a small model learns last, can be shown
    more often; uniform when strand_oversample is 0."""
    if strand_oversample < 0:
        raise ValueError(f"strand_oversample must be >= 0, got {strand_oversample}")
    if strand_oversample == 0:
        return torch.ones(len(fragments), dtype=torch.float64)
    from vardbio_oracles.structure import SecondaryStructure

    strand = SecondaryStructure("strand").score(list(fragments)).values
    return torch.as_tensor(1.0 + strand_oversample * np.nan_to_num(strand, nan=0.0), dtype=torch.float64)


def to_pdb(backbone: np.ndarray, remark: str | None = None) -> str:
    """PDB text of a (L, 4, 3) backbone as poly-glycine chain A (N, CA, C, O per residue)."""
    lines = [f"REMARK   1 {remark}"] if remark else []
    serial = 1
    for i, residue in enumerate(np.asarray(backbone)):
        for name, (x, y, z) in zip(ATOMS, residue):
            element = name[0]
            lines.append(f"ATOM  {serial:5d}  {name:<3s} GLY A{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00"
                         f"          {element:>2s}")
            serial += 1
    lines += [f"TER   {serial:5d}      GLY A{len(backbone):4d}", "END", ""]
    return "\n".join(lines)


def _angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    u, w = a - b, c - b
    cos = (u * w).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(w, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def geometry(backbone: np.ndarray) -> dict[str, float]:
    """Per-backbone geometry: mean |bond length - ideal| (Å) and |angle - ideal| (degrees),
    CA-CA distances of consecutive residues (mean and standard deviation, Å)."""
    n, ca, c, o = (backbone[:, i] for i in range(4))
    bonds = [np.linalg.norm(ca - n, axis=-1) - IDEAL_BONDS["N-CA"], np.linalg.norm(c - ca, axis=-1) - IDEAL_BONDS["CA-C"],
             np.linalg.norm(o - c, axis=-1) - IDEAL_BONDS["C-O"], np.linalg.norm(n[1:] - c[:-1], axis=-1) - IDEAL_BONDS["C-N"]]
    angles = [_angle(n, ca, c) - IDEAL_ANGLES["N-CA-C"], _angle(ca[:-1], c[:-1], n[1:]) - IDEAL_ANGLES["CA-C-N"],
              _angle(c[:-1], n[1:], ca[1:]) - IDEAL_ANGLES["C-N-CA"]]
    caca = np.linalg.norm(ca[1:] - ca[:-1], axis=-1)
    return {"bond_deviation": float(np.mean(np.abs(np.concatenate(bonds)))),
            "angle_deviation": float(np.mean(np.abs(np.concatenate(angles)))),
            "ca_ca_mean": float(caca.mean()), "ca_ca_std": float(caca.std())}


def geometry_report(backbones: Sequence[np.ndarray], score: OracleScores) -> dict[str, float]:
    """Means over a set of backbones: DSSP helix and sheet fractions, CA clashes and chain
    breaks from `score` (vardbio.model.evaluation.OracleScores), the `geometry` figures, and
    diversity (mean pairwise CA RMSD over up to 64)."""
    from vardbio_oracles.structure import superposed_rmsd

    designs = list(backbones)
    report = {key: float(np.nanmean(score(name, designs, params))) for key, (name, params) in STRUCTURE_ORACLES.items()}
    per = [geometry(b) for b in designs]
    for key in per[0]:
        report[key] = float(np.mean([p[key] for p in per]))
    subset = [b[:, 1] for b in designs[:64]]
    rmsds = [superposed_rmsd(subset[i], subset[j]) for i in range(len(subset)) for j in range(i + 1, len(subset))]
    report["diversity"] = float(np.mean(rmsds)) if rmsds else float("nan")
    return report


plugin = ProteinBackbonePlugin()
