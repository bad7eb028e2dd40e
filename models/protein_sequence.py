"""Protein sequences: masked (absorbing-state) discrete diffusion over the 20 amino acids.

State: one-hot floats (B, L, 21): channels 0..19 are the amino acids in ALPHABET order,
channel 20 is the mask. A batch has one length L (the `length` option), so no padding mask
is needed at sampling time; training uses crops of up to `max_length` residues with a
padding mask. The denoiser is a small pre-norm transformer (learned positions, sinusoidal
time features added to every token) that returns logits (B, L, 20) of p_θ(x_0 | x_t).

Data: data/proteins/hg003687_crops.fasta, curated by scripts/build_protein_sequences.py
from the predicted proteome in pyhmmer's test data (provenance in data/README.md).

Designs are sequence strings; the campaign writes FASTA plus a CSV of scores. The summary
adds the fraction predicted stable (instability index < 40), diversity, uniqueness, and the
naturalness figure: the reference model's mean per-residue log-likelihood of the designs,
log p_ref(x_i | x with every 8th position masked), averaged over the 8 offsets (a blocked
pseudo-log-likelihood; higher is more natural; a uniform guess scores log(1/20) = -3.00).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vardbio.data import data_path
from vardbio.model.checkpoint import save_model
from vardbio.model.diffusion import DiffusionModel, Layout
from vardbio.model.evaluation import (DomainSummary, Evaluation, EvaluationOracles, Metric, OracleScores,
                                      score_in_process)
from vardbio.model.plugin import ModelPlugin, check_length
from vardbio.model.training import pretrain_loop
from vardbio.nn import TokenTransformer, token_value_net
from vardbio.processes.masked import MaskedDiffusion, MaskedDiffusionConfig
from vardbio.value.heads import ValueHead

WEIGHTS = Path(__file__).parent / "weights"
ALPHABET = "ACDEFGHIKLMNPQRSTVWY"
VOCAB = len(ALPHABET)
INDEX = {c: i for i, c in enumerate(ALPHABET)}
DATA_FILE = "proteins/hg003687_crops.fasta"
STABLE_THRESHOLD = 40.0
PLL_BLOCKS = 8


def read_crops(path: Path | None = None) -> dict[str, list[str]]:
    """The curated crops by split: {"train": [...], "heldout": [...]}."""
    path = path or data_path(DATA_FILE, missing="rebuild the protein training data with "
                                                 "scripts/build_protein_sequences.py")
    if not path.is_file():
        raise FileNotFoundError(f"protein training data not found at {path}")
    splits: dict[str, list[str]] = {"train": [], "heldout": []}
    split = None
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            split = "heldout" if "split=heldout" in line else "train"
        elif line and not line.startswith(";"):
            splits[split].append(line.strip())
    return splits


def encode(sequences: Sequence[str], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot states (B, L, 21) and a (B, L) mask of real positions for sequences over
    ALPHABET (upper case), padded to `length` (default: the longest).

    Raises ValueError naming any letter outside the alphabet, an empty sequence, or one
    longer than `length`."""
    if isinstance(sequences, str):
        raise ValueError("encode takes a list of sequences, not one string")
    width = length if length is not None else max((len(s) for s in sequences), default=0)
    idx = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros(len(sequences), width)
    for b, seq in enumerate(sequences):
        if not isinstance(seq, str) or not seq:
            raise ValueError(f"sequence {b} is empty or not a string: {seq!r}")
        bad = sorted(set(seq) - set(INDEX))
        if bad:
            raise ValueError(f"sequence {b} has letters {''.join(bad)!r} outside the amino-acid "
                             f"alphabet {ALPHABET}")
        if len(seq) > width:
            raise ValueError(f"sequence {b} has {len(seq)} residues, more than {width}")
        idx[b, : len(seq)] = torch.tensor([INDEX[c] for c in seq])
        mask[b, : len(seq)] = 1.0
    return F.one_hot(idx, VOCAB + 1).float() * mask[..., None], mask


