"""`vardbio bench`: several algorithms (and sweeps of their settings) on one campaign at the
same oracle-call budget, placed against the optimum frontier estimated from the reference.

    configs, out_dir = bench_configs(["campaign=toy_linear", "campaign.oracle_budget=512",
                                      "sweep.vard.beta=[0.25,0.5,1]", "sweep.svdd.alpha=[0.25,1]"])
    result = run_bench(configs, out_dir)      # {"summaries": {label: summary}, "points": [...], ...}

A sweep is `sweep.<algorithm>.<key>=[v1,v2,...]` (or `=v1,v2`): that algorithm runs once per
value, as `vardbio run ... algorithm=<algorithm> algorithm.<key>=<v>` would, in
out_dir/<algorithm>_<key><v>; several keys of one algorithm run every combination. Useful
sweeps: `vard.beta`, `ddpo.kl_weight` (DPOK), `svdd.alpha` or `svdd.candidates`,
`guidance.strength`. `bench.algorithms=[...]` picks the algorithms (default: vard, ddpo,
best_of_n, plus every swept one).
"""
from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vardbio.campaign.config import RunConfig, compose_run_config  # noqa: E402
from vardbio.campaign.outputs import write_json  # noqa: E402
from vardbio.campaign.report import frontier_points  # noqa: E402
from vardbio.campaign.trainer import Trainer  # noqa: E402

DEFAULT_ALGORITHMS = ("vard", "ddpo", "best_of_n")


def bench_configs(overrides: Sequence[str], algorithms: Sequence[str] | None = None,
                  ) -> tuple[dict[str, RunConfig], Path]:
    """The RunConfig of each run, by label, and the bench's out_dir, from command-line overrides.

    `overrides` are the command line's (campaign=..., campaign.*, seed, out_dir, sweep.*,
    bench.algorithms, ...); each algorithm is composed with them plus its own preset and this
    campaign's `algorithms.<name>` block, so it runs exactly as `vardbio run ... algorithm=<name>` would,
    in out_dir/<label>. The label is the algorithm's name, or `name[key=value,...]` for a
    sweep point. Overrides of the algorithm (algorithm=..., algorithm.*) would not fit every
    algorithm: they are left out, and a line says which.
    """
    sweeps, chosen, rest = _parse_bench_overrides(overrides)
    dropped = [o for o in rest if _key(o) == "algorithm" or _key(o).startswith("algorithm.")]
    if dropped:
        print(f"bench: ignoring {' '.join(dropped)} (each algorithm runs with its own preset and "
              f"tuning; use `vardbio run` to run one algorithm with other settings, or sweep.<algorithm>.<key>)")
    shared = [o for o in rest if o not in dropped and _key(o) != "out_dir"]
    base = compose_run_config([o for o in rest if o not in dropped])
    out_dir = Path(base.out_dir or f"runs/bench_{base.campaign.name}_s{base.seed}")
    names = list(algorithms or chosen or DEFAULT_ALGORITHMS)
    names += [name for name in sweeps if name not in names]
    configs = {}
    for name in names:
        for label, folder, settings in _sweep_points(name, sweeps.get(name, {})):
            config = compose_run_config([*shared, f"algorithm={name}",
                                         *(f"algorithm.{k}={v}" for k, v in settings.items())])
            configs[label] = dataclasses.replace(config, out_dir=str(out_dir / folder))
    return configs, out_dir


def _parse_bench_overrides(overrides: Sequence[str]) -> tuple[dict[str, dict[str, list[str]]], list[str],
                                                              list[str]]:
    """(sweeps {algorithm: {key: values}}, bench.algorithms, the other overrides)."""
    sweeps: dict[str, dict[str, list[str]]] = {}
    chosen: list[str] = []
    rest = []
    for override in overrides:
        key = _key(override)
        if key == "bench.algorithms":
            chosen = _values(override)
        elif key.startswith("sweep."):
            parts = key.split(".", 2)
            if len(parts) != 3 or not all(parts):
                raise ValueError(f"a sweep is sweep.<algorithm>.<key>=[v1,v2,...], got '{override}'")
            values = _values(override)
            if not values:
                raise ValueError(f"sweep '{override}' has no values")
            sweeps.setdefault(parts[1], {})[parts[2]] = values
        elif key.startswith("bench."):
            raise ValueError(f"unknown bench setting '{key}'; the only one is bench.algorithms")
        else:
            rest.append(override)
    return sweeps, chosen, rest


def _values(override: str) -> list[str]:
    """['0.1', '0.5'] from 'key=[0.1, 0.5]' or 'key=0.1,0.5'."""
    text = override.split("=", 1)[1].strip() if "=" in override else ""
    text = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    return [v.strip() for v in text.split(",") if v.strip()]


