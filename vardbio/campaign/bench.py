"""`vardbio bench`: several algorithms on one campaign at the same oracle-call budget."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vardbio.campaign.outputs import write_json  # noqa: E402
from vardbio.campaign.runner import run_campaign  # noqa: E402
from vardbio.cli import compose_config  # noqa: E402

DEFAULT_ALGORITHMS = ("vard", "ddpo", "best_of_n")


def run_bench(overrides: list[str], algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS) -> dict[str, Any]:
    """Run each algorithm with the campaign's oracle budget; write bench.json and bench.png.

    `overrides` are the command line's (campaign=..., campaign.*, seed, out_dir); each
    algorithm is composed with them plus its own preset and this campaign's tuning file, so
    it runs exactly as `vardbio run ... algorithm=<name>` would. Overrides of algorithm
    settings are not carried over (they would not fit every algorithm).
    """
    shared = [o for o in overrides if not o.lstrip("+~").startswith(("algorithm", "out_dir"))]
    cfg = compose_config("config", shared)
    budget = cfg.campaign.oracle_budget
    if budget is None:
        raise ValueError("bench compares algorithms at one oracle budget: set campaign.oracle_budget")
    campaign = cfg.campaign.name
    given = compose_config("config", overrides).out_dir
    out_dir = Path(given or f"runs/bench_{campaign}_s{cfg.seed}")
    summaries = {}
    for name in algorithms:
        summaries[name] = run_campaign(compose_config(
            "config", [*shared, f"algorithm={name}", f"out_dir={out_dir / name}"]))
    result = {"campaign": campaign, "oracle_budget": budget, "seed": cfg.seed,
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
