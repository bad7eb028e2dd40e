"""Toy domain: vectors drawn from a known Gaussian or Gaussian mixture, analytic rewards.

For a base density p and reward r, the KL-regularised optimum is p*(x) ∝ p(x)·exp(r(x)/β).
With a Gaussian base N(μ, Σ) and r = w·x it is N(μ + Σw/β, Σ): expected reward
w·μ + wᵀΣw/β and KL(p*||p) = wᵀΣw/(2β²). A mixture tilts each component the same way and
reweights it by exp(w·μ_k/β + wᵀΣ_k w/(2β²)).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from vardbio.model.checkpoint import save_model
from vardbio.model.diffusion import DiffusionModel, Layout
from vardbio.model.evaluation import DomainSummary, Evaluation
from vardbio.model.plugin import ModelPlugin
from vardbio.model.training import pretrain_loop, uniform_batches
from vardbio.nn import TimeEmbedding, mlp
from vardbio.processes.gaussian import GaussianProcess, GaussianProcessConfig
from vardbio.reward.oracle import PerDesignOracle
from vardbio.value.heads import ValueHead, VectorValueNet

WEIGHTS = Path(__file__).parent / "weights"


@dataclass
class GaussianMixture:
    """Σ_k weights_k · N(means_k, covs_k). means: (K, d); covs: (K, d, d); weights: (K,)."""

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, d) float64 samples."""
        comp = rng.choice(len(self.weights), size=n, p=self.weights)
        out = np.empty((n, self.dim))
        for k in range(len(self.weights)):
            sel = comp == k
            out[sel] = rng.multivariate_normal(self.means[k], self.covs[k], size=int(sel.sum()))
        return out

    def tilted(self, w: np.ndarray, beta: float) -> "GaussianMixture":
        """The optimum p* ∝ p · exp(w·x/β), itself a Gaussian mixture."""
        log_z = self.means @ w / beta + np.einsum("i,kij,j->k", w, self.covs, w) / (2 * beta**2)
        logits = np.log(self.weights) + log_z
        weights = np.exp(logits - logits.max())
        means = self.means + np.einsum("kij,j->ki", self.covs, w) / beta
        return GaussianMixture(weights / weights.sum(), means, self.covs)

    def optimum(self, w: np.ndarray, beta: float) -> tuple["GaussianMixture", float, float]:
        """(p* = tilted(w, β), its expected reward w·x, KL(p*‖p) = E_p*[w·x]/β - log Z)."""
        tilted = self.tilted(w, beta)
        reward = float(np.sum(tilted.weights * (tilted.means @ w)))
        return tilted, reward, reward / beta - self.log_normaliser(w, beta)

    def log_normaliser(self, w: np.ndarray, beta: float) -> float:
        """log E_p[exp(w·x/β)]."""
        log_z = self.means @ w / beta + np.einsum("i,kij,j->k", w, self.covs, w) / (2 * beta**2)
        return float(np.log(np.sum(self.weights * np.exp(log_z - log_z.max()))) + log_z.max())

    def component_of(self, x: np.ndarray) -> np.ndarray:
        """(n,) index of the most probable component of each row of x (n, d)."""
        scores = []
        for k in range(len(self.weights)):
            diff = x - self.means[k]
            prec = np.linalg.inv(self.covs[k])
            _, logdet = np.linalg.slogdet(self.covs[k])
            scores.append(np.log(self.weights[k]) - 0.5 * (np.einsum("ni,ij,nj->n", diff, prec, diff) + logdet))
        return np.argmax(np.stack(scores, 1), axis=1)


