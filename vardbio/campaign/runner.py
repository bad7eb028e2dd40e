"""The campaign loop: build from config, evaluate, fit, update, checkpoint, resume, summarise.

    reference rollouts → oracles → (value) → updates → evaluation → summary.json

Everything is built from the config here, at the edge; the pieces below it take plain
objects. Re-running with the same out_dir resumes from the last checkpoint. Under
`accelerate launch` several processes share the work (see vardbio.campaign.distributed);
evaluation, files and checkpoints are the main process's.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from vardbio import registry
from vardbio.algorithms.base import Algorithm, AlgorithmContext, reward_stats
from vardbio.campaign.config import CampaignSection, RunConfig, to_dataclass
from vardbio.campaign.distributed import CollectiveReward, Distributed, concat_trajectories
from vardbio.campaign.outputs import TensorBoardLog, write_json, write_metrics_csv, write_reward_terms_csv
from vardbio.model.checkpoint import save_model
from vardbio.model.diffusion import DiffusionModel, Trajectory
from vardbio.model.plugin import ModelPlugin
from vardbio.reward.compose import build_reward, build_runtime
from vardbio.reward.ledger import OracleLedger
from vardbio.reward.reward import Reward
from vardbio.value.heads import VALUE_INPUTS, ValueHead, with_value_input

STATE_FILE = "checkpoints/last.pt"
EVAL_SEED_OFFSET = 1_000_003


class ResumeMismatchError(ValueError):
    """out_dir holds a run made with a different configuration."""


def build_campaign_reward(camp: CampaignSection, ledger: OracleLedger, out_dir: Path,
                          cache: bool = True, progress: bool = True) -> Reward:
    """The campaign's Reward, run by an OracleRuntime that records calls in `ledger`
    (cache=False: no cache, for processes that never call oracles themselves;
    progress=False: no progress bars for oracle batches)."""
    runtime = dataclasses.asdict(camp.oracle_runtime)
    if not progress:
        runtime["progress"] = None
    if runtime["cache"] is None and camp.oracle_cache:
        runtime["cache"] = str(out_dir / "oracle_cache.sqlite")
    if not camp.oracle_cache or not cache:
        runtime["cache"] = None
    return build_reward(camp.reward, build_runtime(runtime, ledger), aggregation=camp.aggregation,
                        nan_policy=camp.nan_policy, nan_penalty=camp.nan_penalty)


@dataclass
class Campaign:
    """The objects a run is made of, built from a RunConfig."""

    config: RunConfig
    plugin: ModelPlugin
    model: DiffusionModel
    reference: DiffusionModel
    reward: Reward
    eval_reward: Reward
    algorithm: Algorithm
    generator: torch.Generator
    out_dir: Path
    dist: Distributed

    @classmethod
    def build(cls, config: RunConfig, dist: Distributed | None = None) -> "Campaign":
        """dist: the processes of this run (default: from config.accelerate and the
        environment `accelerate launch` sets)."""
        camp = config.campaign
        dist = dist or Distributed(config.accelerate)
        torch.manual_seed(config.seed)
        plugin = registry.load("model", camp.model.name)
        model = plugin.load(dict(camp.model.options), camp.model.checkpoint).to(dist.device)
        reference = model.frozen_copy()
        model.train()
        out_dir = Path(config.out_dir or f"runs/{camp.name}_{config.algorithm.get('name')}_s{config.seed}")
        out_dir.mkdir(parents=True, exist_ok=True)
        reward = build_campaign_reward(camp, OracleLedger(camp.oracle_budget), out_dir, dist.is_main,
                                       config.progress)
        if dist.world_size > 1:
            reward = CollectiveReward(reward, dist)
        eval_reward = build_campaign_reward(camp, OracleLedger(), out_dir, dist.is_main, config.progress)
        generator = torch.Generator().manual_seed(dist.rank_seed(config.seed))
        head_options = dict(camp.model.value_head)
        value_input = head_options.pop("input", "noisy")
        if value_input not in VALUE_INPUTS:
            raise ValueError(f"campaign {camp.name}: model.value_head.input must be one of {VALUE_INPUTS}, "
                             f"got '{value_input}'")

        def make_value_head() -> ValueHead:
            head = plugin.value_head(reference, head_options).to(dist.device)
            return with_value_input(head, value_input, reference)

        algo_settings = dict(config.algorithm)
        algo_name = algo_settings.pop("name", None)
        if not algo_name:
            raise ValueError("the config has no algorithm name (algorithm.name)")
        algo_cls = registry.load("algorithm", algo_name)
        algo_config = to_dataclass(algo_cls.config_class, algo_settings, f"algorithm '{algo_name}'")
        ctx = AlgorithmContext(model, reference, reward, make_value_head, generator, dist)
        algorithm = algo_cls(algo_config, ctx)
        return cls(config, plugin, model, reference, reward, eval_reward, algorithm, generator,
                   out_dir, dist)


def run_campaign(config: RunConfig | Any,
                 on_iteration: Callable[[int, dict[str, float]], None] | None = None,
                 dist: Distributed | None = None) -> dict[str, Any]:
    """Run (or resume) a campaign and return its summary (also written to summary.json,
    with report.md beside it unless config.report is false).

    on_iteration(index, metrics) is called after each iteration's checkpoint decision.
    dist: the processes of the run (default: built from config.accelerate).
    """
    if not isinstance(config, RunConfig):
        config = to_dataclass(RunConfig, config, "the run config")
    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    started = time.perf_counter()
    camp = Campaign.build(config, dist)
    dist = camp.dist
    if config.torch_threads > 0:  # accelerate may have changed it for CPU processes
        torch.set_num_threads(config.torch_threads)
    out = camp.out_dir
    if dist.is_main:
        (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    state = _load_state(out, _identity(config))
    dist.barrier()  # every process has read the checkpoint before the first is written
    if state is None:
        state = _initial_state(camp)
        _save_state(camp, state, out)
    else:
        camp.model.load_state_dict(state["model"])
        camp.algorithm.load_state_dict(state["algorithm"])
        camp.reward.ledger.load_state_dict(state["ledger"])
        camp.generator.set_state(_saved_generator(state, dist, out))
    dist.prepare(camp.model)

    iterations = config.campaign.iterations
    tensorboard = (TensorBoardLog(out / "tensorboard", state["next_iteration"])
                   if config.tensorboard and dist.is_main else None)
    bar = tqdm(range(state["next_iteration"], iterations), initial=state["next_iteration"],
               total=iterations, desc=f"{config.campaign.name}/{camp.algorithm.name}",
               disable=not config.progress or camp.algorithm.finished() or not dist.is_main)
    for i in bar:
        if camp.algorithm.finished():
            break
        with dist.training(camp.model):
            metrics = camp.algorithm.iteration(i)
        metrics = dist.reduce_metrics(metrics)
        row = {"iteration": i, "oracle_calls": camp.reward.ledger.total_calls,
               "wall_seconds": round(state["elapsed"] + time.perf_counter() - started, 3), **metrics}
        state["metrics"].append(row)
        state["next_iteration"] = i + 1
        bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if isinstance(v, float)})
        if tensorboard is not None:
            tensorboard.log_row(row)
        if (i + 1) % config.checkpoint_every == 0 or i + 1 == iterations:
            _save_state(camp, {**state, "elapsed": state["elapsed"] + time.perf_counter() - started}, out)
            if dist.is_main:
                write_metrics_csv(state["metrics"], out / "metrics.csv")
        if on_iteration is not None:
            on_iteration(i, metrics)
    bar.close()
    if state["metrics"] and dist.is_main:
        write_metrics_csv(state["metrics"], out / "metrics.csv")
    summary = _finish(camp, state, state["elapsed"] + time.perf_counter() - started)
    if dist.is_main:
        write_json(summary, out / "summary.json")
        if tensorboard is not None:
            tensorboard.log_summary(summary, state["next_iteration"])
            tensorboard.close()
        if config.report:
            from vardbio.campaign.report import write_report
            write_report(out)
    dist.barrier()
    return dist.broadcast_object(summary)


def _initial_state(camp: Campaign) -> dict[str, Any]:
    """Score the reference model's samples (on the main process), then run the algorithm's
    setup (phase 1, on every process)."""
    state: dict[str, Any] = {"next_iteration": 0, "metrics": [], "elapsed": 0.0}
    if camp.dist.is_main:
        n = camp.config.campaign.eval_samples
        eval_gen = torch.Generator().manual_seed(camp.config.seed + EVAL_SEED_OFFSET)
        traj = camp.reference.rollout(n, eval_gen)
        designs = camp.reference.decode(traj.final, traj.mask)
        scored = camp.eval_reward(designs)
        camp.plugin.write_designs(designs, scored.values, camp.out_dir / "designs_initial")
        write_reward_terms_csv(scored.components, scored.values, scored.reasons,
                               camp.out_dir / "reward_terms_initial.csv")
        state.update({"reference_final": traj.final.cpu(), "reward_initial": reward_stats(scored.values),
                      "components_initial": _component_means(scored.components),
                      "initial_failures": _failure_reasons(scored.reasons)})
    state["setup"] = camp.algorithm.setup()
    return state


def _component_means(components: dict[str, np.ndarray]) -> dict[str, float]:
    """Each reward term's mean raw oracle score over the designs it could score (NaN if none)."""
    return {name: reward_stats(values)["mean"] for name, values in components.items()}


