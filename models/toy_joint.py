"""Toy joint domain: a Gaussian vector and a categorical sequence, diffused together.

A design is a pair (x, s): x ∈ R^d drawn from a single-Gaussian toy dataset N(μ, Σ)
(vardbio_models.toy.DATASETS) and, independently, a sequence s of L letters whose positions
are independent categoricals p_l (vardbio_models.toy_sequence.position_probs). The model
diffuses both on one clock with a JointProcess: a Gaussian part for x and a masked
categorical part for s.

With an additive reward r(x, s) = w·x + Σ_l W[l, s_l], the KL-regularised optimum
p*(x, s) ∝ p(x, s)·exp(r/β) factorises into the tilt of each part: N(μ + Σw/β, Σ) for x
(expected reward w·μ + wᵀΣw/β, KL wᵀΣw/(2β²)) and p*_l(v) ∝ p_l(v)·exp(W[l, v]/β) for s,
so its expected reward and its KL to p are the parts' sums. This checks VARD, DDPO and
best-of-N on a joint process against a known answer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vardbio.model.checkpoint import save_model
from vardbio.model.diffusion import DiffusionModel, Layout
from vardbio.model.evaluation import DomainSummary, Evaluation
from vardbio.model.plugin import ModelPlugin
from vardbio.model.training import pretrain_loop, uniform_batches
from vardbio.nn import TimeEmbedding, mlp
from vardbio.processes.gaussian import GaussianProcessConfig
from vardbio.processes.joint import JointPart, JointProcess, JointProcessConfig, pack
from vardbio.processes.masked import MaskedDiffusionConfig
from vardbio.reward.oracle import OracleError, PerDesignOracle
from vardbio.value.heads import ValueHead, VectorValueNet
from vardbio_models.toy import DATASETS, GaussianMixture, LinearReward, write_table
from vardbio_models.toy_sequence import ALPHABET, TokenScore, position_probs, tilted_categoricals

WEIGHTS = Path(__file__).parent / "weights"


class JointDesign(NamedTuple):
    """A decoded design: the vector (d,) float64 and the sequence of L letters."""

    vector: np.ndarray
    sequence: str


class JointDenoiser(nn.Module):
    """An MLP on the packed joint state and time: x_t (B, D), t (B,) -> packed outputs
    (B, D_out) (ε for the vector part, letter logits for the sequence part)."""

    def __init__(self, state_size: int, output_size: int, hidden: int = 128, depth: int = 3, time_dim: int = 32):
        super().__init__()
        self.time = TimeEmbedding(time_dim)
        self.body = mlp([state_size + time_dim] + [hidden] * depth + [output_size])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(torch.cat([x_t, self.time(t)], dim=-1))


def joint_process(dim: int, length: int, vocab: int, sampling_steps: int) -> JointProcess:
    """The vector part (d,) (DDPM, linear schedule, ε-prediction) then the sequence part
    (L, V+1) (masked, linear schedule), both with `sampling_steps` steps."""
    return JointProcess(JointProcessConfig([
        JointPart("vector", GaussianProcessConfig(num_train_steps=1000, schedule="linear",
                                                  sampling_steps=sampling_steps), (dim,)),
        JointPart("sequence", MaskedDiffusionConfig(vocab_size=vocab, sampling_steps=sampling_steps),
                  (length, vocab + 1)),
    ]))


DEFAULTS = {"dataset": "gaussian2", "length": 4, "vocab": 3, "data_seed": 0, "hidden": 128, "depth": 3,
            "sampling_steps": 20}
DATA = {"train_samples": 20000}
# the shared loop (PretrainConfig): cosine over the steps, no weight average, no clipping
TRAINING = {"steps": 4000, "batch_size": 512, "lr": 2e-3, "max_grad_norm": 0.0}


class ToyJointPlugin(ModelPlugin):
    """Pairs (vector from a single-Gaussian toy dataset, sequence of `length` letters from
    the first `vocab` letters of ALPHABET), diffused jointly."""

    name = "toy_joint"
    gallery = {".csv": "vectors"}
    defaults, data_defaults, training_defaults = DEFAULTS, DATA, TRAINING
    test_options = ({"length": 3, "vocab": 2, "hidden": 32, "depth": 1, "sampling_steps": 4},)

    def check_options(self, options: dict[str, Any]) -> None:
        single = sorted(k for k, d in DATASETS.items() if len(d.weights) == 1)
        if options["dataset"] not in single:
            raise ValueError(f"toy_joint needs a single-Gaussian dataset, one of {single}; got '{options['dataset']}'")
        if not 2 <= options["vocab"] <= len(ALPHABET):
            raise ValueError(f"vocab must be in [2, {len(ALPHABET)}], got {options['vocab']}")

    def build(self, options: dict[str, Any]) -> DiffusionModel:
        opts = self.options(options)
        dim, length, vocab = DATASETS[opts["dataset"]].dim, opts["length"], opts["vocab"]
        process = joint_process(dim, length, vocab, opts["sampling_steps"])
        denoiser = JointDenoiser(process.state_size, process.output_size, opts["hidden"], opts["depth"])
        architecture = {k: opts[k] for k in ("dataset", "length", "vocab", "data_seed", "hidden", "depth")}

        def decode(x0: torch.Tensor, mask: torch.Tensor | None) -> list[JointDesign]:
            parts = process.split(x0)
            letters = parts["sequence"][..., :vocab].argmax(-1).tolist()
            return [JointDesign(v, "".join(ALPHABET[i] for i in row))
                    for v, row in zip(parts["vector"].double().numpy(), letters)]

        return DiffusionModel(denoiser, process, lambda n, g: Layout((n, process.state_size)), decode,
                              spec={"plugin": self.name, "options": architecture})

    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> ValueHead:
        return ValueHead(VectorValueNet(model.process.state_size, **options))

    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        opts = self.options(options)
        return WEIGHTS / f"toy_joint_{opts['dataset']}_L{opts['length']}_V{opts['vocab']}.pt"

    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        """Train on `train_samples` independent (vector, sequence) pairs with the shared loop;
        the metrics add, for 4096 samples, the distance of the vectors' mean and covariance
        from the true ones, the largest error of the letter frequencies per position, and
        the largest correlation between a vector coordinate and a letter indicator (0 for
        independent parts, up to sampling noise of about 1/sqrt(4096) = 0.016)."""
        opts, data_opts, config = self.split(options)
        dist, length, vocab = DATASETS[opts["dataset"]], opts["length"], opts["vocab"]
        probs = position_probs(length, vocab, opts["data_seed"])
        n = data_opts["train_samples"]
        rng = np.random.default_rng(seed)
        vectors = torch.as_tensor(dist.sample(n, rng), dtype=torch.float32)
        tokens = np.stack([rng.choice(vocab, size=n, p=p) for p in probs], 1)
        data = pack([vectors, F.one_hot(torch.as_tensor(tokens), vocab + 1).float()])
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model, metrics = pretrain_loop(self.build(opts), uniform_batches(data, config.batch_size, g), config,
                                       out_path, g)
        parts = model.process.split(model.rollout(4096, g).final.double())
        x, letters = parts["vector"].numpy(), parts["sequence"][..., :vocab].flatten(1).numpy()
        truth = dist.sample(200000, np.random.default_rng(seed + 1))
        informative = letters.std(0) > 0
        cross = np.corrcoef(x.T, letters[:, informative].T)[: x.shape[1], x.shape[1]:]
        metrics.update({"mean_error": float(np.linalg.norm(x.mean(0) - truth.mean(0))),
                        "cov_error": float(np.linalg.norm(np.cov(x.T) - np.cov(truth.T))),
                        "marginal_error_max": float(np.abs(letters.reshape(-1, length, vocab).mean(0) - probs).max()),
                        "cross_correlation_max": float(np.abs(cross).max()),
                        "options": opts, "data": data_opts, "seed": seed})
        save_model(model, out_path, pretrain_metrics=metrics)
        return metrics

    def write_designs(self, designs, rewards, out_stem):
        """A CSV with one row per design: x0 .. x{d-1}, the sequence and, if given, the reward."""
        dim = len(designs[0].vector) if designs else 0
        return write_table(out_stem, [f"x{i}" for i in range(dim)] + ["sequence"],
                           [[f"{v:.6g}" for v in d.vector] + [d.sequence] for d in designs], rewards)

    def summarize(self, evaluation: Evaluation) -> DomainSummary:
        """The exact optimum for one JointScore reward, each part tilted on its own from the
        reference model's samples (the vector part's mean and covariance, the sequence
        part's letter frequencies), so the target is the optimum for the model actually
        fine-tuned; per part also the mean reward of the reference's and the fine-tuned
        model's designs, and how far the final designs are from the optimum."""
        terms, beta = evaluation.reward_terms, evaluation.beta
        if beta is None or len(terms) != 1 or not isinstance(terms[0].oracle, JointScore):
            return DomainSummary()
        oracle, weight = terms[0].oracle, terms[0].weight
        process, vocab = evaluation.model.process, evaluation.model.spec["options"]["vocab"]
        ref = process.split(evaluation.reference.states.double())
        final = process.split(evaluation.final.states.double())
        w, table = weight * oracle.linear.w, weight * oracle.tokens.table
        x = ref["vector"].numpy()
        if x.shape[1] != len(w) or table.shape != tuple(ref["sequence"].shape[1:2]) + (vocab,):
            raise ValueError(f"toy_joint_score (w of {len(w)}, table {table.shape}) does not fit designs of "
                             f"{x.shape[1]} coordinates and {ref['sequence'].shape[1]} letters over {vocab}")
        base = GaussianMixture(np.ones(1), x.mean(0)[None], np.cov(x.T)[None])
        optimum, reward_vector, kl_vector = base.optimum(w, beta)
        p = ref["sequence"][..., :vocab].mean(0).numpy().clip(1e-12)
        p_star, reward_sequence, kl_sequence = tilted_categoricals(p, table, beta)
        final_letters = final["sequence"][..., :vocab].mean(0).numpy()

        def part_rewards(states: dict[str, torch.Tensor]) -> tuple[float, float]:
            """Mean reward of the vector parts and of the sequence parts of states."""
            return (float((states["vector"].numpy() @ w).mean()),
                    float((states["sequence"][..., :vocab].numpy() * table).sum((1, 2)).mean()))

        (vector_initial, sequence_initial), (vector_final, sequence_final) = part_rewards(ref), part_rewards(final)
        parts = {"vector": {"reward_optimum": reward_vector, "kl_optimum": kl_vector,
                            "reward_initial": vector_initial, "reward_final": vector_final},
                 "sequence": {"reward_optimum": reward_sequence, "kl_optimum": kl_sequence,
                              "reward_initial": sequence_initial, "reward_final": sequence_final}}
        return DomainSummary(entries={
            "analytic": {"reward_optimum": reward_vector + reward_sequence, "kl_optimum": kl_vector + kl_sequence,
                         "parts": parts},
            "vector_mean_error_final": float(np.linalg.norm(final["vector"].numpy().mean(0) - optimum.means[0])),
            "marginal_error_final": float(np.abs(final_letters - p_star).max())})


