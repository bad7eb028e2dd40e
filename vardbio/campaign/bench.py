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
    summaries, curves = {}, {}
    for name in algorithms:
        summaries[name] = run_campaign(compose_config(
            "config", [*shared, f"algorithm={name}", f"out_dir={out_dir / name}"]))
        curves[name] = _curve(summaries[name], out_dir / name)
    result = {"campaign": campaign, "oracle_budget": budget, "seed": cfg.seed,
              "out_dir": str(out_dir), "summaries": summaries}
    write_json(result, out_dir / "bench.json")
    _plot(curves, summaries, out_dir / "bench.png", campaign, budget)
    return result


def _curve(summary: dict[str, Any], run_dir: Path) -> list[tuple[int, float]]:
    """(oracle calls, mean reward) points: the pretrained model at 0 calls, the final
    evaluation at the calls spent."""
    return [(0, summary["reward_initial"]["mean"]),
            (summary["oracle_calls"], summary["reward_final"]["mean"])]


def _plot(curves, summaries, path: Path, campaign: str, budget: int) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=f"{name} (KL {summaries[name]['kl_to_reference']:.2f})")
    ax.set_xlabel("oracle calls")
    ax.set_ylabel("mean reward of final designs")
    ax.set_title(f"{campaign}: reward against oracle calls (budget {budget})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
