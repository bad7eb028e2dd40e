"""A suite bench: every task x algorithm x seed of a PMO-style campaign, tabulated as PMO does.

    result = run_suite(PMO_DEV, ["vard", "best_of_n"], seeds=[0, 1, 2], budget=10_000,
                       out_dir="runs/pmo_dev")
    result["sums"]          # {"vard": ..., "best_of_n": ..., "REINVENT": 4.227, ...}

or, from the shell (overrides as for `vardbio run`; `<algorithm>:<override>` applies to one
algorithm only):

    python -m vardbio.campaign.suite --suite pmo_dev --algorithms vard,best_of_n,ddpo \\
        --seeds 0,1,2 --budget 10000 --out runs/pmo_dev vard:algorithm.beta=0.05

Each run is a `molecule_pmo` run (campaign.task=<task>, campaign.oracle_budget=<budget>,
counted as the campaign counts: 10,000 unique valid designs for PMO) in
out_dir/<task>/<algorithm>_s<seed>/. A finished run is reused (the Trainer returns its
summary without oracle calls, and refuses an out_dir made with other settings); a partial one
resumes from its last checkpoint. Best-of-N draws ceil(budget / eval_samples) candidates per
final design unless an `algorithm.n` override says otherwise, so that it too spends the budget.
After every run out_dir gets

- suite.csv: one row per run: auc_top1/10/100, oracle calls, unique valid designs, valid
  fraction of the final designs, wall seconds;
- suite.md: PMO's layout: rows = tasks, columns = our algorithms (AUC top-10, mean ± std
  over seeds), then the published REINVENT, Graph GA and GenMol figures of
  data/benchmarks/pmo_published.csv, a Sum row (sum over the tasks run of the mean AUC
  top-10, for ours and for each published method), the citation, and a details table.
"""
from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from vardbio.data import data_path

# PMO's task names (Gao et al. 2022; TDC's oracle names), as the `pmo` oracle names them.
PMO_ALL: tuple[str, ...] = (
    "albuterol_similarity", "amlodipine_mpo", "celecoxib_rediscovery", "deco_hop",
    "fexofenadine_mpo", "isomers_c7h8n2o2", "isomers_c9h10n2o2pf2cl", "median1", "median2",
    "mestranol_similarity", "osimertinib_mpo", "perindopril_mpo", "qed", "ranolazine_mpo",
    "scaffold_hop", "sitagliptin_mpo", "thiothixene_rediscovery", "troglitazone_rediscovery",
    "valsartan_smarts", "zaleplon_mpo",
)
# The development suite: seven tasks from easy (qed) to hard (valsartan_smarts).
PMO_DEV: tuple[str, ...] = (
    "qed", "celecoxib_rediscovery", "osimertinib_mpo", "isomers_c9h10n2o2pf2cl", "median1",
    "scaffold_hop", "valsartan_smarts",
)
SUITES: dict[str, tuple[str, ...]] = {"pmo_dev": PMO_DEV, "pmo_all": PMO_ALL}

PUBLISHED_METHODS: tuple[str, ...] = ("REINVENT", "Graph GA", "GenMol")
# Tasks whose published numbers may come from another objective than ours: PyTDC 0.3.6,
# which PMO's code pinned, scored them differently (see oracles/pmo.py).
TDC_VERSION_TASKS = frozenset({"isomers_c7h8n2o2", "isomers_c9h10n2o2pf2cl", "zaleplon_mpo",
                               "sitagliptin_mpo"})
CITATION = (
    "Published AUC top-10 (mean ± std): REINVENT and Graph GA from Gao et al., \"Sample "
    "Efficiency Matters: A Benchmark for Practical Molecular Optimization\", NeurIPS 2022 "
    "Datasets and Benchmarks (5 runs); GenMol from Lee et al., \"GenMol: A Drug Discovery "
    "Generalist with Discrete Diffusion\", ICML 2025 (3 runs). Each row's source is in "
    "data/benchmarks/pmo_published.csv. Their generative models and pretraining data differ "
    "from ours; the oracle budget and AUC definition are PMO's for all.")

CSV_COLUMNS = ("task", "algorithm", "seed", "auc_top1", "auc_top10", "auc_top100",
               "oracle_calls", "budget_spent", "unique_valid_designs", "eval_oracle_calls",
               "valid_fraction", "reward_final_mean", "wall_seconds", "out_dir")
# Overrides the suite sets itself, per run.
_RESERVED = ("campaign", "algorithm", "seed", "out_dir", "campaign.task", "campaign.oracle_budget")


def default_published_csv() -> Path:
    """benchmarks/pmo_published.csv under vardbio.data.data_dir()."""
    return data_path("benchmarks/pmo_published.csv")


