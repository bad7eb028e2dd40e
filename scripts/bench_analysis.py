"""Tables and figures for a `vardbio bench` sweep against the KL-regularised optimum.

    .venv/bin/python scripts/bench_analysis.py runs/bench/toy_linear [--reference N] [--figures DIR]

Reads out_dir/bench.json (and each run's designs_final.csv for the standard error of the
mean reward) and prints Markdown:

1. one row per run: its KL weight, E[r] ± standard error, KL to the reference (which one),
   J = E[r] − β·KL at the run's own β, the fraction of the achievable gain, the value head's
   held-out R², the oracle calls, the wall time and the denoiser calls per design;
2. the optimum at every β of the sweep: J*, E_p*[r], KL(p*‖p_ref), ESS, and where they come
   from (the toy campaigns' closed form when the summary has it, else the reference's
   evaluation designs, else a larger scored reference set);
3. the goal check at each β that VARD was run at: VARD's J against the best J = E[r] − β·KL
   of every other run (any algorithm, any setting; "at a matching KL" is this comparison:
   the other point's reward is charged at VARD's β), and VARD's fraction of the achievable gain.

--reference N samples and scores N designs of the reference model (the campaign of the bench,
seed + 1, evaluation ledger: no run's budget) into out_dir/reference_rewards_N.json and uses
them for J* where the bench's own evaluation designs are too few to trust (vardbio.optimum's
ESS rule). --figures DIR writes DIR/<campaign>_value_r2.png (held-out R² of the value head per
noise bucket, every run that fitted one) and DIR/<campaign>_objective.png (J against β, each
algorithm's best run at each β, with J*).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from vardbio.optimum import estimate_optimum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench_dir", type=Path)
    parser.add_argument("--reference", type=int, default=0, help="score N reference designs for J*")
    parser.add_argument("--figures", type=Path, default=None)
    parser.add_argument("--step-kl", type=int, default=0,
                        help="per-step KL of each fine-tuned run's model on N of its own rollouts (figure)")
    parser.add_argument("--sample-kl", choices=("gaussian", "marginal"), default=None,
                        help="also estimate the KL of the final designs themselves (toy domains)")
    args = parser.parse_args()
    bench = json.loads((args.bench_dir / "bench.json").read_text())
    ref_rewards = reference_rewards(args.bench_dir, bench, args.reference) if args.reference else None
    rows = [run_row(args.bench_dir, p, bench["summaries"][p["label"]], args.sample_kl) for p in bench["points"]]
    betas = sorted({r["beta"] for r in rows if r["algorithm"] == "vard"})
    optimum = {b: optimum_at(b, bench, ref_rewards) for b in sorted({r["beta"] for r in rows if r["beta"]})}
    j_ref = bench["reward_pretrained"]
    print(f"### {bench['campaign']}: budget {bench['oracle_budget']} oracle calls, seed {bench['seed']}\n")
    print("| run | β | E[r] ± se | KL to reference | sample KL | J at own β | gain fraction | value R² | oracle calls | run wall s "
          "| denoiser calls / design |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| pretrained | | {j_ref:.3f} | 0 | | | | | 0 | | |")
    for r in rows:
        o = optimum.get(r["beta"])
        j = None if r["beta"] is None else r["reward"] - r["beta"] * r["kl"]
        frac = None if (j is None or o is None or o["j_star"] is None) else (j - o["j_ref"]) / (o["j_star"] - o["j_ref"])
        print(f"| {r['label']} | {fmt(r['beta'], 3)} | {r['reward']:.3f} ± {r['se']:.3f} | {r['kl']:.3g} "
              f"({r['kl_kind']}) | {fmt(r['sample_kl'])} | {fmt(j)} | {pct(frac)} | {fmt(r['r2'])} | {r['calls']} | {r['wall']:.0f} "
              f"| {r['denoiser']} |")
    print("\nOptimum at each β (J* = β·log E_ref[exp(r/β)]):\n")
    print("| β | J* | E_p*[r] | KL(p*‖p_ref) | ESS | J_ref | source |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for b, o in optimum.items():
        print(f"| {b:g} | {fmt(o['j_star'])} | {fmt(o['reward'])} | {fmt(o['kl'])} | {fmt(o['ess'], 0)} | {o['j_ref']:.3f} "
              f"| {o['source']} |")
    print("\nGoal check at each β VARD ran at (every other run charged at that β):\n")
    sample = all(r["sample_kl"] is not None for r in rows)
    print("| β | VARD J | best other J (run) | VARD − best other | VARD gain fraction | J at or above | ≥ 80 % |"
          + (" same with sample KL: VARD − best other (run) |" if sample else ""))
    print("| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if sample else ""))
    checks = []
    for b in betas:
        vard = next(r for r in rows if r["algorithm"] == "vard" and r["beta"] == b)
        j_vard = vard["reward"] - b * vard["kl"]
        others = [(r["reward"] - b * r["kl"], r) for r in rows if r["algorithm"] != "vard"]
        if not others:
            break  # VARD alone in this bench: nothing to compare with
        j_best, best = max(others, key=lambda t: t[0])
        o = optimum[b]
        frac = None if o["j_star"] is None else (j_vard - o["j_ref"]) / (o["j_star"] - o["j_ref"])
        # the difference of two means: within 2 standard errors it is a tie, not a loss
        se = math.hypot(vard["se"], best["se"])
        verdict = "yes" if j_vard >= j_best else ("tie (within 2 se)" if j_best - j_vard <= 2 * se else "no")
        checks.append((b, j_vard, j_best, best["label"], frac, verdict))
        print(f"| {b:g} | {j_vard:.3f} | {j_best:.3f} ({best['label']}) | {j_vard - j_best:+.3f} (2 se {2 * se:.3f}) "
              f"| {pct(frac)} | {verdict} | {'—' if frac is None else ('yes' if frac >= 0.8 else 'no')} |"
              + (sample_check(b, vard, rows) if sample else ""))
    if args.figures:
        figures(bench, rows, optimum, args.figures)
    if args.step_kl and args.figures:
        step_kl_figure(args.bench_dir, bench, rows, args.step_kl, args.figures)


def sample_check(beta: float, vard: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The goal check's comparison with every run's KL replaced by its sample-KL estimate."""
    j_best, best = max(((r["reward"] - beta * r["sample_kl"], r) for r in rows if r["algorithm"] != "vard"),
                       key=lambda t: t[0])
    return f" {vard['reward'] - beta * vard['sample_kl'] - j_best:+.3f} ({best['label']}) |"


