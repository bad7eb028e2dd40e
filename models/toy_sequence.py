"""Toy discrete domain: short sequences whose positions are independent categoricals.

Data: L positions over an alphabet of V letters, position l drawn from p_l (fixed, seeded).
With an additive reward r(x) = Σ_l W[l, x_l], the KL-regularised optimum
p*(x) ∝ p(x)·exp(r(x)/β) factorises too: p*_l(v) ∝ p_l(v)·exp(W[l, v]/β), so its expected
reward and its KL to p are exact sums over positions. This checks VARD on masked discrete
diffusion (straight-through relaxed steps, categorical KL) against a known answer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

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
from vardbio.processes.masked import MaskedDiffusion, MaskedDiffusionConfig
from vardbio.reward.oracle import OracleError, PerDesignOracle
from vardbio.value.heads import ValueHead
from vardbio_models.toy import write_table

WEIGHTS = Path(__file__).parent / "weights"
ALPHABET = "ACDEFGHIKLMNPQRSTVWY"


def position_probs(length: int, vocab: int, seed: int = 0) -> np.ndarray:
    """The data distribution: (L, V) rows of a seeded Dirichlet(1) draw."""
    return np.random.default_rng(seed).dirichlet(np.ones(vocab), size=length)


def tilted_categoricals(p: np.ndarray, table: np.ndarray, beta: float) -> tuple[np.ndarray, float, float]:
    """The KL-regularised optimum of independent categoricals p (L, V) under the additive
    reward table (L, V): (p* (L, V) ∝ p·exp(table/β) per row, its expected reward,
    KL(p*‖p))."""
    tilted = p * np.exp((table - table.max(1, keepdims=True)) / beta)
    p_star = tilted / tilted.sum(1, keepdims=True)
    return p_star, float((p_star * table).sum()), float((p_star * np.log(p_star / p)).sum())


class FlatDenoiser(nn.Module):
    """An MLP on the flattened one-hot sequence and time: (B, L, V+1), (B,) -> logits (B, L, V)."""

    def __init__(self, length: int, vocab: int, hidden: int = 256, depth: int = 3, time_dim: int = 32):
        super().__init__()
        self.length, self.vocab = length, vocab
        self.time = TimeEmbedding(time_dim)
        self.body = mlp([length * (vocab + 1) + time_dim] + [hidden] * depth + [length * vocab])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.body(torch.cat([x_t.flatten(1), self.time(t)], dim=-1))
        return out.view(-1, self.length, self.vocab)


class FlatValueNet(nn.Module):
    """A value MLP on the flattened (possibly relaxed) one-hot sequence: (B, L, V+1) -> (B,)."""

    def __init__(self, length: int, vocab: int, hidden: int = 64, depth: int = 2, time_dim: int = 32):
        super().__init__()
        self.time = TimeEmbedding(time_dim)
        self.body = mlp([length * (vocab + 1) + time_dim] + [hidden] * depth + [1])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(torch.cat([x_t.flatten(1), self.time(t)], dim=-1)).squeeze(-1)


DEFAULTS = {"length": 8, "vocab": 4, "data_seed": 0, "hidden": 256, "depth": 3,
            "sampling_steps": 8, "schedule": "linear", "relax_temperature": 0.1}
DATA = {"train_samples": 20000}
# the shared loop (PretrainConfig): a constant learning rate, no weight average, no clipping
TRAINING = {"steps": 3000, "batch_size": 256, "lr": 1e-3, "final_lr_fraction": 1.0, "max_grad_norm": 0.0}


class ToySequencePlugin(ModelPlugin):
    """Sequences of `length` letters from the first `vocab` letters of ALPHABET."""

    name = "toy_sequence"
    defaults, data_defaults, training_defaults = DEFAULTS, DATA, TRAINING
    test_options = ({"length": 5, "vocab": 3, "hidden": 32, "depth": 1, "sampling_steps": 4},)

    def check_options(self, options: dict[str, Any]) -> None:
        if not 2 <= options["vocab"] <= len(ALPHABET):
            raise ValueError(f"vocab must be in [2, {len(ALPHABET)}], got {options['vocab']}")

    def build(self, options: dict[str, Any]) -> DiffusionModel:
        opts = self.options(options)
        length, vocab = opts["length"], opts["vocab"]
        process = MaskedDiffusion(MaskedDiffusionConfig(vocab_size=vocab, schedule=opts["schedule"],
                                                        sampling_steps=opts["sampling_steps"],
                                                        relax_temperature=opts["relax_temperature"]))
        denoiser = FlatDenoiser(length, vocab, opts["hidden"], opts["depth"])
        architecture = {k: opts[k] for k in ("length", "vocab", "data_seed", "hidden", "depth")}

        def decode(x0: torch.Tensor, mask: torch.Tensor | None) -> list[str]:
            return ["".join(ALPHABET[i] for i in row) for row in x0[..., :vocab].argmax(-1).tolist()]

        return DiffusionModel(denoiser, process, lambda n, g: Layout((n, length, vocab + 1)), decode,
                              spec={"plugin": self.name, "options": architecture})

    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> ValueHead:
        arch = model.spec["options"]
        return ValueHead(FlatValueNet(arch["length"], arch["vocab"], **options))

    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        opts = self.options(options)
        return WEIGHTS / f"toy_sequence_L{opts['length']}_V{opts['vocab']}.pt"

    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        """Train on `train_samples` sequences with the shared loop; the metrics add the largest
        error of 4096 samples' per-position letter frequencies."""
        opts, data_opts, config = self.split(options)
        probs = position_probs(opts["length"], opts["vocab"], opts["data_seed"])
        rng = np.random.default_rng(seed)
        tokens = np.stack([rng.choice(opts["vocab"], size=data_opts["train_samples"], p=p) for p in probs], 1)
        data = F.one_hot(torch.as_tensor(tokens), opts["vocab"] + 1).float()
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        batches = uniform_batches(data, config.batch_size, g)
        model, metrics = pretrain_loop(self.build(opts), batches, config, out_path, g)
        samples = model.rollout(4096, g).final[..., : opts["vocab"]].mean(0).numpy()
        metrics.update({"marginal_error_max": float(np.abs(samples - probs).max()),
                        "options": opts, "data": data_opts, "seed": seed})
        save_model(model, out_path, pretrain_metrics=metrics)
        return metrics

    def write_designs(self, designs, rewards, out_stem):
        """FASTA-style records would suit proteins; toy sequences go to a CSV (sequence, reward)."""
        return write_table(out_stem, ["sequence"], [[seq] for seq in designs], rewards)

    def summarize(self, evaluation: Evaluation) -> DomainSummary:
        """The exact optimum for one TokenScore reward, from the reference's own marginals,
        and the largest error of the final designs' marginals against it."""
        terms, beta = evaluation.reward_terms, evaluation.beta
        if beta is None or len(terms) != 1 or not isinstance(terms[0].oracle, TokenScore):
            return DomainSummary()
        arch = evaluation.model.spec["options"]
        table = terms[0].weight * terms[0].oracle.table
        if table.shape != (arch["length"], arch["vocab"]):
            raise ValueError(f"token_score table {table.shape} does not fit sequences {arch['length']}x{arch['vocab']}")
        p = evaluation.reference.states[..., : arch["vocab"]].double().mean(0).numpy().clip(1e-12)
        p_star, reward_opt, kl_opt = tilted_categoricals(p, table, beta)
        final = evaluation.final.states[..., : arch["vocab"]].double().mean(0).numpy()
        return DomainSummary(entries={"analytic": {"reward_optimum": reward_opt, "kl_optimum": kl_opt},
                                      "marginal_error_final": float(np.abs(final - p_star).max())})