def _correlated_cov(dim: int, seed: int) -> np.ndarray:
    """A fixed, well-conditioned covariance with correlations (eigenvalues 0.5 .. 1.5)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q @ np.diag(np.linspace(0.5, 1.5, dim)) @ q.T


DATASETS: dict[str, GaussianMixture] = {
    "gaussian2": GaussianMixture(np.ones(1), np.array([[0.5, -0.5]]), _correlated_cov(2, 2)[None]),
    "gaussian8": GaussianMixture(np.ones(1), np.linspace(-1, 1, 8)[None], _correlated_cov(8, 8)[None]),
    "mixture2": GaussianMixture(np.array([0.5, 0.5]), np.array([[-2.0, 0.0], [2.0, 0.0]]),
                                np.stack([0.25 * np.eye(2)] * 2)),
    "mixture2_skewed": GaussianMixture(np.array([0.9, 0.1]), np.array([[-2.0, 0.0], [2.0, 0.0]]),
                                       np.stack([0.25 * np.eye(2)] * 2)),
}


class ToyDenoiser(nn.Module):
    """ε-prediction MLP for vector states: (B, d), (B,) -> (B, d)."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, time_dim: int = 32):
        super().__init__()
        self.time = TimeEmbedding(time_dim)
        self.body = mlp([dim + time_dim] + [hidden] * depth + [dim])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(torch.cat([x_t, self.time(t)], dim=-1))


DEFAULTS = {"dataset": "gaussian8", "hidden": 128, "depth": 3, "num_train_steps": 1000,
            "schedule": "linear", "sampling_steps": 20, "eta": 1.0, "prediction": "eps"}
DATA = {"train_samples": 20000}
# the shared loop (PretrainConfig): cosine over the steps, no weight average, no clipping
TRAINING = {"steps": 4000, "batch_size": 512, "lr": 2e-3, "max_grad_norm": 0.0}


class ToyPlugin(ModelPlugin):
    """The toy domain: vectors in R^d from DATASETS."""

    name = "toy"
    gallery = {".csv": "vectors"}
    defaults, data_defaults, training_defaults = DEFAULTS, DATA, TRAINING
    test_options = ({"dataset": "gaussian2"}, {"dataset": "gaussian8"}, {"dataset": "mixture2"})

    def check_options(self, options: dict[str, Any]) -> None:
        if options["dataset"] not in DATASETS:
            raise ValueError(f"unknown toy dataset '{options['dataset']}'; available: {sorted(DATASETS)}")

    def build(self, options: dict[str, Any]) -> DiffusionModel:
        opts = self.options(options)
        dim = DATASETS[opts["dataset"]].dim
        process = GaussianProcess(GaussianProcessConfig.from_options(opts))
        denoiser = ToyDenoiser(dim, opts["hidden"], opts["depth"])
        architecture = {k: opts[k] for k in ("dataset", "hidden", "depth")}
        return DiffusionModel(denoiser, process, lambda n, g: Layout((n, dim)), _decode_vectors,
                              spec={"plugin": self.name, "options": architecture})

    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> ValueHead:
        dim = DATASETS[model.spec["options"]["dataset"]].dim
        return ValueHead(VectorValueNet(dim, **options))

    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        return WEIGHTS / f"toy_{self.options(options)['dataset']}.pt"

    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        """Train on `train_samples` draws of the dataset with the shared loop; the metrics add
        the distance of 4096 samples' mean and covariance from the true ones."""
        opts, data_opts, config = self.split(options)
        dist = DATASETS[opts["dataset"]]
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        data = torch.as_tensor(dist.sample(data_opts["train_samples"], np.random.default_rng(seed)),
                               dtype=torch.float32)
        batches = uniform_batches(data, config.batch_size, generator)
        model, metrics = pretrain_loop(self.build(opts), batches, config, out_path, generator)
        samples = model.rollout(4096, generator).final.double().numpy()
        truth = dist.sample(200000, np.random.default_rng(seed + 1))
        metrics.update({"mean_error": float(np.linalg.norm(samples.mean(0) - truth.mean(0))),
                        "cov_error": float(np.linalg.norm(np.cov(samples.T) - np.cov(truth.T))),
                        "options": opts, "data": data_opts, "seed": seed})
        save_model(model, out_path, pretrain_metrics=metrics)
        return metrics

    def write_designs(self, designs, rewards, out_stem):
        """A CSV with one row per design: x0 .. x{d-1} and, if given, the reward."""
        dim = len(designs[0]) if designs else 0
        return write_table(out_stem, [f"x{i}" for i in range(dim)], [[f"{v:.6g}" for v in x] for x in designs],
                           rewards)

    def summarize(self, evaluation: Evaluation) -> DomainSummary:
        """The analytic optimum for a single linear reward (and mixture weights for mixtures).

        Gaussian bases use the mean and covariance of the reference model's own samples, so
        the target is the optimum for the model actually being fine-tuned.
        """
        terms, beta = evaluation.reward_terms, evaluation.beta
        if beta is None or len(terms) != 1 or not isinstance(terms[0].oracle, LinearReward):
            return DomainSummary()
        w = terms[0].weight * terms[0].oracle.w
        ref = evaluation.reference.states.double().numpy()
        if ref.shape[1] != len(w):
            raise ValueError(f"linear reward has {len(w)} weights for {ref.shape[1]}-dimensional designs")
        dataset = DATASETS[evaluation.model.spec["options"]["dataset"]]
        base = (GaussianMixture(np.ones(1), ref.mean(0)[None], np.cov(ref.T)[None])
                if len(dataset.weights) == 1 else dataset)
        optimum, reward_opt, kl_opt = base.optimum(w, beta)
        entries: dict[str, Any] = {"analytic": {"reward_optimum": reward_opt, "kl_optimum": kl_opt}}
        if len(base.weights) > 1:
            final = evaluation.final.states
            found = np.bincount(optimum.component_of(final.double().numpy()),
                                minlength=len(base.weights)) / len(final)
            entries["analytic"]["mixture_weights_optimum"] = optimum.weights.tolist()
            entries["mixture_weights_final"] = found.tolist()
        return DomainSummary(entries=entries)