def run_row(bench_dir: Path, point: dict[str, Any], summary: dict[str, Any], sample_kl: str | None) -> dict[str, Any]:
    run_dir = bench_dir / point["folder"]
    rewards = final_rewards(run_dir / "designs_final.csv")
    se = float(np.nanstd(rewards, ddof=1) / math.sqrt(np.isfinite(rewards).sum())) if len(rewards) > 1 else math.nan
    inference = point.get("inference") or {}
    kl_note = point.get("kl_note") or ""
    kind = "bound" if "bound" in kl_note else ("path" if "path KL" in kl_note else kl_note[:20])
    return {"label": point["label"], "algorithm": point["algorithm"], "beta": point["beta"],
            "reward": point["reward"], "se": se, "kl": point["kl"], "kl_kind": kind,
            "r2": summary.get("value_r2"), "r2_buckets": summary.get("value_r2_per_bucket"),
            "calls": point["oracle_calls"], "wall": run_wall(run_dir), "run_dir": run_dir,
            "denoiser": inference.get("denoiser_calls_per_design", summary.get("sampling_steps")),
            "sample_kl": design_kl(run_dir, sample_kl) if sample_kl else None}


def design_kl(run_dir: Path, how: str) -> float:
    """KL(final designs ‖ reference designs) estimated from the run's designs_final.csv and
    designs_initial.csv (the reference's evaluation designs). 'gaussian': both fitted by a
    Gaussian (exact for the toy Gaussian model under a linear tilt). 'marginal': the sum over
    positions of the KL between per-position letter frequencies (a lower bound on the KL of
    the sequences when the reference is factorised, as toy_sequence's data are)."""
    def read(name: str) -> list[dict[str, str]]:
        with (run_dir / name).open() as f:
            return list(csv.DictReader(f))
    final, ref = read("designs_final.csv"), read("designs_initial.csv")
    if how == "gaussian":
        cols = [c for c in final[0] if c != "reward"]
        a = np.array([[float(r[c]) for c in cols] for r in final])
        b = np.array([[float(r[c]) for c in cols] for r in ref])
        ma, mb, sa, sb = a.mean(0), b.mean(0), np.cov(a.T), np.cov(b.T)
        inv = np.linalg.inv(sb)
        d = ma - mb
        return float(0.5 * (np.trace(inv @ sa) + d @ inv @ d - len(d)
                            + np.linalg.slogdet(sb)[1] - np.linalg.slogdet(sa)[1]))
    seqs_a, seqs_b = [r["sequence"] for r in final], [r["sequence"] for r in ref]
    letters = sorted({c for s in seqs_a + seqs_b for c in s})
    total = 0.0
    for pos in range(len(seqs_b[0])):
        qa = np.array([sum(s[pos] == c for s in seqs_a) for c in letters], dtype=float) + 0.5
        qb = np.array([sum(s[pos] == c for s in seqs_b) for c in letters], dtype=float) + 0.5
        qa, qb = qa / qa.sum(), qb / qb.sum()
        total += float(np.sum(qa * np.log(qa / qb)))
    return total