def decode_states(x0: torch.Tensor, mask: torch.Tensor | None = None) -> list[str]:
    """Sequences from states (B, L, 21): the argmax amino acid of each real position; a
    position still masked (never the case for a finished sample) decodes as 'X'."""
    idx = x0.argmax(-1).tolist()
    lengths = [x0.shape[1]] * x0.shape[0] if mask is None else mask.sum(1).long().tolist()
    return ["".join(ALPHABET[i] if i < VOCAB else "X" for i in row[:n]) for row, n in zip(idx, lengths)]


ARCH = {"max_length": 64, "width": 128, "layers": 3, "heads": 4, "ff": 256}
DEFAULTS = {**ARCH, "length": 64, "min_length": 16, "sampling_steps": 32, "schedule": "linear",
            "relax_temperature": 0.1}
DATA = {"short_fraction": 0.25, "eval_samples": 256}
# the shared loop (PretrainConfig): warm-up, cosine to 0 over the steps, no weight average
TRAINING = {"steps": 1600, "batch_size": 64, "lr": 1e-3, "warmup": 200, "weight_decay": 0.01}


class ProteinSequencePlugin(ModelPlugin):
    """Protein sequences of `length` residues (min_length <= length <= max_length)."""

    name = "protein_sequence"
    gallery = {".fasta": "sequences"}
    defaults, data_defaults, training_defaults = DEFAULTS, DATA, TRAINING
    test_options = ({"max_length": 16, "length": 12, "min_length": 4, "width": 32, "layers": 1, "heads": 2,
                     "ff": 64, "sampling_steps": 6},)

    def check_options(self, options: dict[str, Any]) -> None:
        check_length(self.name, options)

    def build(self, options: dict[str, Any]) -> DiffusionModel:
        opts = self.options(options)
        process = MaskedDiffusion(MaskedDiffusionConfig(vocab_size=VOCAB, schedule=opts["schedule"],
                                                        sampling_steps=opts["sampling_steps"],
                                                        relax_temperature=opts["relax_temperature"]))
        denoiser = TokenTransformer(VOCAB, **{k: opts[k] for k in ARCH})
        length = opts["length"]
        spec_options = {k: opts[k] for k in (*ARCH, "min_length")}

        def layout(n: int, generator: torch.Generator | None) -> Layout:
            return Layout((n, length, VOCAB + 1))

        return DiffusionModel(denoiser, process, layout, decode_states,
                              spec={"plugin": self.name, "options": spec_options})

    def value_head(self, model: DiffusionModel, options: dict[str, Any]) -> ValueHead:
        """options: `kind` 'conv' (the default), 'transformer' or 'denoiser' (a copy of the
        reference denoiser's trunk; no PAD token here, so every position is pooled), then
        that network's own options (vardbio.nn.token_value_net)."""
        return ValueHead(token_value_net(model.denoiser, options, owner=self.name))

    def default_checkpoint(self, options: dict[str, Any]) -> Path:
        return WEIGHTS / "protein_sequence.pt"

    def pretrain(self, options: dict[str, Any], out_path: Path, seed: int) -> dict[str, Any]:
        """Train on crops of the curated proteome (windows of up to max_length residues, a
        short_fraction of them shorter) with the shared loop; the metrics add held-out
        cross-entropy and naturalness and the statistics of eval_samples samples."""
        opts, data_opts, config = self.split(options)
        splits = read_crops()
        data = [s for s in splits["train"] if len(s) >= opts["min_length"]]
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)

        def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            return encode(sample_windows(data, config.batch_size, opts["max_length"], opts["min_length"],
                                         float(data_opts["short_fraction"]), rng), opts["max_length"])

        model, metrics = pretrain_loop(self.build(opts), batch, config, out_path, g)
        heldout = [s[: opts["length"]] for s in splits["heldout"] if len(s) >= opts["length"]]
        samples = []
        for start in range(0, int(data_opts["eval_samples"]), 128):
            traj = model.rollout(min(128, int(data_opts["eval_samples"]) - start), g)
            samples += model.decode(traj.final)
        natural = [s[: opts["length"]] for s in data if len(s) >= opts["length"]]
        metrics.update({
            "heldout_masked_ce": heldout_masked_ce(model, heldout, seed),
            "heldout_naturalness": float(np.mean(naturalness(model, heldout))),
            "sample_naturalness": float(np.mean(naturalness(model, samples))),
            "n_train_sequences": len(data), "n_heldout_sequences": len(heldout),
            "samples": sequence_statistics(samples, score_in_process, natural),
            "options": opts, "data": data_opts, "seed": seed,
        })
        save_model(model, out_path, pretrain_metrics=metrics)
        return metrics

    def write_designs(self, designs, rewards, out_stem):
        """FASTA (`>design_<i> reward=<r>`) and a CSV: sequence, length, reward. Oracle scores
        of the evaluation designs are in reward_terms_*.csv and the summary, paid through the
        runtime."""
        out_stem.parent.mkdir(parents=True, exist_ok=True)
        fasta, table = out_stem.with_suffix(".fasta"), out_stem.with_suffix(".csv")
        with fasta.open("w") as fh:
            for i, seq in enumerate(designs):
                tag = "" if rewards is None else f" reward={rewards[i]:.6g}"
                fh.write(f">design_{i}{tag}\n")
                for start in range(0, len(seq), 60):
                    fh.write(seq[start:start + 60] + "\n")
        with table.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", "sequence", "length"] + ([] if rewards is None else ["reward"]))
            for i, seq in enumerate(designs):
                writer.writerow([f"design_{i}", seq, len(seq)] + ([] if rewards is None else [f"{rewards[i]:.6g}"]))
        return [fasta, table]

    def summarize(self, evaluation: Evaluation) -> DomainSummary:
        """stability_fraction (instability index < 40), instability_index_mean, diversity,
        uniqueness and naturalness of the final designs, with the reference's as initial
        values, and naturalness_heldout_natural: the same figure for held-out natural crops.
        The instability index is scored through the campaign's evaluation runtime.

        For each reward term of the `hmm_family` oracle (vardbio_oracles.hmm), also scored
        through the runtime: hit_fraction (designs with E-value below the term's
        hit_evalue), hmm_bits_mean and hmm_no_hit_fraction (designs HMMER reports no hit
        for), hit_fraction_heldout_natural, and the threshold as the entry hit_evalue. A
        second such term's names end in `_<term name>`."""
        model, final, reference = evaluation.model, evaluation.final, evaluation.reference
        score = evaluation.oracles.values
        stats = {when: sequence_statistics(d.designs, score) for when, d in (("final", final), ("initial", reference))}
        metrics = [Metric(key, stats["final"][key], stats["initial"][key], **SEQUENCE_METRICS[key])
                   for key in SEQUENCE_METRICS]
        metrics.append(Metric("naturalness", float(np.mean(naturalness(model, final.designs[:256]))),
                              float(np.mean(naturalness(model, reference.designs[:256]))), **NATURALNESS))
        length = final.states.shape[1]
        try:
            heldout = [s[:length] for s in read_crops()["heldout"] if len(s) >= length]
            metrics.append(Metric("naturalness_heldout_natural", float(np.mean(naturalness(model, heldout))),
                                  **{**NATURALNESS, "label": "naturalness of held-out natural crops"}))
        except FileNotFoundError:
            heldout = []
        entries: dict[str, Any] = {}
        family_terms = [term for term in evaluation.reward_terms if term.oracle.name == "hmm_family"]
        for n, term in enumerate(family_terms):
            tag = "" if n == 0 else f"_{term.label}"
            entries["hit_evalue" + tag] = term.oracle.hit_evalue
            metrics += family_metrics(term.oracle, tag, evaluation.oracles, final.designs, reference.designs, heldout)
        return DomainSummary(metrics, entries)