def write_table(out_stem: Path, header: list[str], rows: Sequence[list[str]], rewards: np.ndarray | None) -> list[Path]:
    """<stem>.csv: `header` and one row per design, then a reward column if rewards are given."""
    path = Path(out_stem).with_suffix(".csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header + ([] if rewards is None else ["reward"]))
        for i, row in enumerate(rows):
            writer.writerow(row + ([] if rewards is None else [f"{rewards[i]:.6g}"]))
    return [path]


def _decode_vectors(x0: torch.Tensor, mask: torch.Tensor | None) -> list[np.ndarray]:
    return [row for row in x0.double().numpy()]


class LinearReward(PerDesignOracle):
    """r(x) = w·x with w = scale · direction / |direction| (direction defaults to all ones).

    Units: arbitrary; higher is better; cost: microseconds."""

    name = "toy_linear"
    version = "1"

    def __init__(self, dim: int = 8, scale: float = 1.0, direction: Sequence[float] | None = None):
        direction = np.ones(dim) if direction is None else np.asarray(direction, dtype=np.float64)
        if direction.shape != (dim,) or not np.any(direction):
            raise ValueError(f"direction must be a non-zero vector of length dim={dim}")
        self.dim, self.scale = dim, float(scale)
        self.w = self.scale * direction / np.linalg.norm(direction)

    def params(self) -> dict[str, Any]:
        return {"w": self.w.round(12).tolist()}

    def score_one(self, design: np.ndarray) -> float:
        x = np.asarray(design, dtype=np.float64)
        if x.shape != (self.dim,) or not np.all(np.isfinite(x)):
            raise ValueError(f"expected a finite vector of length {self.dim}, got shape {x.shape}")
        return float(self.w @ x)


class QuadraticReward(PerDesignOracle):
    """r(x) = -scale · |x - centre|² (higher is better, peak 0 at the centre)."""

    name = "toy_quadratic"
    version = "1"

    def __init__(self, dim: int = 8, scale: float = 1.0, centre: Sequence[float] | None = None):
        self.dim, self.scale = dim, float(scale)
        self.centre = np.zeros(dim) if centre is None else np.asarray(centre, dtype=np.float64)
        if self.centre.shape != (dim,):
            raise ValueError(f"centre must have length dim={dim}")

    def params(self) -> dict[str, Any]:
        return {"scale": self.scale, "centre": self.centre.tolist()}

    def score_one(self, design: np.ndarray) -> float:
        x = np.asarray(design, dtype=np.float64)
        if x.shape != (self.dim,) or not np.all(np.isfinite(x)):
            raise ValueError(f"expected a finite vector of length {self.dim}, got shape {x.shape}")
        return float(-self.scale * np.sum((x - self.centre) ** 2))


plugin = ToyPlugin()