class TokenScore(PerDesignOracle):
    """r(x) = Σ_l table[l, x_l] for sequences over ALPHABET; higher is better.

    table: (L, V) scores, or None to draw a seeded standard-normal table of that shape."""

    name = "token_score"
    version = "1"

    def __init__(self, length: int = 8, vocab: int = 4, seed: int = 0,
                 table: Sequence[Sequence[float]] | None = None):
        self.table = (np.random.default_rng(seed + 1000).standard_normal((length, vocab))
                      if table is None else np.asarray(table, dtype=np.float64))
        if self.table.shape != (length, vocab):
            raise ValueError(f"table must have shape ({length}, {vocab}), got {self.table.shape}")
        self.letters = {c: i for i, c in enumerate(ALPHABET[:vocab])}

    def params(self) -> dict[str, Any]:
        return {"table": self.table.round(12).tolist()}

    def design_key(self, design: Any) -> str:
        return f"seq:{design}"

    def score_one(self, design: str) -> float:
        if not isinstance(design, str) or len(design) != len(self.table):
            raise OracleError(f"expected a sequence of length {len(self.table)}, got {design!r}")
        bad = sorted(set(design) - set(self.letters))
        if bad:
            raise OracleError(f"letters {bad} are outside the alphabet {''.join(self.letters)}")
        return float(sum(self.table[i, self.letters[c]] for i, c in enumerate(design)))


plugin = ToySequencePlugin()