def _finish(camp: Campaign, state: dict[str, Any], wall: float) -> dict[str, Any] | None:
    """Sample (every process its share) and score (the main process) the final designs,
    write them and the final model, build the summary (None on other processes)."""
    cfg = camp.config
    dist = camp.dist
    eval_gen = torch.Generator().manual_seed(dist.rank_seed(cfg.seed + 2 * EVAL_SEED_OFFSET))
    final = camp.algorithm.final_samples(cfg.campaign.eval_samples, eval_gen)
    if dist.world_size > 1:
        parts = dist.gather_objects((final.states.cpu(), None if final.mask is None else final.mask.cpu(),
                                     final.kl.cpu()))
        joined = concat_trajectories([Trajectory(p[0][None], p[1]) for p in parts])
        final = dataclasses.replace(final, states=joined.final, mask=joined.mask,
                                    kl=torch.cat([p[2] for p in parts]))
    if not dist.is_main:
        return None
    designs = camp.model.decode(final.states, final.mask)
    scored = camp.eval_reward(designs)
    camp.plugin.write_designs(designs, scored.values, camp.out_dir / "designs_final")
    write_reward_terms_csv(scored.components, scored.values, scored.reasons, camp.out_dir / "reward_terms_final.csv")
    save_model(camp.model, camp.out_dir / "model_final.pt", campaign=cfg.campaign.name)
    value_fit = state["setup"].get("value_fit", {})
    ledger = camp.reward.ledger
    summary: dict[str, Any] = {
        "campaign": cfg.campaign.name,
        "algorithm": camp.algorithm.name,
        "seed": cfg.seed,
        "oracle_calls": ledger.total_calls,
        "oracle_budget": ledger.budget,
        "oracle_failures": sum(ledger.failures.values()),
        "eval_oracle_calls": camp.eval_reward.ledger.total_calls,
        "reward_initial": state["reward_initial"],
        "reward_final": reward_stats(scored.values),
        "components_initial": state.get("components_initial"),
        "components_final": _component_means(scored.components),
        "processes": dist.world_size,
        "sampling_steps": camp.model.num_steps,
        "kl_to_reference": float(final.kl.mean()),
        "kl_note": final.kl_note,
        "value_r2": value_fit.get("r2"),
        "value_r2_per_bucket": value_fit.get("r2_per_bucket"),
        "value_r2_bucket_edges": value_fit.get("bucket_edges"),
        "value_nan_dropped": value_fit.get("n_dropped_nan"),
        "iterations": state["next_iteration"],
        "wall_seconds": round(wall, 2),
        "final_failures": _failure_reasons(scored.reasons),
    }
    summary.update(camp.plugin.summary_extras(camp.reference, state["reference_final"],
                                              final.states.cpu(), camp.reward.terms,
                                              camp.algorithm.kl_weight))
    return summary


