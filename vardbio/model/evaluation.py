"""The output seam: what the runner hands a model plugin after training, and what it gets back.

    def summarize(self, evaluation: Evaluation) -> DomainSummary:
        helix = evaluation.oracles.score("ss_fraction", evaluation.final.designs, {"kind": "helix"})
        return DomainSummary([Metric("helix_fraction", float(np.nanmean(helix.values)),
                                     label="helix fraction (DSSP)", units="fraction of residues",
                                     higher_is_better=True)])

The runner has already decoded and scored the reference model's and the fine-tuned model's
evaluation designs; a plugin summarises those. Any further oracle it wants goes through
`evaluation.oracles`, the campaign's evaluation runtime: cached like every other score and
counted in the summary's eval_oracle_calls. A plugin never calls an oracle itself.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from vardbio.model.diffusion import DiffusionModel
from vardbio.reward.compose import build_oracle
from vardbio.reward.evaluator import OracleEvaluator
from vardbio.reward.oracle import Oracle, OracleResult
from vardbio.reward.reward import Reward, RewardBatch, RewardTerm

GALLERY_KINDS = ("images", "molecules", "vectors", "sequences")
"""How the report can show a design file (ModelPlugin.gallery)."""


@dataclass(frozen=True)
class EvaluatedDesigns:
    """One evaluation's designs as the runner decoded and scored them.

    states: (B, ...) final states; mask: (B, N) or None; designs: the B decoded designs;
    rewards: (B,) float64 rewards (NaN, or the nan_penalty, where a term failed);
    scores: reward term name -> (B,) raw oracle scores, NaN where the oracle failed;
    valid: (B,) bool, True where every term scored the design.
    """

    states: torch.Tensor
    mask: torch.Tensor | None
    designs: list[Any]
    rewards: np.ndarray
    scores: dict[str, np.ndarray]
    valid: np.ndarray

    @classmethod
    def from_batch(cls, states: torch.Tensor, mask: torch.Tensor | None, designs: list[Any],
                   scored: RewardBatch) -> "EvaluatedDesigns":
        """The designs with the scores of a RewardBatch (states and mask moved to the CPU)."""
        return cls(states.cpu(), None if mask is None else mask.cpu(), designs, scored.values,
                   scored.components, ~scored.failed)

    @classmethod
    def score(cls, model: DiffusionModel, states: torch.Tensor, mask: torch.Tensor | None,
              reward: Reward) -> "EvaluatedDesigns":
        """Decode final states (B, ...) with mask (B, N) or None and score them with `reward`."""
        designs = model.decode(states, mask)
        return cls.from_batch(states, mask, designs, reward(designs))


class EvaluationOracles:
    """Registered oracles run through the campaign's evaluation runtime: scores are cached
    and every real call is counted in the evaluation ledger (summary: eval_oracle_calls)."""

    def __init__(self, evaluator: OracleEvaluator):
        self.evaluator = evaluator
        self._built: dict[str, Oracle] = {}

    def score(self, name: str, designs: Sequence[Any], params: Mapping[str, Any] | None = None) -> OracleResult:
        """The registered oracle `name`, built with `params`, on `designs`: (n,) values,
        NaN plus a reason where a design failed."""
        key = f"{name}:{json.dumps(dict(params or {}), sort_keys=True, default=str)}"
        if key not in self._built:
            self._built[key] = build_oracle(name, params)
        return self.evaluator.evaluate(self._built[key], list(designs))

    def values(self, name: str, designs: Sequence[Any], params: Mapping[str, Any] | None = None) -> np.ndarray:
        """(n,) values of score(name, designs, params): an OracleScores function."""
        return self.score(name, designs, params).values


OracleScores = Callable[[str, Sequence[Any], Optional[Mapping[str, Any]]], np.ndarray]
"""fn(oracle name, designs, params) -> (n,) scores: EvaluationOracles.values in a campaign,
score_in_process outside one (pretraining metrics, `vardbio sample`)."""


def score_in_process(name: str, designs: Sequence[Any], params: Mapping[str, Any] | None = None) -> np.ndarray:
    """(n,) scores of the registered oracle `name` called here, outside any runtime: only
    for figures no campaign pays for (pretraining metrics, `vardbio sample`)."""
    return build_oracle(name, params).score(list(designs)).values


@dataclass(frozen=True)
class Evaluation:
    """What a plugin's `summarize` gets: the reference model, its evaluation designs and the
    fine-tuned model's, the campaign's reward terms, the algorithm's KL weight β (None
    without one) and the evaluation runtime for further oracles."""

    model: DiffusionModel
    reference: EvaluatedDesigns
    final: EvaluatedDesigns
    reward_terms: Sequence[RewardTerm]
    beta: float | None
    oracles: EvaluationOracles


@dataclass(frozen=True)
class Metric:
    """A named figure of the evaluation designs, before (`initial`, the reference model's
    designs; None when not measured) and after fine-tuning (`final`).

    label: what it measures, for plots and summary.json, e.g. "diversity (mean pairwise
    Tanimoto distance)"; units: e.g. "Å" ("" for a plain fraction or count);
    higher_is_better: the preferred direction, None when neither is.
    """

    name: str
    final: float | None
    initial: float | None = None
    label: str = ""
    units: str = ""
    higher_is_better: bool | None = None

    def description(self) -> dict[str, Any]:
        """{"label", "units", "higher_is_better"} for summary.json's domain_metrics."""
        return {"label": self.label or self.name, "units": self.units, "higher_is_better": self.higher_is_better}


@dataclass(frozen=True)
class DomainSummary:
    """What a plugin's `summarize` returns: metrics, and further JSON entries that are no
    before/after figure (an analytic optimum, mixture weights)."""

    metrics: list[Metric] = field(default_factory=list)
    entries: dict[str, Any] = field(default_factory=dict)

    def summary_entries(self) -> dict[str, Any]:
        """summary.json's entries: each metric's final value under its name and its initial
        value under `<name>_initial`, their descriptions under `domain_metrics` (absent
        when there is no metric), then `entries`. ValueError for a name given twice."""
        out: dict[str, Any] = {}
        for metric in self.metrics:
            keys = [metric.name] + ([f"{metric.name}_initial"] if metric.initial is not None else [])
            if any(k in out for k in keys):
                raise ValueError(f"domain metric '{metric.name}' is given twice")
            out[metric.name] = metric.final
            if metric.initial is not None:
                out[f"{metric.name}_initial"] = metric.initial
        if self.metrics:
            out["domain_metrics"] = {m.name: m.description() for m in self.metrics}
        clash = sorted(set(out) & set(self.entries))
        if clash:
            raise ValueError(f"domain summary entries {clash} are also metric names")
        return {**out, **self.entries}