SEQUENCE_METRICS = {
    "stability_fraction": {"label": f"stable fraction (instability index < {STABLE_THRESHOLD:g})",
                           "units": "fraction of designs", "higher_is_better": True},
    "instability_index_mean": {"label": "mean instability index", "units": "instability index (dimensionless)",
                               "higher_is_better": False},
    "diversity": {"label": "diversity (mean pairwise 1 − sequence identity)", "units": "fraction of positions",
                  "higher_is_better": True},
    "uniqueness": {"label": "uniqueness (distinct sequences)", "units": "fraction of designs",
                   "higher_is_better": True},
}
"""How the summary describes the sequence_statistics figures (Metric's label, units, direction)."""
NATURALNESS = {"label": "naturalness (mean per-residue log-likelihood under the reference model)",
               "units": "nats per residue", "higher_is_better": True}


def family_metrics(oracle: Any, tag: str, oracles: EvaluationOracles, final: Sequence[str],
                   initial: Sequence[str], heldout: Sequence[str]) -> list[Metric]:
    """hit_fraction, hmm_bits_mean and hmm_no_hit_fraction of the final and initial designs
    and hit_fraction_heldout_natural under an hmm_family oracle's profile, its E-values and
    bit scores scored through the evaluation runtime; names end in `tag`."""
    from vardbio_oracles.hmm import NO_HIT_EVALUE

    profile = {"hmm": oracle.hmm_param, "name": oracle.profile.name, "hit_evalue": oracle.hit_evalue}
    name = oracle.hmm_param

    def figures(designs: Sequence[str]) -> dict[str, float]:
        if not designs:
            return {}
        evalue = oracles.values("hmm_family", designs, {**profile, "score": "evalue"})
        bits = oracles.values("hmm_family", designs, {**profile, "score": "bits"})
        # no reported hit: an invalid design (NaN) or one at the no-hit floor (E-value 1 at
        # the profile's Forward τ in bits)
        no_hit = np.isnan(bits) | ((evalue == NO_HIT_EVALUE) & (bits == oracle.tau))
        return {"hit_fraction": float(np.mean(np.nan_to_num(evalue, nan=np.inf) < oracle.hit_evalue)),
                "hmm_bits_mean": float(np.nanmean(bits)), "hmm_no_hit_fraction": float(np.mean(no_hit))}

    after, before, natural = figures(final), figures(initial), figures(heldout)
    described = {"hit_fraction": {"label": f"{name} family hits (E-value < {oracle.hit_evalue:g})",
                                  "units": "fraction of designs", "higher_is_better": True},
                 "hmm_bits_mean": {"label": f"mean HMMER bit score against {name}", "units": "bits",
                                   "higher_is_better": True},
                 "hmm_no_hit_fraction": {"label": f"no HMMER hit for {name}", "units": "fraction of designs",
                                         "higher_is_better": False}}
    metrics = [Metric(key + tag, after[key], before[key], **described[key]) for key in described if after]
    if natural:
        metrics.append(Metric("hit_fraction_heldout_natural" + tag, natural["hit_fraction"],
                              **{**described["hit_fraction"], "label": f"{name} family hits of held-out natural crops"}))
    return metrics