def _failure_reasons(reasons: list[str | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for why in reasons:
        if why:
            counts[why] = counts.get(why, 0) + 1
    return counts


def _save_state(camp: Campaign, state: dict[str, Any], out: Path) -> None:
    """Write the resumable state (on the main process; every process must call it, since
    each one's random stream is saved)."""
    generators = camp.dist.gather_objects(camp.generator.get_state())
    if not camp.dist.is_main:
        return
    path = out / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {**state, "model": camp.model.state_dict(), "algorithm": camp.algorithm.state_dict(),
            "ledger": camp.reward.ledger.state_dict(), "generator": generators[0],
            "identity": _identity(camp.config)}
    if len(generators) > 1:
        blob["process_generators"] = generators
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def _saved_generator(state: dict[str, Any], dist: Distributed, out: Path) -> torch.Tensor:
    """This process's random stream from a checkpoint written by the same number of processes."""
    saved = state.get("process_generators", [state["generator"]])
    if len(saved) != dist.world_size:
        raise ResumeMismatchError(
            f"{out} was checkpointed by {len(saved)} process(es); resume it with the same number "
            f"(this run has {dist.world_size})")
    return saved[dist.rank]


def _identity(config: RunConfig) -> str:
    """What must match for a run to resume: the campaign, the algorithm and the seed."""
    return OmegaConf.to_yaml(OmegaConf.create({
        "campaign": OmegaConf.structured(config.campaign), "algorithm": config.algorithm,
        "seed": config.seed}))


def _load_state(out: Path, identity: str) -> dict[str, Any] | None:
    path = out / STATE_FILE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["identity"] != identity:
        raise ResumeMismatchError(
            f"{out} holds a run with a different configuration (see {out / 'config.yaml'}); "
            "choose another out_dir or delete it to start over"
        )
    return state