def run_wall(run_dir: Path) -> float:
    """Seconds from the run folder's creation to its summary.json (the whole run: reference
    evaluation, value fit, training, final sampling and scoring; summary.json's wall_seconds
    stops before the final sampling)."""
    born = int(subprocess.run(["stat", "-c", "%W", str(run_dir)], capture_output=True, text=True).stdout or 0)
    return float((run_dir / "summary.json").stat().st_mtime - born) if born > 0 else math.nan


def final_rewards(path: Path) -> np.ndarray:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return np.array([float(r["reward"]) if r["reward"] not in ("", "nan") else math.nan for r in rows])


def optimum_at(beta: float, bench: dict[str, Any], ref_rewards: np.ndarray | None) -> dict[str, Any]:
    """J*, E_p*[r], KL*, ESS at β and J_ref (the mean reward of the reference designs they come
    from): closed form (toy), else the bench's reference evaluation, else the larger scored
    reference set."""
    return {"j_ref": bench["reward_pretrained"], **_optimum_at(beta, bench, ref_rewards)}


def _optimum_at(beta: float, bench: dict[str, Any], ref_rewards: np.ndarray | None) -> dict[str, Any]:
    for s in bench["summaries"].values():
        a = s.get("analytic")
        if a and (s.get("optimum") or {}).get("beta") == beta:
            return {"j_star": a["reward_optimum"] - beta * a["kl_optimum"], "reward": a["reward_optimum"],
                    "kl": a["kl_optimum"], "ess": None, "source": "closed form (the reference's own moments)"}
    own = next((s["optimum"] for s in bench["summaries"].values() if (s.get("optimum") or {}).get("beta") == beta), None)
    if ref_rewards is not None:  # the larger set first: smaller error (vardbio.optimum: about 16/ESS on the KL)
        e = estimate_optimum(ref_rewards, beta)
        if e.trusted or not (own and own.get("trusted")):
            source = f"{e.n} scored reference designs"
            if not e.trusted:  # the raw estimate is biased low: J* is at least about this much
                r = ref_rewards[~np.isnan(ref_rewards)] / beta
                low = beta * (r.max() + math.log(np.mean(np.exp(r - r.max()))))
                source += f" (untrusted: ESS too small; the raw estimate {low:.3f} is biased low, so J* ≳ {low:.3f})"
            return {"j_star": e.j_star, "reward": e.reward, "kl": e.kl, "ess": e.ess, "source": source,
                    "j_ref": float(np.nanmean(ref_rewards))}
    if own and own.get("trusted"):
        return {**own, "source": f"{own['n']} reference evaluation designs"}
    return {"j_star": None, "reward": None, "kl": None, "ess": own["ess"] if own else None,
            "source": f"untrusted on {own['n'] if own else '?'} reference designs"}


def reference_rewards(bench_dir: Path, bench: dict[str, Any], n: int) -> np.ndarray:
    """Rewards of n fresh reference designs (cached in bench_dir/reference_rewards_<n>.json)."""
    path = bench_dir / f"reference_rewards_{n}.json"
    if path.is_file():
        return np.array(json.loads(path.read_text()), dtype=np.float64)
    import yaml
    import torch

    from vardbio.campaign.trainer import Trainer
    first = next(iter(bench["summaries"]))
    point = next(p for p in bench["points"] if p["label"] == first)
    config = yaml.safe_load((bench_dir / point["folder"] / "config.yaml").read_text())
    config["out_dir"] = str(bench_dir / "reference_scoring")
    trainer = Trainer.from_config(config)
    reference = trainer.reference
    values = []
    gen = torch.Generator().manual_seed(bench["seed"] + 1)
    with torch.no_grad():
        for start in range(0, n, 256):
            traj = reference.rollout(min(256, n - start), gen)
            values.extend(np.asarray(trainer.eval_reward(reference.decode(traj.final, traj.mask)).values).tolist())
    path.write_text(json.dumps(values))
    return np.array(values, dtype=np.float64)