class JointScore(PerDesignOracle):
    """r(x, s) = w·x + Σ_l table[l, s_l] for JointDesigns: a toy_linear reward on the vector
    (|w| = scale, along `direction`, default all ones) plus a token_score reward on the
    sequence (table (L, V), default a seeded standard-normal draw); higher is better."""

    name = "toy_joint_score"
    version = "1"

    def __init__(self, dim: int = 2, length: int = 4, vocab: int = 3, seed: int = 0, scale: float = 1.0,
                 direction: list[float] | None = None, table: list[list[float]] | None = None):
        self.linear = LinearReward(dim, scale, direction)
        self.tokens = TokenScore(length, vocab, seed, table)

    def params(self) -> dict[str, Any]:
        return {**self.linear.params(), **self.tokens.params()}

    def design_key(self, design: Any) -> str:
        if not isinstance(design, JointDesign):
            return super().design_key(design)
        return f"{self.linear.design_key(np.asarray(design.vector))}|{self.tokens.design_key(design.sequence)}"

    def score_one(self, design: Any) -> float:
        if not isinstance(design, JointDesign):
            raise OracleError(f"expected a JointDesign (vector, sequence), got {type(design).__name__}")
        return self.linear.score_one(design.vector) + self.tokens.score_one(design.sequence)


plugin = ToyJointPlugin()