def load_published(path: str | Path | None = None) -> dict[tuple[str, str], tuple[float, float]]:
    """{(task, method): (mean, std)} of the published AUC top-10 table (the default file when
    path is None; empty when that file is absent)."""
    path = Path(path) if path is not None else default_published_csv()
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {(r["task"], r["method"]): (float(r["auc_top10_mean"]), float(r["auc_top10_std"]))
                for r in csv.DictReader(fh)}


def run_suite(tasks: Sequence[str], algorithms: Sequence[str], seeds: Sequence[int], budget: int,
              out_dir: str | Path, overrides: Sequence[str] = (), campaign: str = "molecule_pmo",
              published: str | Path | None = None, suite_name: str | None = None,
              finished_only: bool = False) -> dict[str, Any]:
    """Run every task x algorithm x seed as a `campaign` run and write suite.csv and suite.md.

    overrides: `vardbio run` overrides for every run (campaign.*, algorithm.*, progress=false,
        ...); one written `<algorithm>:<override>` applies to that algorithm's runs only
        (e.g. "vard:algorithm.value_samples=20"). The suite sets campaign, algorithm,
        campaign.task, campaign.oracle_budget, seed and out_dir itself.
    published: the published table (default data/benchmarks/pmo_published.csv).
    finished_only: start no run; tabulate those already finished in out_dir (each still checked
        against these settings), e.g. while parts of a suite run in other processes.
    Returns {"rows": [one dict per run, as in suite.csv], "sums": {method: sum over the tasks
    of the mean AUC top-10}, "csv": path, "md": path}.
    """
    from vardbio.campaign.config import compose_config
    from vardbio.campaign.trainer import Trainer

    tasks, algorithms, seeds = list(tasks), list(algorithms), [int(s) for s in seeds]
    if not tasks or not algorithms or not seeds:
        raise ValueError("a suite needs at least one task, one algorithm and one seed")
    for what, items in (("task", tasks), ("algorithm", algorithms), ("seed", seeds)):
        repeated = sorted({str(x) for x in items if items.count(x) > 1})
        if repeated:
            raise ValueError(f"repeated {what}(s): {', '.join(repeated)}")
    if campaign == "molecule_pmo":
        unknown = [t for t in tasks if t not in PMO_ALL]
        if unknown:
            raise ValueError(f"unknown PMO task(s) {unknown}; valid tasks: {', '.join(PMO_ALL)}")
    shared, per_algorithm = split_overrides(overrides, algorithms)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = load_published(published)
    rows: list[dict[str, Any]] = []
    for task in tasks:
        for algorithm in algorithms:
            for seed in seeds:
                run_dir = out_dir / task / f"{algorithm}_s{seed}"
                if finished_only and not (run_dir / "summary.json").is_file():
                    continue
                own = [*shared, *per_algorithm.get(algorithm, ())]
                cfg = compose_config("config", [
                    f"campaign={campaign}", f"algorithm={algorithm}", *own, f"campaign.task={task}",
                    f"campaign.oracle_budget={int(budget)}", f"seed={seed}"])
                cfg.out_dir = str(run_dir)  # set after composing: any path, no override quoting
                if algorithm == "best_of_n" and not any(_key(o) == "algorithm.n" for o in own):
                    cfg.algorithm.n = budget_filling_n(int(budget), int(cfg.campaign.eval_samples))
                summary = Trainer.from_config(cfg).train()
                rows.append(_row(task, algorithm, seed, summary, run_dir))
                write_csv(rows, out_dir / "suite.csv")
                write_markdown(rows, table, out_dir / "suite.md", tasks=tasks, algorithms=algorithms,
                               budget=budget, campaign=campaign, suite_name=suite_name)
    if not rows:
        raise ValueError(f"no finished run of this suite in {out_dir} to tabulate")
    return {"rows": rows, "sums": suite_sums(rows, table, tasks, algorithms),
            "csv": out_dir / "suite.csv", "md": out_dir / "suite.md"}