def sample_windows(data: Sequence[str], n: int, max_length: int, min_length: int,
                   short_fraction: float, rng: np.random.Generator) -> list[str]:
    """n random windows of up to max_length residues; a `short_fraction` of them are cut to
    a uniform length in [min_length, max_length] so the model learns shorter chains."""
    out = []
    for i in rng.integers(0, len(data), n):
        seq = data[i]
        size = min(len(seq), max_length)
        if rng.random() < short_fraction:
            size = int(rng.integers(min_length, size + 1))
        start = int(rng.integers(0, len(seq) - size + 1))
        out.append(seq[start:start + size])
    return out


@torch.no_grad()
def naturalness(model: DiffusionModel, sequences: Sequence[str], blocks: int = PLL_BLOCKS,
                batch: int = 256) -> np.ndarray:
    """Per-sequence mean per-residue log-likelihood under `model` (nats): every position is
    masked once, together with the positions `blocks` apart from it, and scored by
    log p(x_i | the unmasked rest) at the matching mask level t = 1/blocks. (n,) floats.

    Raises ValueError for letters outside the alphabet (see encode)."""
    if len(sequences) == 0:
        return np.zeros(0)
    x0, mask = encode(list(sequences))
    n, length = mask.shape
    total = torch.zeros(n)
    for offset in range(blocks):
        hide = torch.zeros(length)
        hide[offset::blocks] = 1.0
        hide = hide[None] * mask
        x_t = x0 * (1 - hide[..., None])
        x_t[..., VOCAB] += hide
        t = torch.full((n,), 1.0 / blocks)
        for start in range(0, n, batch):
            sl = slice(start, start + batch)
            logp = torch.log_softmax(model.denoiser(x_t[sl], t[sl], mask[sl]), -1)
            chosen = (logp * x0[sl, :, :VOCAB]).sum(-1)
            total[sl] += (chosen * hide[sl]).sum(1)
    return (total / mask.sum(1)).numpy()