def figures(bench: dict[str, Any], rows: list[dict[str, Any]], optimum: dict[float, dict[str, Any]],
            out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    campaign = bench["campaign"]
    heads: dict[tuple, list[str]] = {}  # one bar group per distinct value head (a sweep usually shares one)
    fitted = []
    for r in rows:
        key = tuple(round(v, 6) for v in r["r2_buckets"] or [])
        if key and key not in heads:
            heads[key] = []
            fitted.append(r)
        if key and r["algorithm"] not in heads[key]:
            heads[key].append(r["algorithm"])
    if fitted:
        edges = bench["summaries"][fitted[0]["label"]].get("value_r2_bucket_edges") or []
        fig, ax = plt.subplots(figsize=(6, 3.5))
        width = 0.8 / len(fitted)
        for i, r in enumerate(fitted):
            x = np.arange(len(r["r2_buckets"])) + i * width
            ax.bar(x, r["r2_buckets"], width,
                   label=f"{', '.join(heads[tuple(round(v, 6) for v in r['r2_buckets'])])} (overall {r['r2']:.2f})")
        centres = np.arange(len(fitted[0]["r2_buckets"])) + 0.4 - width / 2
        ax.set_xticks(centres, [f"{a:.1f}–{b:.1f}" for a, b in zip(edges[:-1], edges[1:])] or None)
        ax.set(xlabel="noise level t (0 = clean design)", ylabel="held-out R² of the value head",
               title=f"{campaign}: value head per noise bucket")
        ax.axhline(0, color="black", lw=0.5)
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / f"{campaign}_value_r2.png", dpi=90)
        plt.close(fig)
    vard_rows = [r for r in rows if r["algorithm"] == "vard"]
    if vard_rows:  # still climbing at the end (iterations, budget) or flat (converged to what its value head sees)?
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
        for r in vard_rows:
            with (r["run_dir"] / "metrics.csv").open() as f:
                m = list(csv.DictReader(f))
            it = [int(x["iteration"]) for x in m]
            left.plot(it, [float(x["value_mean"]) for x in m], "-", label=r["label"])
            right.plot(it, [float(x["kl_step_mean"]) for x in m], "-", label=r["label"])
        left.set(xlabel="VARD iteration", ylabel="mean V(x_{t-1}, t-1) over trained steps",
                 title=f"{campaign}: VARD's training signal")
        right.set(xlabel="VARD iteration", ylabel="mean per-step KL to the reference", title="per-step KL")
        left.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / f"{campaign}_vard_training.png", dpi=90)
        plt.close(fig)
    betas = sorted(b for b in optimum if b)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    stars = [(b, optimum[b]["j_star"]) for b in betas if optimum[b]["j_star"] is not None]
    if stars:
        ax.plot(*zip(*stars), "k*-", ms=10, label="J* (optimum)")
    for name in dict.fromkeys(r["algorithm"] for r in rows):
        best = [max(r["reward"] - b * r["kl"] for r in rows if r["algorithm"] == name) for b in betas]
        ax.plot(betas, best, "o-", label=f"{name} (best run at each β)")
    ax.axhline(bench["reward_pretrained"], color="grey", ls=":", label="pretrained (J_ref)")
    ax.set_xscale("log")
    ax.set(xlabel="β (KL weight)", ylabel="J = E[r] − β·KL", title=f"{campaign}: objective at each β")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / f"{campaign}_objective.png", dpi=90)
    plt.close(fig)


def step_kl_figure(bench_dir: Path, bench: dict[str, Any], rows: list[dict[str, Any]], n: int, out: Path) -> None:
    """KL(p_θ(· | x_k) ‖ p_ref(· | x_k)) at every sampler step k, mean over n rollouts of each
    fine-tuned run's final model (VARD, DDPO): where along the chain the path KL comes from.
    Printed as a table and drawn as out/<campaign>_step_kl.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    import yaml

    from vardbio.campaign.trainer import Trainer
    from vardbio.model.checkpoint import load_weights

    fig, ax = plt.subplots(figsize=(6, 3.5))
    print("\nPer-step KL to the reference (mean over rollouts of each run's final model), by sampler step:\n")
    for r in rows:
        if r["algorithm"] not in ("vard", "ddpo"):
            continue
        run_dir = r["run_dir"]
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        config["out_dir"] = str(bench_dir / "step_kl_scratch")
        trainer = Trainer.from_config(config)
        model, reference = load_weights(trainer.model, run_dir / "model_final.pt"), trainer.reference
        model.eval()
        with torch.no_grad():
            traj = model.rollout(n, torch.Generator().manual_seed(7))
            kl = [float(model.step(traj.states[k], k, traj.mask).kl(reference.step(traj.states[k], k, traj.mask))
                        .mean()) for k in range(model.num_steps)]
        ax.semilogy(range(len(kl)), np.maximum(kl, 1e-6), "o-", ms=3, label=r["label"])
        top = int(np.argmax(kl))
        last = len(kl) // 5 or 1  # the steps nearest the clean design
        print(f"- {r['label']}: total {sum(kl):.3g}; largest at step {top} of {len(kl)} ({kl[top]:.3g}, "
              f"{100 * kl[top] / sum(kl):.0f} %); the last {last} steps carry {100 * sum(kl[-last:]) / sum(kl):.0f} %; "
              f"without the final step {sum(kl[:-1]):.3g}")
    ax.set(xlabel="sampler step k (0 = first, from noise; last = the step to x_0)", ylabel="mean KL of the step",
           title=f"{bench['campaign']}: where the path KL comes from")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / f"{bench['campaign']}_step_kl.png", dpi=90)
    plt.close(fig)


def fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


if __name__ == "__main__":
    main()
