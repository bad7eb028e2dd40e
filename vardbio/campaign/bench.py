"""`vardbio bench`: several algorithms on one campaign at the same oracle-call budget.

    configs, out_dir = bench_configs(["campaign=toy_linear", "campaign.oracle_budget=512"])
    result = run_bench(configs, out_dir)      # {"summaries": {algorithm: summary}, ...}
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vardbio.campaign.config import RunConfig, compose_run_config  # noqa: E402
from vardbio.campaign.outputs import write_json  # noqa: E402
from vardbio.campaign.trainer import Trainer  # noqa: E402

DEFAULT_ALGORITHMS = ("vard", "ddpo", "best_of_n")


def bench_configs(overrides: Sequence[str], algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
                  ) -> tuple[dict[str, RunConfig], Path]:
    """The RunConfig of each algorithm, and the bench's out_dir, from command-line overrides.

    `overrides` are the command line's (campaign=..., campaign.*, seed, out_dir, ...); each
    algorithm is composed with them plus its own preset and this campaign's tuning file, so
    it runs exactly as `vardbio run ... algorithm=<name>` would, in out_dir/<name>.
    Overrides of the algorithm (algorithm=..., algorithm.*) would not fit every algorithm:
    they are left out, and a line says which.
    """
    dropped = [o for o in overrides if _key(o) == "algorithm" or _key(o).startswith("algorithm.")]
    if dropped:
        print(f"bench: ignoring {' '.join(dropped)} (each algorithm runs with its own preset and "
              f"tuning; use `vardbio run` to run one algorithm with other settings)")
    shared = [o for o in overrides if o not in dropped and _key(o) != "out_dir"]
    base = compose_run_config([o for o in overrides if o not in dropped])
    out_dir = Path(base.out_dir or f"runs/bench_{base.campaign.name}_s{base.seed}")
    configs = {}
    for name in algorithms:
        config = compose_run_config([*shared, f"algorithm={name}"])
        configs[name] = dataclasses.replace(config, out_dir=str(out_dir / name))
    return configs, out_dir


def _key(override: str) -> str:
    """The key an override sets: 'algorithm.beta' for '++algorithm.beta=0.5'."""
    return override.lstrip("+~").split("=", 1)[0].strip()


def run_bench(configs: Mapping[str, RunConfig], out_dir: str | Path) -> dict[str, Any]:
    """Run each algorithm's RunConfig (all of one campaign, at one oracle budget); write
    bench.json and bench.png into out_dir and return {campaign, oracle_budget, seed,
    out_dir, summaries: {algorithm: summary}}."""
    if not configs:
        raise ValueError("bench needs at least one algorithm's config")
    first = next(iter(configs.values()))
    campaign, budget = first.campaign.name, first.campaign.oracle_budget
    if budget is None:
        raise ValueError("bench compares algorithms at one oracle budget: set campaign.oracle_budget")
    for name, config in configs.items():
        if (config.campaign.name, config.campaign.oracle_budget) != (campaign, budget):
            raise ValueError(f"bench compares one campaign at one budget; '{name}' runs "
                             f"{config.campaign.name} with budget {config.campaign.oracle_budget}, "
                             f"not {campaign} with {budget}")
    out_dir = Path(out_dir)
    summaries = {name: Trainer.from_config(config).train() for name, config in configs.items()}
    result = {"campaign": campaign, "oracle_budget": budget, "seed": first.seed,
              "out_dir": str(out_dir), "summaries": summaries}
    write_json(result, out_dir / "bench.json")
    _plot(summaries, out_dir / "bench.png", campaign, budget)
    return result


def _plot(summaries: dict[str, dict[str, Any]], path: Path, campaign: str, budget: int) -> None:
    """Left: mean reward of the final designs at the oracle calls each algorithm spent (the
    pretrained model at 0 calls). Right: the same rewards against the KL to the reference,
    the comparison that matters (best-of-N's KL is its analytic bound)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    first = next(iter(summaries.values()))
    for ax in (left, right):
        ax.axhline(first["reward_initial"]["mean"], color="grey", ls=":", label="pretrained model")
        ax.grid(alpha=0.3)
    for name, s in summaries.items():
        left.scatter(s["oracle_calls"], s["reward_final"]["mean"], s=50, label=name)
        right.scatter(s["kl_to_reference"], s["reward_final"]["mean"], s=50, label=name)
    analytic = first.get("analytic")
    if analytic:
        right.scatter(analytic["kl_optimum"], analytic["reward_optimum"], marker="*", s=160,
                      color="black", label="analytic optimum")
    left.set(xlabel="oracle calls spent", ylabel="mean reward of final designs",
             title=f"{campaign}: budget {budget} calls")
    right.set(xlabel="KL to the reference", ylabel="mean reward of final designs",
              title="reward against KL")
    left.set_xlim(0, 1.1 * budget)
    right.set_xlim(left=0)
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