@torch.no_grad()
def heldout_masked_ce(model: DiffusionModel, sequences: Sequence[str], seed: int, repeats: int = 8) -> float:
    """Mean masked-token cross-entropy (nats) of the denoiser on held-out sequences at
    uniformly drawn mask levels (the training objective, on data it never saw)."""
    g = torch.Generator().manual_seed(seed + 1)
    x0, mask = encode(list(sequences))
    return float(np.mean([float(model.process.training_loss(model.denoiser, x0, mask, g)) for _ in range(repeats)]))


def sequence_statistics(sequences: Sequence[str], score: OracleScores,
                        natural: Sequence[str] | None = None) -> dict[str, float]:
    """stability_fraction (instability index < 40), instability_index_mean, diversity (mean
    pairwise fraction of differing positions over up to 256 designs of equal length),
    uniqueness (distinct fraction); with `natural`, the same index figures for it and the
    total-variation distance between the two amino-acid compositions. The instability
    index comes from `score` (vardbio.model.evaluation.OracleScores)."""
    ii = score("instability_index", list(sequences), None)
    finite = ii[np.isfinite(ii)]
    stats = {"stability_fraction": float((finite < STABLE_THRESHOLD).mean()) if len(finite) else float("nan"),
             "instability_index_mean": float(finite.mean()) if len(finite) else float("nan"),
             "diversity": pairwise_diversity(sequences[:256]),
             "uniqueness": len(set(sequences)) / max(len(sequences), 1)}
    if natural is not None:
        nat = score("instability_index", list(natural), None)
        stats["natural_stability_fraction"] = float((nat < STABLE_THRESHOLD).mean())
        stats["natural_instability_index_mean"] = float(np.nanmean(nat))
        stats["composition_tv_distance"] = float(0.5 * np.abs(composition(sequences) - composition(natural)).sum())
    return stats

def composition(sequences: Sequence[str]) -> np.ndarray:
    """Amino-acid frequencies (20,) over all residues."""
    counts = np.zeros(VOCAB)
    for seq in sequences:
        for c in seq:
            counts[INDEX[c]] += 1
    return counts / max(counts.sum(), 1)


def pairwise_diversity(sequences: Sequence[str]) -> float:
    """Mean fraction of differing positions over all pairs (sequences of one length)."""
    if len(sequences) < 2:
        return float("nan")
    if len({len(s) for s in sequences}) > 1:
        raise ValueError("pairwise_diversity compares sequences of one length")
    idx = torch.tensor([[INDEX.get(c, VOCAB) for c in s] for s in sequences])
    same = (idx[:, None, :] == idx[None, :, :]).float().mean(-1)
    n = len(sequences)
    return float(1 - (same.sum() - n) / (n * (n - 1)))


plugin = ProteinSequencePlugin()