def budget_filling_n(budget: int, eval_samples: int) -> int:
    """Best-of-N's candidates per final design, ceil(budget / eval_samples), so that its
    candidates spend the whole budget (it then returns budget // n designs, at most
    eval_samples) and its AUC, like every other algorithm's, is of a run that used it all."""
    return max(1, -(-budget // max(1, eval_samples)))


def split_overrides(overrides: Iterable[str], algorithms: Sequence[str]
                    ) -> tuple[list[str], dict[str, list[str]]]:
    """(overrides for every run, {algorithm: its own overrides}) from a mixed list where
    `<algorithm>:<override>` names one algorithm. Overrides of what the suite sets itself
    (campaign, algorithm, seed, out_dir, campaign.task, campaign.oracle_budget) raise."""
    shared: list[str] = []
    own: dict[str, list[str]] = defaultdict(list)
    for item in overrides:
        target, override = None, item
        head = item.split("=", 1)[0]
        if ":" in head:
            name, rest = item.split(":", 1)
            if name not in algorithms:
                raise ValueError(f"override {item!r} names algorithm '{name}', which this suite "
                                 f"does not run ({', '.join(algorithms)})")
            target, override = name, rest
        if _key(override) in _RESERVED:
            raise ValueError(f"the suite sets {_key(override)} itself (use its arguments); "
                             f"drop the override {item!r}")
        (own[target] if target else shared).append(override)
    return shared, dict(own)


def _key(override: str) -> str:
    """The key an override sets: 'algorithm.beta' for '++algorithm.beta=0.5'."""
    return override.lstrip("+~").split("=", 1)[0].strip()


def _row(task: str, algorithm: str, seed: int, summary: Mapping[str, Any], run_dir: Path
         ) -> dict[str, Any]:
    reward_final = summary.get("reward_final") or {}
    return {"task": task, "algorithm": algorithm, "seed": seed,
            **{k: summary.get(k) for k in ("auc_top1", "auc_top10", "auc_top100", "oracle_calls",
                                           "budget_spent", "unique_valid_designs",
                                           "eval_oracle_calls", "valid_fraction")},
            "reward_final_mean": reward_final.get("mean"),
            "wall_seconds": summary.get("wall_seconds"), "out_dir": str(run_dir)}


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """suite.csv: one row per run (CSV_COLUMNS; None and NaN as empty cells)."""
    path = Path(path)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in CSV_COLUMNS])
    tmp.replace(path)


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """suite.csv back as dicts (numbers as floats, seed as int, empty cells as None)."""
    out = []
    with Path(path).open(newline="") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = {"task": r["task"], "algorithm": r["algorithm"],
                                   "seed": int(r["seed"]), "out_dir": r["out_dir"]}
            for c in CSV_COLUMNS[3:-1]:
                row[c] = float(r[c]) if r[c] != "" else None
            out.append(row)
    return out


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return value


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation (population, numpy's default: 0 for a single seed)."""
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def _ours(rows: Sequence[Mapping[str, Any]], key: str = "auc_top10"
          ) -> dict[tuple[str, str], list[float]]:
    """{(task, algorithm): [the key's value of each seed that has one]}."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        if r.get(key) is not None:
            values[(r["task"], r["algorithm"])].append(float(r[key]))
    return values


def suite_sums(rows: Sequence[Mapping[str, Any]], published: Mapping[tuple[str, str], tuple[float, float]],
               tasks: Sequence[str], algorithms: Sequence[str]) -> dict[str, float]:
    """{method: sum over `tasks` of its mean AUC top-10}: each algorithm's over the tasks it
    has results for, each published method's over the tasks it has a published figure for."""
    ours = _ours(rows)
    sums = {a: sum(_mean_std(ours[(t, a)])[0] for t in tasks if ours.get((t, a))) for a in algorithms}
    for method in PUBLISHED_METHODS:
        present = [published[(t, method)][0] for t in tasks if (t, method) in published]
        if present:
            sums[method] = sum(present)
    return sums


def write_markdown(rows: Sequence[Mapping[str, Any]],
                   published: Mapping[tuple[str, str], tuple[float, float]], path: str | Path,
                   tasks: Sequence[str] | None = None, algorithms: Sequence[str] | None = None,
                   budget: int | None = None, campaign: str = "molecule_pmo",
                   suite_name: str | None = None) -> None:
    """suite.md from the runs' rows and the published table (tasks and algorithms default to
    those of the rows, in first-seen order)."""
    tasks = list(tasks) if tasks is not None else list(dict.fromkeys(r["task"] for r in rows))
    algorithms = (list(algorithms) if algorithms is not None
                  else list(dict.fromkeys(r["algorithm"] for r in rows)))
    methods = [m for m in PUBLISHED_METHODS if any((t, m) in published for t in tasks)]
    ours = _ours(rows)
    seeds = sorted({int(r["seed"]) for r in rows})
    sums = suite_sums(rows, published, tasks, algorithms)

    def cell(values: Sequence[float] | None) -> str:
        if not values:
            return "—"
        mean, std = _mean_std(values)
        return f"{mean:.3f} ± {std:.3f}"

    title = f"{suite_name}: " if suite_name else ""
    lines = [f"# {title}PMO AUC top-10 ({campaign})", ""]
    budget_text = f"a budget of {budget:,} oracle calls as the campaign counts them, " if budget else ""
    lines += [f"{len(tasks)} tasks; {budget_text}seeds {', '.join(map(str, seeds)) or '—'}. "
              "Ours: mean ± std over seeds (population std); — marks a run not made yet.", ""]
    header = ["task", *algorithms, *methods]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in tasks:
        name = f"{t} †" if t in TDC_VERSION_TASKS and methods else t
        cells = [cell(ours.get((t, a))) for a in algorithms]
        cells += [f"{published[(t, m)][0]:.3f} ± {published[(t, m)][1]:.3f}" if (t, m) in published
                  else "—" for m in methods]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    sum_cells = []
    for method in [*algorithms, *methods]:
        if method in algorithms:
            n = sum(1 for t in tasks if ours.get((t, method)))
        else:
            n = sum(1 for t in tasks if (t, method) in published)
        text = f"**{sums.get(method, 0.0):.3f}**"
        sum_cells.append(text if n == len(tasks) else f"{text} ({n} of {len(tasks)} tasks)")
    lines.append("| **Sum** | " + " | ".join(sum_cells) + " |")
    lines.append("")
    if methods:
        lines.append(CITATION)
        if any(t in TDC_VERSION_TASKS for t in tasks):
            lines.append("† PMO's code pinned PyTDC 0.3.6, whose objective for this task differs "
                         "from TDC's and GuacaMol's current one (which ours follows; see "
                         "oracles/pmo.py): the published figures may be of another objective.")
        lines.append("")
    lines += ["## Sums over the tasks run", "",
              "Sum over the tasks of the mean AUC top-10:", ""]
    lines += [f"- {method}: {sums[method]:.3f}" for method in [*algorithms, *methods] if method in sums]
    lines += ["", "## Details (means over seeds)", "",
              "| task | algorithm | runs | AUC top-1 | AUC top-10 | AUC top-100 | oracle calls | "
              "unique valid | valid fraction (final) | wall s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for t in tasks:
        for a in algorithms:
            mine = [r for r in rows if r["task"] == t and r["algorithm"] == a]
            if not mine:
                continue

            def avg(key: str, fmt: str) -> str:
                vals = [float(r[key]) for r in mine if r.get(key) is not None]
                return format(sum(vals) / len(vals), fmt) if vals else "—"

            lines.append(f"| {t} | {a} | {len(mine)} | {avg('auc_top1', '.3f')} | "
                         f"{avg('auc_top10', '.3f')} | {avg('auc_top100', '.3f')} | "
                         f"{avg('oracle_calls', '.0f')} | {avg('unique_valid_designs', '.0f')} | "
                         f"{avg('valid_fraction', '.3f')} | {avg('wall_seconds', '.0f')} |")
    Path(path).write_text("\n".join(lines) + "\n")


def _parse_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`python -m vardbio.campaign.suite --suite pmo_dev --algorithms vard,best_of_n,ddpo
    --seeds 0,1,2 --budget 10000 --out runs/pmo_dev [overrides...]`."""
    parser = argparse.ArgumentParser(
        prog="python -m vardbio.campaign.suite",
        description="Run every task x algorithm x seed of a PMO suite and tabulate AUC top-10 "
                    "against the published REINVENT, Graph GA and GenMol figures.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--suite", choices=sorted(SUITES), help="a named suite of tasks")
    which.add_argument("--tasks", help="comma-separated tasks instead of a named suite")
    parser.add_argument("--algorithms", default="vard,best_of_n,ddpo",
                        help="comma-separated algorithms (default: vard,best_of_n,ddpo)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument("--budget", type=int, default=10_000,
                        help="oracle budget of every run, as the campaign counts it (default 10000)")
    parser.add_argument("--out", default=None, help="output folder (default runs/<suite>)")
    parser.add_argument("--campaign", default="molecule_pmo", help="campaign of every run")
    parser.add_argument("--published", default=None,
                        help="published table (default data/benchmarks/pmo_published.csv)")
    parser.add_argument("--finished-only", action="store_true",
                        help="start no run: tabulate the runs already finished in --out")
    parser.add_argument("overrides", nargs="*",
                        help="`vardbio run` overrides for every run; <algorithm>:<override> for one")
    args = parser.parse_args(argv)
    tasks = list(SUITES[args.suite]) if args.suite else _parse_list(args.tasks)
    name = args.suite or "suite"
    result = run_suite(tasks, _parse_list(args.algorithms), [int(s) for s in _parse_list(args.seeds)],
                       args.budget, args.out or f"runs/{name}", overrides=args.overrides,
                       campaign=args.campaign, published=args.published, suite_name=name,
                       finished_only=args.finished_only)
    print(f"wrote {result['csv']} and {result['md']}")
    for method, total in result["sums"].items():
        print(f"  sum of mean AUC top-10, {method}: {total:.3f}")
    return result


if __name__ == "__main__":
    main()