def _sweep_points(name: str, sweep: Mapping[str, list[str]]) -> list[tuple[str, str, dict[str, str]]]:
    """(label, folder, {key: value}) of each combination of the algorithm's swept values."""
    if not sweep:
        return [(name, name, {})]
    keys = list(sweep)
    points = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        settings = dict(zip(keys, combo))
        label = f"{name}[{','.join(f'{k}={v}' for k, v in settings.items())}]"
        folder = "_".join([name] + [f"{k.replace('.', '-')}{v}" for k, v in settings.items()])
        points.append((label, folder, settings))
    return points


def _key(override: str) -> str:
    """The key an override sets: 'algorithm.beta' for '++algorithm.beta=0.5'."""
    return override.lstrip("+~").split("=", 1)[0].strip()


def run_bench(configs: Mapping[str, RunConfig], out_dir: str | Path) -> dict[str, Any]:
    """Run each labelled RunConfig (all of one campaign, at one oracle budget); write bench.json
    and bench.png into out_dir and return {campaign, oracle_budget, seed, out_dir, summaries:
    {label: summary}, points: [one row per run], frontier: [[beta, reward, kl, ess], ...],
    reward_pretrained}."""
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
    points = [_point(label, configs[label], s) for label, s in summaries.items()]
    frontier = sorted({tuple(p) for s in summaries.values() for p in (s.get("optimum") or {}).get("frontier") or []
                       if p[1] is not None}, key=lambda p: p[0])
    result = {"campaign": campaign, "oracle_budget": budget, "seed": first.seed, "out_dir": str(out_dir),
              "reward_pretrained": next(iter(summaries.values()))["reward_initial"]["mean"],
              "frontier": [list(p) for p in frontier], "points": points, "summaries": summaries}
    write_json(result, out_dir / "bench.json")
    _plot(result, out_dir / "bench.png")
    return result


def _point(label: str, config: RunConfig, s: dict[str, Any]) -> dict[str, Any]:
    """One run as a row of bench.json: its folder in the bench, what it spent, reached, and how
    far it moved."""
    optimum = s.get("optimum") or {}
    return {"label": label, "algorithm": s["algorithm"], "folder": Path(config.out_dir).name,
            "settings": {k: v for k, v in config.algorithm.items() if k != "name"},
            "oracle_calls": s["oracle_calls"], "reward": s["reward_final"]["mean"],
            "reward_top10": s["reward_final"]["top10"], "kl": s["kl_to_reference"], "kl_note": s.get("kl_note"),
            "beta": optimum.get("beta"), "objective_j": s.get("objective_j"),
            "j_star": optimum.get("j_star"), "achievable_gain_fraction": s.get("achievable_gain_fraction"),
            "inference": s.get("inference")}


def _plot(result: dict[str, Any], path: Path) -> None:
    """Left: mean reward of the final designs against the oracle calls each run spent (the
    pretrained model at 0 calls). Right: the same rewards against the KL to the reference, with
    the optimum frontier estimated from the reference's evaluation designs (trusted points);
    the runs of one algorithm's sweep are joined in order of KL."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax in (left, right):
        ax.axhline(result["reward_pretrained"], color="grey", ls=":", label="pretrained model")
        ax.grid(alpha=0.3)
    summaries = result["summaries"]
    curve = frontier_points({"optimum": {"frontier": result["frontier"]}})
    if len(curve):
        right.plot(curve[:, 0], curve[:, 1], "-", color="black", alpha=0.6, label="estimated optimum frontier",
                   gid="frontier")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    by_algorithm: dict[str, list[dict[str, Any]]] = {}
    for point in result["points"]:
        by_algorithm.setdefault(point["algorithm"], []).append(point)
    for i, (name, points) in enumerate(by_algorithm.items()):
        colour = colours[i % len(colours)]
        points = sorted(points, key=lambda p: p["kl"])
        left.plot([p["oracle_calls"] for p in points], [p["reward"] for p in points], "o", color=colour,
                  label=name, gid=f"calls_{name}")
        right.plot([p["kl"] for p in points], [p["reward"] for p in points], "o-" if len(points) > 1 else "o",
                   color=colour, label=name, gid=f"kl_{name}")
        for p in points:
            if p["label"] != name:
                right.annotate(p["label"][len(name):], (p["kl"], p["reward"]), fontsize=6, alpha=0.8)
    analytic = sorted({(s["analytic"]["kl_optimum"], s["analytic"]["reward_optimum"])
                       for s in summaries.values() if "analytic" in s})
    if analytic:  # the toy domains' exact optimum at each run's β
        right.scatter(*zip(*analytic), marker="*", s=160, color="black", zorder=3,
                      label="analytic optimum" + (" at each β" if len(analytic) > 1 else ""))
    budget = result["oracle_budget"]
    left.set(xlabel="oracle calls spent (evaluation apart)", ylabel="mean reward of final designs",
             title=f"{result['campaign']}: budget {budget} calls")
    right.set(xlabel="KL to the reference (each run's own measure: path KL or bound)",
              ylabel="mean reward of final designs", title="reward against KL")
    left.set_xlim(0, 1.1 * budget)
    right.set_xlim(left=0)
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
