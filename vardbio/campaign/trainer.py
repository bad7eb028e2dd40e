"""The Trainer: one fine-tuning job end to end, from plain Python objects.

    import vardbio
    trainer = vardbio.Trainer("toy", my_score, vardbio.VARDConfig(beta=0.5),
                              model_options={"dataset": "gaussian2"}, out_dir="runs/x")
    summary = trainer.train()

    reference rollouts → oracles → (value) → updates → evaluation → summary.json, report.md

`vardbio run` is `Trainer.from_config(run_config).train()`: the Hydra config becomes the
same plain objects at the edge (from_config). Training again with the same out_dir
resumes from the last checkpoint, or returns the finished run's summary without calling
an oracle. Under `accelerate launch` several processes share the work (see
vardbio.campaign.distributed); evaluation, files and checkpoints are the main process's.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from vardbio import registry
from vardbio.algorithms.base import Algorithm, AlgorithmContext, reward_stats
from vardbio.campaign.config import AccelerateSection, RunConfig, to_dataclass, to_run_config
from vardbio.campaign.distributed import CollectiveReward, Distributed
from vardbio.campaign.outputs import (
    TensorBoardLog, call_history_auc, write_call_history, write_json, write_metrics_csv, write_reward_terms_csv,
)
from vardbio.campaign.resume import (
    close_runtime, credit_paid_results, discard_resume_state, read_resume_state, remove_stale_temporaries,
    run_started_at,
)
from vardbio.model.checkpoint import save_model, save_verified
from vardbio.model.diffusion import DiffusionModel, Trajectory
from vardbio.model.evaluation import GALLERY_KINDS, EvaluatedDesigns, Evaluation, EvaluationOracles
from vardbio.model.plugin import ModelPlugin
from vardbio.optimum import campaign_optimum
from vardbio.reward.compose import RuntimeConfig, build_runtime, build_term
from vardbio.reward.ledger import COUNTING, OracleLedger
from vardbio.reward.oracle import FunctionOracle, Oracle
from vardbio.reward.reward import Reward, RewardBatch, RewardTerm
from vardbio.reward.runtime import OracleRuntime
from vardbio.value.heads import VALUE_INPUTS, ValueHead, with_value_input

STATE_FILE = "checkpoints/last.pt"
EVAL_SEED_OFFSET = 1_000_003
FIRST_CHUNK = 64  # reference designs scored alone first: a reward failing on all of them stops the run


class ResumeMismatchError(ValueError):
    """out_dir holds a run made with a different configuration."""


class RewardFailsError(ValueError):
    """The reward failed on every design of the first chunk the run scored."""


class Trainer:
    """Fine-tunes a diffusion model toward a reward and evaluates it, writing everything
    `vardbio run` writes into out_dir (summary.json, metrics.csv, designs, report.md, the
    final model, checkpoints to resume from).

    model: a DiffusionModel (fine-tuned in place; its plugin is found from model.spec, or
        given as `plugin`), or the name of a registered model plugin, loaded with
        `model_options` from `checkpoint` (default: the plugin's shipped checkpoint).
    reward: a Reward, or one or a list of: Oracle instances, plain functions
        `fn(design) -> float` (wrapped in FunctionOracle; raise or return NaN to fail a
        design), RewardTerms, registered oracle names, or term mappings
        ({"oracle": name, "params": ..., "weight": ..., "transform": ...}). The oracles run
        in the Trainer's own runtime (`oracle_runtime`, a RuntimeConfig or its fields), which
        counts real calls against `oracle_budget` and caches scores in
        out_dir/oracle_cache.sqlite (unless oracle_cache is False). aggregation, nan_policy
        and nan_penalty combine the terms (see Reward); a Reward brings its own. Scores are
        cached under the oracle's name, version and params: in the same out_dir, a changed
        function needs another name (or FunctionOracle(fn, version=...)).
    algorithm: an algorithm's config dataclass (VARDConfig, DDPOConfig, BestOfNConfig or a
        plugin's), a registered algorithm name (its default settings) or an (Algorithm
        class, config) pair; default VARDConfig().
    iterations: training iterations; eval_samples: designs sampled and scored before and
        after (a separate count of oracle calls); oracle_budget: the most real oracle calls
        the algorithm may spend (None: no limit); budget_counting: 'calls' or 'unique_valid'
        (PMO's rule: each distinct design with a finite reward counts once; see OracleLedger).
    out_dir: where the run's files go (default runs/<name>_<algorithm>_s<seed>); name: the
        run's name in the summary and report (default: the model plugin's name).
    seed: seeds everything the run draws (model and value-head initialisation, rollouts,
        evaluation): the same inputs and seed give the same run. The caller's global torch
        random state is left as it was.
    value_head: options of the plugin's value head; value_input: what it reads, "noisy"
        (x_t) or "denoised" (the reference model's estimate of x_0).
    frozen_final_steps: the last sampler steps kept as the pretrained model's (not fine-tuned,
        guided or selected); the path KL of the others then bounds the designs' KL
        (DiffusionModel.freeze_final_steps).
    checkpoint_every: iterations between checkpoints; torch_threads: intra-op threads to
        set (None: leave torch's setting); progress: progress bars; report: write report.md
        with plots; tensorboard: log metrics rows under out_dir/tensorboard; accelerate:
        devices and mixed precision (AccelerateSection); dist: the run's processes (default:
        from `accelerate` and the environment `accelerate launch` sets).

    A run resumes only with the same model (plugin, options, checkpoint), reward terms,
    iterations, evaluation size, budget, algorithm settings and seed; anything else in
    out_dir raises ResumeMismatchError. A damaged checkpoints/last.pt is refused in one line
    and the run resumes from checkpoints/last.prev.pt, or stops when that one is unusable
    too (vardbio.campaign.resume); a resumed run's summary counts the oracle calls paid by
    the attempts before it. A finished out_dir returns its summary and changes no file.
    force: start over in out_dir (its checkpoints and summary are discarded; its oracle
    cache is kept, so designs already scored are not paid again).

    After construction, model, reference, reward (the training reward, whose ledger counts
    the algorithm's oracle calls), eval_reward, algorithm, plugin and out_dir are attributes;
    after train(), finished_before says whether out_dir already held the finished run.
    """

    def __init__(
        self,
        model: DiffusionModel | str,
        reward: Any,
        algorithm: Any = None,
        *,
        model_options: Mapping[str, Any] | None = None,
        checkpoint: str | Path | None = None,
        plugin: ModelPlugin | None = None,
        iterations: int = 100,
        oracle_budget: int | None = None,
        budget_counting: str = "calls",
        eval_samples: int = 1024,
        out_dir: str | Path | None = None,
        seed: int = 0,
        value_head: Mapping[str, Any] | None = None,
        value_input: str = "noisy",
        frozen_final_steps: int = 0,
        name: str | None = None,
        aggregation: str | None = None,
        nan_policy: str | None = None,
        nan_penalty: float | None = None,
        oracle_runtime: RuntimeConfig | Mapping[str, Any] | None = None,
        oracle_cache: bool = True,
        checkpoint_every: int = 10,
        torch_threads: int | None = None,
        progress: bool = True,
        report: bool = True,
        tensorboard: bool = False,
        accelerate: AccelerateSection | None = None,
        dist: Distributed | None = None,
        force: bool = False,
    ):
        started = time.perf_counter()
        _check_counts({"iterations": iterations, "eval_samples": eval_samples,
                       "checkpoint_every": checkpoint_every, "oracle_budget": oracle_budget},
                      budget_counting=("budget_counting", budget_counting))
        if value_input not in VALUE_INPUTS:
            raise ValueError(f"value_input must be one of {VALUE_INPUTS}, got '{value_input}'")
        self.iterations, self.eval_samples, self.seed = int(iterations), int(eval_samples), int(seed)
        self.checkpoint_every, self.torch_threads = int(checkpoint_every), torch_threads
        self.progress, self.report, self.tensorboard = progress, report, tensorboard
        self.oracle_cache, self.force, self.finished_before = oracle_cache, bool(force), False
        self.oracle_runtime = to_dataclass(RuntimeConfig, oracle_runtime, "oracle_runtime")
        algo_cls, algo_config = _resolve_algorithm(algorithm)
        terms, combine = _reward_terms(reward, aggregation, nan_policy, nan_penalty)
        self._set_threads()
        self.dist = dist or Distributed(accelerate)
        self._set_threads()  # accelerate may have changed it for CPU processes

        with self._fresh_rng():
            torch.manual_seed(self.seed)
            self.plugin, self.model, model_record = _model(model, model_options, checkpoint, plugin)
            _check_gallery(self.plugin)
            self.model.to(self.dist.device)
            self.reference = self.model.frozen_copy()
            self.model.freeze_final_steps(frozen_final_steps)
            self.model.train()
            self.name = name or self.plugin.name
            self.out_dir = Path(out_dir or f"runs/{self.name}_{algo_cls.name}_s{self.seed}")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            main = self.dist.is_main
            ledger = OracleLedger(oracle_budget, counting=budget_counting)
            self.reward = Reward(terms, self._runtime(ledger, cache=main), **combine)
            if self.dist.world_size > 1:
                self.reward = CollectiveReward(self.reward, self.dist)
            self.eval_reward = Reward(terms, self._runtime(OracleLedger(), cache=main), **combine)
            self.generator = torch.Generator().manual_seed(self.dist.rank_seed(self.seed))
            head_options = dict(value_head or {})
            reference, device = self.reference, self.dist.device

            def make_value_head() -> ValueHead:
                head = self.plugin.value_head(reference, head_options).to(device)
                return with_value_input(head, value_input, reference)

            ctx = AlgorithmContext(self.model, self.reference, self.reward, make_value_head,
                                   self.generator, self.dist)
            self.algorithm: Algorithm = algo_cls(algo_config, ctx)
            _check_budget(oracle_budget, budget_counting, len(terms), self.algorithm)
            self._rng = self._rng_state()

        model_record["value_head"] = {**head_options, **({"input": value_input} if value_input != "noisy" else {})}
        if frozen_final_steps:
            model_record["frozen_final_steps"] = int(frozen_final_steps)
        self.record: dict[str, Any] = {
            "campaign": {"name": self.name, "model": model_record,
                         "reward": [_term_record(t) for t in terms], **combine,
                         "iterations": self.iterations, "eval_samples": self.eval_samples,
                         "oracle_budget": oracle_budget,
                         **({"budget_counting": budget_counting} if budget_counting != "calls" else {})},
            "algorithm": {"name": algo_cls.name, **dataclasses.asdict(algo_config)},
            "seed": self.seed,
        }
        # the value each recorded setting takes when left out (see _is_this_run)
        self._record_defaults: dict[str, Any] = {
            "algorithm": {"name": algo_cls.name, **dataclasses.asdict(algo_cls.config_class())}}
        self._settings = {"out_dir": str(self.out_dir), "checkpoint_every": self.checkpoint_every,
                          "torch_threads": torch_threads, "progress": progress, "report": report,
                          "tensorboard": tensorboard, "oracle_cache": oracle_cache,
                          "oracle_runtime": dataclasses.asdict(self.oracle_runtime)}
        self._config_text: str | None = None
        self._build_seconds = time.perf_counter() - started

    @classmethod
    def from_config(cls, config: RunConfig | Mapping[str, Any] | Any,
                    dist: Distributed | None = None, force: bool = False) -> "Trainer":
        """The Trainer of `vardbio run`: a RunConfig (or a composed config or mapping of one,
        converted here) turned into plain objects. config.yaml holds the RunConfig, and a
        run resumes only under the same campaign section, algorithm settings and seed.
        Every setting is checked here, before any oracle call, and a bad one is named by
        its config key (campaign.oracle_budget, algorithm.beta, ...). force: see Trainer."""
        config = to_run_config(config)
        camp = config.campaign
        _check_counts({"campaign.iterations": camp.iterations, "campaign.eval_samples": camp.eval_samples,
                       "campaign.oracle_budget": camp.oracle_budget, "checkpoint_every": config.checkpoint_every,
                       "torch_threads": config.torch_threads},
                      budget_counting=("campaign.budget_counting", camp.budget_counting))
        head_options = dict(camp.model.value_head)
        value_input = head_options.pop("input", "noisy")
        if value_input not in VALUE_INPUTS:
            raise ValueError(f"campaign {camp.name}: model.value_head.input must be one of {VALUE_INPUTS}, "
                             f"got '{value_input}'")
        algo_settings = dict(config.algorithm)
        algo_name = algo_settings.pop("name", None)
        if not algo_name:
            raise ValueError("the config has no algorithm name (algorithm.name)")
        algo_cls = registry.load("algorithm", algo_name)
        algo_config = to_dataclass(algo_cls.config_class, algo_settings, "algorithm")
        trainer = cls(
            camp.model.name, [build_term(t, i) for i, t in enumerate(camp.reward)], (algo_cls, algo_config),
            model_options=dict(camp.model.options), checkpoint=camp.model.checkpoint,
            iterations=camp.iterations, oracle_budget=camp.oracle_budget, budget_counting=camp.budget_counting,
            eval_samples=camp.eval_samples,
            out_dir=config.out_dir or f"runs/{camp.name}_{algo_name}_s{config.seed}", seed=config.seed,
            value_head=head_options, value_input=value_input, frozen_final_steps=camp.model.frozen_final_steps,
            name=camp.name,
            aggregation=camp.aggregation, nan_policy=camp.nan_policy, nan_penalty=camp.nan_penalty,
            oracle_runtime=camp.oracle_runtime, oracle_cache=camp.oracle_cache,
            checkpoint_every=config.checkpoint_every, torch_threads=config.torch_threads or None,
            progress=config.progress, report=config.report, tensorboard=config.tensorboard,
            accelerate=config.accelerate, dist=dist, force=force)
        # What a resumed command-line run must match, exactly as runs made before the Trainer
        # recorded it: the whole campaign section, the algorithm settings as given, the seed.
        trainer.record = {"campaign": OmegaConf.to_container(OmegaConf.structured(camp)),
                          "algorithm": dict(config.algorithm), "seed": config.seed}
        trainer._record_defaults["campaign"] = OmegaConf.to_container(OmegaConf.structured(type(camp)))
        trainer._config_text = OmegaConf.to_yaml(OmegaConf.structured(config))
        return trainer

    def train(self, on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
        """Run (or resume) the job and return its summary (also written to summary.json, with
        report.md beside it unless report is off). A finished run returns its summary again
        without sampling or calling an oracle.

        on_iteration(index, metrics) is called after each iteration's checkpoint decision.
        """
        with self._fresh_rng(self._rng):
            try:
                return self._train(on_iteration)
            finally:
                for reward in (self.reward, self.eval_reward):
                    close_runtime(reward)

    # -- the loop ---------------------------------------------------------------------------

    def _train(self, on_iteration: Callable[[int, dict[str, float]], None] | None) -> dict[str, Any]:
        started = time.perf_counter() - self._build_seconds
        self._build_seconds = 0.0
        dist, out = self.dist, self.out_dir
        self._set_threads()
        if dist.is_main:
            remove_stale_temporaries(out)  # left by a run killed while writing
            if self.force:  # start over: the cache stays, so paid results are reused
                discard_resume_state(out / STATE_FILE)
                (out / "summary.json").unlink(missing_ok=True)
        dist.barrier()
        state = self._load_state()
        dist.barrier()  # every process has read the checkpoint before the first is written
        if dist.is_main:
            _write_if_changed(out / "config.yaml", self.config_text())
        if state is not None:
            self._restore(state)
            if state.get("finished"):  # nothing left to do: report the finished run again
                self.finished_before = True
                if not dist.broadcast_object(self._results_current(state) if dist.is_main else None):
                    self._write_results(state.get("summary"), None, state["next_iteration"])
                    if not state.get("results_written", True):
                        self._save_state({**state, "results_written": True})
                return dist.broadcast_object(state.get("summary"))
        if dist.is_main:  # results paid after the checkpoint (or the start) count as paid on replay
            since = state["saved_at"] if state is not None else run_started_at(out / "checkpoints", self.identity())
            credit_paid_results([self.reward, self.eval_reward], since)
        if state is None:
            state = self._initial_state()
            self._save_state(state)
        dist.prepare(self.model)

        tensorboard = (TensorBoardLog(out / "tensorboard", state["next_iteration"])
                       if self.tensorboard and dist.is_main else None)
        bar = tqdm(range(state["next_iteration"], self.iterations), initial=state["next_iteration"],
                   total=self.iterations, desc=f"{self.name}/{self.algorithm.name}",
                   disable=not self.progress or self.algorithm.finished() or not dist.is_main)
        for i in bar:
            if self.algorithm.finished():
                break
            with dist.training(self.model):
                metrics = self.algorithm.iteration(i)
            metrics = dist.reduce_metrics(metrics)
            row = {"iteration": i, "oracle_calls": self.reward.ledger.total_calls,
                   "wall_seconds": round(state["elapsed"] + time.perf_counter() - started, 3), **metrics}
            state["metrics"].append(row)
            state["next_iteration"] = i + 1
            bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if isinstance(v, float)})
            if tensorboard is not None:
                tensorboard.log_row(row)
            if (i + 1) % self.checkpoint_every == 0 or i + 1 == self.iterations:
                self._save_state({**state, "elapsed": state["elapsed"] + time.perf_counter() - started})
                if dist.is_main:
                    write_metrics_csv(state["metrics"], out / "metrics.csv")
            if on_iteration is not None:
                on_iteration(i, metrics)
        bar.close()
        if state["metrics"] and dist.is_main:
            write_metrics_csv(state["metrics"], out / "metrics.csv")
        elapsed = state["elapsed"] + time.perf_counter() - started
        summary = self._finish(state, elapsed)
        final = {**state, "elapsed": elapsed, "summary": summary, "finished": True, "results_written": False}
        self._save_state(final)
        self._write_results(summary, tensorboard, state["next_iteration"])
        self._save_state({**final, "results_written": True})  # a rerun then changes no file
        return dist.broadcast_object(summary)

    def _write_results(self, summary: dict[str, Any] | None, tensorboard: TensorBoardLog | None,
                       step: int) -> None:
        """summary.json, the TensorBoard evaluation scalars and report.md (main process)."""
        if self.dist.is_main:
            path = self.out_dir / "summary.json"
            if not (path.is_file() and path.read_bytes() == _json_text(summary).encode()):
                write_json(summary, path)  # a partial file (a kill) is found and rewritten by the next run
            if tensorboard is not None:
                tensorboard.log_summary(summary, step)
                tensorboard.close()
            if self.report:
                from vardbio.campaign.report import write_report
                write_report(self.out_dir)
        self.dist.barrier()

    def _initial_state(self) -> dict[str, Any]:
        """Score the reference model's samples (on the main process), then run the algorithm's
        setup (phase 1, on every process)."""
        state: dict[str, Any] = {"next_iteration": 0, "metrics": [], "elapsed": 0.0}
        if self.dist.is_main:
            eval_gen = torch.Generator().manual_seed(self.seed + EVAL_SEED_OFFSET)
            traj = self.reference.rollout(self.eval_samples, eval_gen)
            designs = self.reference.decode(traj.final, traj.mask)
            scored = self._score_first_chunk_then_rest(designs)
            files = self.plugin.write_designs(designs, scored.values, self.out_dir / "designs_initial")
            write_reward_terms_csv(scored.components, scored.values, scored.reasons,
                                   self.out_dir / "reward_terms_initial.csv")
            state.update({"reference_final": traj.final.cpu(), "reward_initial": reward_stats(scored.values),
                          "reference_mask": None if traj.mask is None else traj.mask.cpu(),
                          "reference_scores": {k: v.tolist() for k, v in scored.components.items()},
                          "reference_valid": (~scored.failed).tolist(),
                          "gallery_initial": self._gallery_files(files, "initial"),
                          "valid_fraction_initial": float(scored.valid.mean()),
                          "components_initial": _component_means(scored.components),
                          "initial_failures": _failure_reasons(scored.reasons),
                          # the optimum is estimated from these (vardbio.optimum); NaN kept
                          "reference_rewards": np.asarray(scored.values, dtype=np.float64).tolist()})
        state["setup"] = self.algorithm.setup()
        return state

    def _finish(self, state: dict[str, Any], wall: float) -> dict[str, Any] | None:
        """Sample (every process its share) and score (the main process) the final designs,
        write them and the final model, build the summary (None on other processes). wall:
        the seconds before this phase; the summary's wall_seconds adds this phase's, which for
        the methods that change no weights (best-of-N, SVDD, guidance) is where they work."""
        finish_started = time.perf_counter()
        dist = self.dist
        eval_gen = torch.Generator().manual_seed(dist.rank_seed(self.seed + 2 * EVAL_SEED_OFFSET))
        final = self.algorithm.final_samples(self.eval_samples, eval_gen)
        if dist.world_size > 1:
            parts = dist.gather_objects((final.states.cpu(), None if final.mask is None else final.mask.cpu(),
                                         final.kl.cpu()))
            joined = Trajectory.concat([Trajectory(p[0][None], p[1]) for p in parts])
            final = dataclasses.replace(final, states=joined.final, mask=joined.mask,
                                        kl=torch.cat([p[2] for p in parts]))
        if not dist.is_main:
            return None
        out = self.out_dir
        designs = self.model.decode(final.states, final.mask)
        scored = self.eval_reward(designs)
        files = self.plugin.write_designs(designs, scored.values, out / "designs_final")
        write_reward_terms_csv(scored.components, scored.values, scored.reasons, out / "reward_terms_final.csv")
        save_model(self.model, out / "model_final.pt", campaign=self.name)
        ledger = self.reward.ledger
        write_call_history(ledger, out / "call_history.csv")
        value_fit = state["setup"].get("value_fit", {})
        domain = self.plugin.summarize(Evaluation(
            self.reference, self._reference_designs(state),
            EvaluatedDesigns.from_batch(final.states, final.mask, designs, scored), self.reward.terms,
            self.algorithm.kl_weight, EvaluationOracles(self.eval_reward.evaluator)))
        summary: dict[str, Any] = {
            "campaign": self.name,
            "algorithm": self.algorithm.name,
            "seed": self.seed,
            "oracle_calls": ledger.total_calls,
            "oracle_budget": ledger.budget,
            "oracle_failures": sum(ledger.failures.values()),
            "budget_counting": ledger.counting,
            "budget_spent": ledger.spent,
            "unique_valid_designs": ledger.unique_valid,
            **call_history_auc(ledger),
            "eval_oracle_calls": self.eval_reward.ledger.total_calls,
            "reward_initial": state["reward_initial"],
            "reward_final": reward_stats(scored.values),
            "valid_fraction_initial": state.get("valid_fraction_initial"),
            "valid_fraction": float(scored.valid.mean()),
            "components_initial": state.get("components_initial"),
            "components_final": _component_means(scored.components),
            "processes": dist.world_size,
            "sampling_steps": self.model.num_steps,
            "frozen_final_steps": self.model.frozen_final_steps,
            "kl_to_reference": float(final.kl.mean()),
            "kl_note": final.kl_note,
            "value_r2": value_fit.get("r2"),
            "value_r2_per_bucket": value_fit.get("r2_per_bucket"),
            "value_r2_bucket_edges": value_fit.get("bucket_edges"),
            "value_nan_dropped": value_fit.get("n_dropped_nan"),
            "iterations": state["next_iteration"],
            "wall_seconds": round(wall + time.perf_counter() - finish_started, 2),
            "final_failures": _failure_reasons(scored.reasons),
            "reward_terms": [_term_description(t) for t in self.eval_reward.terms],
            # gallery_initial: absent from runs checkpointed before it was kept
            "design_files": state.get("gallery_initial", []) + self._gallery_files(files, "final"),
            **domain.summary_entries(),
        }
        if final.inference:  # methods that change no weights: what one design cost to sample
            summary["inference"] = final.inference
        summary.update(final.summary_entries)
        if "reference_rewards" in state:  # absent from runs checkpointed before it was kept
            summary.update(campaign_optimum(state["reference_rewards"], self.algorithm.kl_weight,
                                            summary["reward_final"]["mean"], summary["kl_to_reference"],
                                            final.kl_note))
        return summary

    def _reference_designs(self, state: dict[str, Any]) -> EvaluatedDesigns:
        """The reference model's evaluation designs with the scores kept at the start (a run
        checkpointed before they were kept scores them again through the evaluation
        runtime: cached, and counted in eval_oracle_calls)."""
        states, mask = state["reference_final"], state.get("reference_mask")
        if "reference_scores" not in state:
            return EvaluatedDesigns.score(self.reference, states, mask, self.eval_reward)
        designs = self.reference.decode(states, mask)
        return EvaluatedDesigns(states, mask, designs, np.asarray(state["reference_rewards"], dtype=np.float64),
                                {k: np.asarray(v, dtype=np.float64) for k, v in state["reference_scores"].items()},
                                np.asarray(state["reference_valid"], dtype=bool))

    def _gallery_files(self, files: Sequence[Path], when: str) -> list[dict[str, str]]:
        """[{"file", "kind", "when"}] of the design files the plugin's gallery describes
        (paths relative to out_dir)."""
        return [{"file": os.path.relpath(path, self.out_dir), "kind": self.plugin.gallery[Path(path).suffix],
                 "when": when} for path in files if Path(path).suffix in self.plugin.gallery]

    # -- configuration record, checkpoints and resume ---------------------------------------

    def identity(self) -> str:
        """What must match for a run to resume: the campaign, the algorithm and the seed."""
        return _record_text(self.record)

    def config_text(self) -> str:
        """config.yaml: the resolved RunConfig for runs from a config, otherwise the run's
        record plus its settings."""
        if self._config_text is not None:
            return self._config_text
        return OmegaConf.to_yaml(OmegaConf.create(_plain({**self.record, **self._settings})))

    def _save_state(self, state: dict[str, Any]) -> None:
        """Write the resumable state (on the main process; every process must call it, since
        each one's random streams are saved)."""
        streams = self.dist.gather_objects((self.generator.get_state(), torch.get_rng_state()))
        if not self.dist.is_main:
            return
        path = self.out_dir / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {**state, "model": self.model.state_dict(), "algorithm": self.algorithm.state_dict(),
                "ledger": self.reward.ledger.state_dict(), "eval_ledger": self.eval_reward.ledger.state_dict(),
                "generator": streams[0][0], "torch_rng": [s[1] for s in streams],
                "identity": self.identity()}
        if len(streams) > 1:
            blob["process_generators"] = [s[0] for s in streams]
        # saved_at: cache rows created later were paid after this checkpoint (see resume.py)
        blob["saved_at"] = time.time()
        save_verified(blob, path, keep_previous=True)  # atomic and sealed; the last one kept as .prev

    def _load_state(self) -> dict[str, Any] | None:
        """The resume state of out_dir (None: a new run); a damaged one falls back to the
        previous checkpoint or stops with one line (vardbio.campaign.resume)."""
        state = read_resume_state(self.out_dir / STATE_FILE)
        if state is not None and not self._is_this_run(state["identity"]):
            raise ResumeMismatchError(
                f"{self.out_dir} holds a run with a different configuration (see "
                f"{self.out_dir / 'config.yaml'}); choose another out_dir, or pass --force "
                f"(force=True) to start over in it")
        return state

    def _is_this_run(self, saved_identity: str) -> bool:
        """True when a checkpoint's identity is this run's: the same text, or the same once
        the settings it does not record are left out here where they hold their default (a
        setting vardbio gained after the run was made, at the value the run used)."""
        if saved_identity == self.identity():
            return True
        saved = OmegaConf.to_container(OmegaConf.create(saved_identity))
        kept = _without_added_defaults(_plain(self.record), saved, _plain(self._record_defaults))
        return _record_text(kept) == saved_identity

    def _results_current(self, state: dict[str, Any]) -> bool:
        """True when a finished run's summary.json (and report.md) are the ones it wrote, so
        a rerun leaves every file alone."""
        path = self.out_dir / "summary.json"
        if not state.get("results_written", True) or not path.is_file():
            return False
        if self.report and not (self.out_dir / "report.md").is_file():
            return False
        return path.read_bytes() == _json_text(state.get("summary")).encode()

    def _score_first_chunk_then_rest(self, designs: list[Any]) -> RewardBatch:
        """The evaluation reward of the reference designs, the first FIRST_CHUNK scored
        alone: a reward that fails on every one of them stops the run with the reasons
        (RewardFailsError) before the rest is paid for."""
        n = min(len(designs), FIRST_CHUNK)
        first = self.eval_reward(designs[:n])
        if first.failed.all():
            raise RewardFailsError(f"the reward failed on all of the first {n} reference designs, so the run "
                                   f"stops before paying for more: {_reason_counts(first.reasons)}")
        return first if n == len(designs) else _join_batches(first, self.eval_reward(designs[n:]))

    def _restore(self, state: dict[str, Any]) -> None:
        """Weights, algorithm state, ledgers and this process's random streams from a
        checkpoint written by the same number of processes."""
        dist = self.dist
        saved = state.get("process_generators", [state["generator"]])
        if len(saved) != dist.world_size:
            raise ResumeMismatchError(
                f"{self.out_dir} was checkpointed by {len(saved)} process(es); resume it with the same "
                f"number (this run has {dist.world_size})")
        self.model.load_state_dict(state["model"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.reward.ledger.load_state_dict(state["ledger"])
        if "eval_ledger" in state:
            self.eval_reward.ledger.load_state_dict(state["eval_ledger"])
        self.generator.set_state(saved[dist.rank])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"][dist.rank])

    # -- helpers ----------------------------------------------------------------------------

    def _runtime(self, ledger: OracleLedger, cache: bool) -> OracleRuntime:
        """An oracle runtime recording calls in `ledger`; cache=False: no cache (for
        processes that never call oracles themselves)."""
        runtime = dataclasses.asdict(self.oracle_runtime)
        if not self.progress:
            runtime["progress"] = None
        if runtime["cache"] is None and self.oracle_cache:
            runtime["cache"] = str(self.out_dir / "oracle_cache.sqlite")
        if not self.oracle_cache or not cache:
            runtime["cache"] = None
        return build_runtime(runtime, ledger)

    def _set_threads(self) -> None:
        if self.torch_threads:
            torch.set_num_threads(int(self.torch_threads))

    def _cuda_devices(self) -> list[int]:
        device = getattr(getattr(self, "dist", None), "device", torch.device("cpu"))
        if device.type != "cuda":
            return []
        return [device.index if device.index is not None else torch.cuda.current_device()]

    def _rng_state(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self._cuda_devices()]

    @contextlib.contextmanager
    def _fresh_rng(self, state: tuple[torch.Tensor, list[torch.Tensor]] | None = None) -> Iterator[None]:
        """Inside, torch's global random state is `state` (when given); outside, the caller's
        state is restored, so the run neither depends on nor changes it."""
        devices = self._cuda_devices()
        with torch.random.fork_rng(devices=devices):
            if state is not None:
                torch.set_rng_state(state[0])
                for d, s in zip(devices, state[1]):
                    torch.cuda.set_rng_state(s, d)
            yield


_MINIMUM = {"iterations": 0, "eval_samples": 1, "checkpoint_every": 1, "oracle_budget": 1, "torch_threads": 0}


def _check_budget(budget: int | None, counting: str, n_terms: int, algorithm: Algorithm) -> None:
    """Refuse, before any oracle call, a budget too small for the algorithm to do anything."""
    if budget is None:
        return
    designs = algorithm.min_designs()
    needed = designs * (n_terms if counting == "calls" else 1)
    if budget < needed:
        unit = "oracle calls" if counting == "calls" else "unique valid designs"
        raise ValueError(f"oracle_budget (campaign.oracle_budget) {budget} is too small for {algorithm.name}: "
                         f"it needs at least {needed} {unit} ({designs} scored designs)")


def _check_gallery(plugin: ModelPlugin) -> None:
    """A ValueError naming a gallery kind of the plugin's that the report does not know."""
    unknown = {suffix: kind for suffix, kind in plugin.gallery.items() if kind not in GALLERY_KINDS}
    if unknown:
        raise ValueError(f"model plugin '{plugin.name}' has gallery kinds the report does not know: {unknown}; "
                         f"expected one of {GALLERY_KINDS}")


def _check_counts(counts: Mapping[str, Any], budget_counting: tuple[str, Any]) -> None:
    """Each count, named as the caller knows it ('iterations' or 'campaign.iterations'), is
    an integer of at least its minimum (oracle_budget and torch_threads may be None: no
    limit, torch's setting); budget_counting is (its name, its value)."""
    for key, value in counts.items():
        base = key.rsplit(".", 1)[-1]
        if value is None and base in ("oracle_budget", "torch_threads"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < _MINIMUM[base]:
            hint = " (or null for no limit)" if base == "oracle_budget" else ""
            raise ValueError(f"{key} must be an integer >= {_MINIMUM[base]}{hint}, got {value!r}")
    key, value = budget_counting
    if value not in COUNTING:
        raise ValueError(f"{key} must be one of {COUNTING}, got {value!r}")


def _write_if_changed(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, unless the file already holds exactly it."""
    data = text.encode()
    if path.is_file() and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _json_text(data: Any) -> str:
    """What write_json writes for `data` (NaN as null)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.json"
        write_json(data, path)
        return path.read_text()


def _reason_counts(reasons: Sequence[str | None], shown: int = 3) -> str:
    """'12 × "reason"; 3 × "other"' for the most frequent reasons, on one line."""
    counts = Counter(" ".join(str(r).split())[:200] for r in reasons if r)
    text = "; ".join(f'{n} × "{why}"' for why, n in counts.most_common(shown))
    more = len(counts) - shown
    return text + (f"; and {more} other reason(s)" if more > 0 else "") if counts else "no reason recorded"


def _join_batches(a: RewardBatch, b: RewardBatch) -> RewardBatch:
    """One RewardBatch of the designs of `a` followed by those of `b`."""
    provenance = {label: {k: v + b.provenance[label][k] if k in ("n_designs", "real_calls", "cache_hits")
                          and k in b.provenance.get(label, {}) else v for k, v in p.items()}
                  for label, p in a.provenance.items()}
    return RewardBatch(np.concatenate([a.values, b.values]),
                       {k: np.concatenate([v, b.components[k]]) for k, v in a.components.items()},
                       list(a.reasons) + list(b.reasons),
                       {k: np.concatenate([v, b.transformed[k]]) for k, v in a.transformed.items()},
                       np.concatenate([a.failed, b.failed]), provenance)


def _resolve_algorithm(algorithm: Any) -> tuple[type[Algorithm], Any]:
    """(Algorithm class, config) from a config dataclass, a registered name, or None (VARD)."""
    if algorithm is None:
        algorithm = "vard"
    if isinstance(algorithm, tuple):  # (class, config), from from_config
        return algorithm
    if isinstance(algorithm, str):
        cls = registry.load("algorithm", algorithm)
        return cls, cls.config_class()
    if not dataclasses.is_dataclass(algorithm) or isinstance(algorithm, type):
        raise ValueError(f"algorithm must be an algorithm's config (e.g. VARDConfig(beta=0.5)) or a "
                         f"registered name ({', '.join(registry.available('algorithm'))}), "
                         f"got {algorithm!r}")
    matches = []
    for name in registry.available("algorithm"):
        cls = registry.load("algorithm", name)
        if cls.config_class is type(algorithm):
            matches.append(cls)
    if len(matches) != 1:
        found = "no registered algorithm" if not matches else f"several algorithms ({[c.name for c in matches]})"
        raise ValueError(f"{found} takes a {type(algorithm).__name__}; registered algorithms: "
                         f"{', '.join(registry.available('algorithm'))}")
    return matches[0], algorithm


def _model(model: DiffusionModel | str, options: Mapping[str, Any] | None, checkpoint: str | Path | None,
           plugin: ModelPlugin | None) -> tuple[ModelPlugin, DiffusionModel, dict[str, Any]]:
    """(plugin, model, the model's record) from a model or a registered plugin name."""
    if isinstance(model, str):
        plugin = plugin or registry.load("model", model)
        loaded = plugin.load(dict(options or {}), checkpoint)
        record = {"name": model, "options": dict(options or {}),
                  "checkpoint": None if checkpoint is None else str(checkpoint)}
        return plugin, loaded, record
    if not isinstance(model, DiffusionModel):
        raise ValueError(f"model must be a DiffusionModel or a registered model name "
                         f"({', '.join(registry.available('model'))}), got {type(model).__name__}")
    if options or checkpoint is not None:
        raise ValueError("model_options and checkpoint are for a model given by name; this model is built")
    name = model.spec.get("plugin")
    if plugin is None:
        if not name:
            raise ValueError("the model's spec names no plugin; pass plugin=<its ModelPlugin>")
        plugin = registry.load("model", name)
    return plugin, model, {"name": name or plugin.name, "options": dict(model.spec.get("options", {}))}


def _reward_terms(reward: Any, aggregation: str | None, nan_policy: str | None,
                  nan_penalty: float | None) -> tuple[list[RewardTerm], dict[str, Any]]:
    """The reward's terms and how they combine (aggregation, nan_policy, nan_penalty)."""
    if isinstance(reward, Reward):
        if aggregation is not None or nan_policy is not None or nan_penalty is not None:
            raise ValueError("a Reward brings its own aggregation and NaN policy; "
                             "pass them only with a list of oracles or functions")
        return list(reward.terms), {"aggregation": reward.aggregation, "nan_policy": reward.nan_policy,
                                    "nan_penalty": reward.nan_penalty}
    items = list(reward) if isinstance(reward, (list, tuple)) else [reward]
    if not items:
        raise ValueError("the reward needs at least one oracle or function")
    terms = [_term(item, i) for i, item in enumerate(items)]
    combine = {"aggregation": aggregation or "sum", "nan_policy": nan_policy or "drop", "nan_penalty": nan_penalty}
    Reward(terms, **combine)  # checks names and settings now, with Reward's messages
    return terms, combine


def _term(item: Any, index: int) -> RewardTerm:
    if isinstance(item, RewardTerm):
        return item
    if isinstance(item, Oracle):
        return RewardTerm(item)
    if isinstance(item, str):
        return build_term({"oracle": item}, index)
    if isinstance(item, Mapping) or (dataclasses.is_dataclass(item) and not isinstance(item, type)):
        return build_term(item, index)
    if callable(item) and not isinstance(item, type):
        _check_design_function(item, index)
        return RewardTerm(FunctionOracle(item))
    raise ValueError(f"reward item {index} must be an Oracle, a function of one design, a RewardTerm, "
                     f"an oracle name or a term mapping, got {item!r}")


def _check_design_function(fn: Callable[..., Any], index: int) -> None:
    """A reward function must be callable with one design."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: they are tried as they are
        return
    try:
        signature.bind(object())
    except TypeError as err:
        raise ValueError(f"reward item {index}: the function {getattr(fn, '__name__', fn)}{signature} cannot be "
                         f"called with one design ({err}); a reward function takes one design and returns "
                         f"a float") from None


def _term_record(term: RewardTerm) -> dict[str, Any]:
    return {"oracle": term.oracle.identity(), "weight": term.weight,
            "transform": None if term.transform is None else term.transform.config(), "name": term.name}


def _term_description(term: RewardTerm) -> dict[str, Any]:
    """A reward term for summary.json and the report: name, oracle, units, the oracle's
    preferred direction and the direction the term pushes it (RewardTerm.direction)."""
    return {"name": term.label, "oracle": term.oracle.name, "units": term.oracle.units,
            "higher_is_better": term.oracle.higher_is_better, "weight": term.weight,
            "direction": term.direction}


def _record_text(record: Mapping[str, Any]) -> str:
    """A run's record as the YAML text its checkpoints store as their identity."""
    return OmegaConf.to_yaml(OmegaConf.create(_plain(record)))


def _without_added_defaults(record: Any, saved: Any, defaults: Any) -> Any:
    """`record` less the keys the mapping `saved` lacks (at any depth) whose value here
    equals their value in `defaults`, a mapping of the same shape."""
    if not isinstance(record, Mapping) or not isinstance(saved, Mapping):
        return record
    defaults = defaults if isinstance(defaults, Mapping) else {}
    return {key: _without_added_defaults(value, saved[key], defaults.get(key)) if key in saved else value
            for key, value in record.items()
            if key in saved or key not in defaults or defaults[key] != value}


def _plain(value: Any) -> Any:
    """`value` with only what YAML can hold (other objects as their repr)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _component_means(components: dict[str, np.ndarray]) -> dict[str, float]:
    """Each reward term's mean raw oracle score over the designs it could score (NaN if none)."""
    return {name: reward_stats(values)["mean"] for name, values in components.items()}


def _failure_reasons(reasons: Sequence[str | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for why in reasons:
        if why:
            counts[why] = counts.get(why, 0) + 1
    return counts
