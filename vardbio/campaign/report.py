"""The run report: report.md with PNG plots and a gallery of designs, from a run directory.

    vardbio report runs/x          # or: from vardbio.campaign.report import write_report

Everything comes from the files a campaign wrote (summary.json, metrics.csv, designs_*), so
a report can be rebuilt at any time. Plots only show recorded numbers:

- reward against oracle calls: the evaluations before (0 calls) and after (the calls the
  algorithm spent), mean and top decile; plus the training batch's mean oracle reward per
  iteration where the algorithm records one (`reward_mean`, e.g. DDPO);
- the training signal per iteration: `reward_mean` (oracle scores of the batch) or, for VARD,
  `value_mean`, the value head's estimate V(x_{k+1}) averaged over trained steps (a model
  prediction, labelled as such, not an oracle score);
- KL to the reference: K · `kl_step_mean` per iteration (the training batch's per-step KL,
  times the K sampling steps: an estimate of the path KL) where recorded, and the final
  evaluation's `kl_to_reference`;
- value R² per noise-level bucket (held-out chains of the value fit);
- reward against KL: the final designs against the optimum frontier estimated from the
  reference's evaluation designs (summary `optimum`, vardbio.optimum), trusted points only;
- the model plugin's domain metrics before and after (summary `domain_metrics`: each
  labelled with what it measures, its units and ↑/↓ for the preferred direction);
- the reward terms' oracle means before and after, with units and directions, in a table;
- a gallery of the design files as the plugin described them (summary `design_files`:
  images, molecules, vectors or sequences).
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vardbio.campaign.outputs import read_metrics_csv  # noqa: E402

REPORT = "report.md"
FIGURES = "report"
MAX_MOLECULES = 12


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """summary.json and the metrics.csv rows (empty if the run had no iterations)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no summary.json: not a finished vardbio run")
    summary = json.loads(summary_path.read_text())
    metrics_path = run_dir / "metrics.csv"
    metrics = read_metrics_csv(metrics_path) if metrics_path.is_file() else []
    return summary, metrics


def _column(rows: list[dict[str, float]], key: str) -> np.ndarray:
    return np.array([row.get(key, math.nan) for row in rows], dtype=np.float64)


def _has(rows: list[dict[str, float]], key: str) -> bool:
    return bool(rows) and key in rows[0] and np.isfinite(_column(rows, key)).any()


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def reward_figure(summary: dict[str, Any], rows: list[dict[str, float]]) -> plt.Figure:
    """Left: reward against oracle calls. Right: the training signal against iterations."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    calls = [0, summary["oracle_calls"]]
    for stat, label, style in (("mean", "evaluation mean", "o:"), ("top10", "evaluation top decile", "s:")):
        left.plot(calls, [_num(summary["reward_initial"][stat]), _num(summary["reward_final"][stat])],
                  style, label=label, gid=f"eval_{stat}")
    if _has(rows, "reward_mean"):
        left.plot(_column(rows, "oracle_calls"), _column(rows, "reward_mean"), ".", alpha=0.6,
                  label="training batch mean (oracle)", gid="batch_reward_mean")
    if summary.get("top10_curve"):
        curve = np.asarray(summary["top10_curve"], dtype=float)
        left.plot(curve[:, 0], curve[:, 1], "-", label="mean of the 10 best designs found so far",
                  gid="top10_curve")
    if "analytic" in summary:
        left.axhline(summary["analytic"]["reward_optimum"], color="grey", ls=":", label="analytic optimum")
    left.set_xlabel("oracle calls spent by the algorithm")
    left.set_ylabel("reward")
    left.set_title("reward against oracle calls")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    it = _column(rows, "iteration")
    if _has(rows, "reward_mean"):
        right.plot(it, _column(rows, "reward_mean"), label="batch mean reward (oracle)", gid="iter_reward_mean")
    if _has(rows, "value_mean"):
        right.plot(it, _column(rows, "value_mean"),
                   label="value estimate V(x_{k+1}), mean over trained steps (model, not oracle)",
                   gid="iter_value_mean")
    if not right.lines:
        right.text(0.5, 0.5, "no per-iteration reward recorded", ha="center", transform=right.transAxes)
    right.set_xlabel("iteration")
    right.set_title("training signal per iteration")
    if right.lines:
        right.legend(fontsize=8, loc="best")
    right.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def kl_figure(summary: dict[str, Any], rows: list[dict[str, float]]) -> plt.Figure:
    """KL to the reference against iterations."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if _has(rows, "kl_step_mean"):
        steps = summary.get("sampling_steps") or 1
        ax.plot(_column(rows, "iteration"), _column(rows, "kl_step_mean") * steps,
                label=f"training batch: {steps} × mean per-step KL", gid="iter_kl")
    last = summary.get("iterations") or 0
    ax.plot([0, last], [0.0, _num(summary["kl_to_reference"])], "o", color="black",
            label=textwrap.fill(f"evaluation ({summary.get('kl_note') or 'path KL'})", 60), gid="eval_kl")
    if "analytic" in summary and "kl_optimum" in summary["analytic"]:
        ax.axhline(summary["analytic"]["kl_optimum"], color="grey", ls=":", label="analytic optimum")
    ax.set_xlabel("iteration")
    ax.set_ylabel("KL to the reference (nats)")
    ax.set_title("KL to the reference")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def frontier_points(summary: dict[str, Any]) -> np.ndarray:
    """(P, 2) [KL, reward] of the trusted points of the summary's estimated optimum frontier,
    sorted by KL (empty when it has none)."""
    rows = [(p[2], p[1]) for p in (summary.get("optimum") or {}).get("frontier") or []
            if p[1] is not None and p[2] is not None]
    return np.array(sorted(rows), dtype=float).reshape(-1, 2)


def optimum_figure(summary: dict[str, Any]) -> plt.Figure | None:
    """Reward against KL to the reference: the optimum frontier estimated from the reference
    designs (vardbio.optimum; trusted points only), the optimum at the run's β, the pretrained
    model and the run's own final designs."""
    optimum = summary.get("optimum")
    if not optimum:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    curve = frontier_points(summary)
    if len(curve):
        ax.plot(curve[:, 0], curve[:, 1], "-", color="grey", label="estimated optimum frontier", gid="frontier")
    if optimum.get("reward") is not None:
        ax.plot([optimum["kl"]], [optimum["reward"]], "*", ms=12, color="black",
                label=f"estimated optimum at β = {optimum['beta']:.3g}", gid="optimum_beta")
    if "analytic" in summary:
        ax.plot([summary["analytic"]["kl_optimum"]], [summary["analytic"]["reward_optimum"]], "x", ms=9,
                color="tab:green", label="analytic optimum", gid="analytic_optimum")
    ax.plot([0.0], [_num(summary["reward_initial"]["mean"])], "o", color="tab:grey", label="pretrained model",
            gid="pretrained")
    ax.plot([_num(summary["kl_to_reference"])], [_num(summary["reward_final"]["mean"])], "o", color="tab:red",
            label=f"{summary['algorithm']}: final designs", gid="algorithm_point")
    fraction = summary.get("achievable_gain_fraction")
    title = "reward against KL to the reference"
    ax.set_title(title if fraction is None else f"{title}\n{100 * fraction:.0f} % of the achievable gain in J = E[r] − β·KL",
                 fontsize=10)
    ax.set_xlabel("KL to the reference (nats; the run's own measure, see kl_note)")
    ax.set_ylabel("mean reward")
    ax.set_xlim(left=0)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def value_figure(summary: dict[str, Any], rows: list[dict[str, float]]) -> plt.Figure | None:
    """Held-out R² of the value head per noise-level bucket (and per refresh if any)."""
    per_bucket = summary.get("value_r2_per_bucket")
    refreshed = _has(rows, "value_r2")
    if not per_bucket and not refreshed:
        return None
    fig, axes = plt.subplots(1, 2 if refreshed and per_bucket else 1, figsize=(10 if refreshed else 6, 4),
                             squeeze=False)
    axes = list(axes.flat)
    if per_bucket:
        ax = axes.pop(0)
        edges = summary.get("value_r2_bucket_edges") or np.linspace(0, 1, len(per_bucket) + 1).tolist()
        labels = [f"{edges[i]:.1f}–{edges[i + 1]:.1f}" for i in range(len(per_bucket))]
        ax.bar(range(len(per_bucket)), [_num(v) for v in per_bucket], gid="value_r2_bucket")
        ax.set_xticks(range(len(per_bucket)), labels)
        ax.set_xlabel("noise level t (0 = clean design)")
        ax.set_ylabel("held-out R²")
        ax.set_title(f"value fit: R² per bucket (overall {_num(summary.get('value_r2')):.3f})")
        ax.grid(alpha=0.3, axis="y")
    if refreshed:
        ax = axes.pop(0)
        ax.plot(_column(rows, "iteration"), _column(rows, "value_r2"), "o-", gid="refresh_r2")
        ax.set_xlabel("iteration")
        ax.set_ylabel("held-out R²")
        ax.set_title("value refreshes")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def arrow(higher_is_better: bool | None) -> str:
    """↑ where higher is better, ↓ where lower is, nothing where neither."""
    return {True: " ↑", False: " ↓"}.get(higher_is_better, "")


def domain_pairs(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{name: {"initial", "final", "label", "units", "higher_is_better"}} of the summary's
    domain metrics (domain_metrics) that have a number before and after."""
    pairs: dict[str, dict[str, Any]] = {}
    for name, described in (summary.get("domain_metrics") or {}).items():
        initial, final = summary.get(f"{name}_initial"), summary.get(name)
        if isinstance(initial, (int, float)) and isinstance(final, (int, float)):
            pairs[name] = {"initial": float(initial), "final": float(final), **described}
    return pairs


def quality_figure(summary: dict[str, Any]) -> plt.Figure | None:
    """One panel per domain metric (domain_pairs): bars before and after, titled with what
    it measures and ↑/↓, the units on the y axis."""
    pairs = domain_pairs(summary)
    if not pairs:
        return None
    cols = min(4, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.9 * rows), squeeze=False)
    for ax, (name, pair) in zip(axes.flat, pairs.items()):
        ax.bar([0], [pair["initial"]], color="tab:grey", label="before", gid="quality_initial")
        ax.bar([1], [pair["final"]], color="tab:red", label="after", gid="quality_final")
        ax.set_xticks([0, 1], ["before", "after"])
        ax.set_title(pair["label"] + arrow(pair["higher_is_better"]), fontsize=8, wrap=True)
        ax.set_ylabel(pair["units"], fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def figures(run_dir: str | Path) -> dict[str, plt.Figure]:
    """The report's plots by file stem (the caller closes them)."""
    summary, rows = load_run(run_dir)
    out = {"reward": reward_figure(summary, rows), "kl": kl_figure(summary, rows)}
    for name, fig in (("value_r2", value_figure(summary, rows)), ("quality", quality_figure(summary)),
                      ("optimum", optimum_figure(summary))):
        if fig is not None:
            out[name] = fig
    return out


def write_report(run_dir: str | Path) -> Path:
    """Write report.md and its PNGs (under report/) into run_dir; return report.md's path."""
    run_dir = Path(run_dir)
    summary, rows = load_run(run_dir)
    fig_dir = run_dir / FIGURES
    fig_dir.mkdir(exist_ok=True)
    lines = [f"# {summary['campaign']} / {summary['algorithm']} (seed {summary['seed']})", ""]
    lines += _summary_table(summary, rows) + _terms_table(summary)
    captions = {"reward": "Reward", "kl": "KL to the reference", "value_r2": "Value head",
                "quality": "Domain metrics (↑ higher is better, ↓ lower is better)",
                "optimum": "Against the estimated optimum"}
    for name, fig in figures(run_dir).items():
        fig.savefig(fig_dir / f"{name}.png", dpi=110)
        plt.close(fig)
        lines += [f"## {captions[name]}", "", f"![{name}]({FIGURES}/{name}.png)", ""]
    lines += ["## Designs", ""] + _gallery(run_dir, summary.get("design_files"), fig_dir)
    path = run_dir / REPORT
    path.write_text("\n".join(lines) + "\n")
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _summary_table(s: dict[str, Any], rows: list[dict[str, float]]) -> list[str]:
    init, final = s["reward_initial"], s["reward_final"]
    out = ["| | before | after |", "| --- | --- | --- |"]
    for stat in ("mean", "median", "top10"):
        out.append(f"| reward {stat} | {_fmt(init.get(stat))} | {_fmt(final.get(stat))} |")
    out += ["", "| | |", "| --- | --- |",
            f"| oracle calls (algorithm) | {s['oracle_calls']} of budget {_fmt(s.get('oracle_budget'))} |",
            f"| oracle calls (evaluation) | {s.get('eval_oracle_calls')} |",
            f"| AUC of the top 1 / 10 / 100 (PMO) | {_fmt(s.get('auc_top1'))} / {_fmt(s.get('auc_top10'))} / "
            f"{_fmt(s.get('auc_top100'))} over {s.get('unique_valid_designs')} unique valid designs |",
            f"| valid fraction (finite reward), before → after | {_fmt(s.get('valid_fraction_initial'))} → "
            f"{_fmt(s.get('valid_fraction'))} |",
            f"| KL to the reference | {_fmt(s['kl_to_reference'])} ({s.get('kl_note')}) |",
            f"| value R² (held out) | {_fmt(s.get('value_r2'))} |",
            f"| iterations | {s.get('iterations')} ({len(rows)} rows in metrics.csv) |",
            f"| processes | {s.get('processes', 1)} |",
            f"| wall time | {_fmt(s.get('wall_seconds'))} s |"]
    if "analytic" in s:
        a = s["analytic"]
        out.append(f"| analytic optimum | reward {_fmt(a.get('reward_optimum'))}, KL {_fmt(a.get('kl_optimum'))} |")
    if s.get("optimum") and s["optimum"].get("beta") is not None:
        o = s["optimum"]
        found = (f"J* {_fmt(o['j_star'])}, reward {_fmt(o['reward'])}, KL {_fmt(o['kl'])}" if o["trusted"]
                 else f"untrusted: {o['note']}")
        out.append(f"| estimated optimum at β = {_fmt(o['beta'])} | {found} (ESS {_fmt(o['ess'])}) |")
        out.append(f"| objective J = E[r] − β·KL | {_fmt(s.get('objective_j'))}; achievable gain reached "
                   f"{_fmt(s.get('achievable_gain_fraction'))} |")
    return out + [""]


def _terms_table(s: dict[str, Any]) -> list[str]:
    """The reward terms' mean raw oracle scores before and after, with units, the oracle's
    preferred direction (↑/↓) and the way the reward pushes it."""
    terms = s.get("reward_terms")
    if not terms:
        return []
    pushes = {1: "up", -1: "down", 0: "neither way"}
    out = ["| reward term (oracle) | units | better | reward pushes it | mean before | mean after |",
           "| --- | --- | --- | --- | --- | --- |"]
    before, after = s.get("components_initial") or {}, s.get("components_final") or {}
    for t in terms:
        better = arrow(t["higher_is_better"]).strip() or "–"
        out.append(f"| {t['name']} ({t['oracle']}) | {t['units'] or '–'} | {better} | {pushes[t['direction']]} | "
                   f"{_fmt(before.get(t['name']))} | {_fmt(after.get(t['name']))} |")
    return out + [""]


def _gallery(run_dir: Path, files: list[dict[str, str]] | None, fig_dir: Path) -> list[str]:
    """The design files as the model plugin described them (summary `design_files`):
    images, molecules (the final ones), a scatter of vectors, or a table of sequences."""
    if files is None:
        lines = ["summary.json does not describe the design files (a run made before it did), so there is "
                 "no gallery."]
    else:
        lines = []
        for kind, show in GALLERIES.items():
            described = [f for f in files if f["kind"] == kind]
            lines += show(run_dir, described, fig_dir) if described else []
        if not lines:
            lines = ["The model plugin describes no design file for a gallery."]
    written = sorted(p for p in run_dir.glob("designs_*") if p.is_file() or p.is_dir())
    lines += ["", "Files: " + ", ".join(f"[{p.name}]({p.name})" for p in written)]
    return lines


def _final(files: list[dict[str, str]]) -> list[dict[str, str]]:
    return [f for f in files if f["when"] == "final"]


def _image_gallery(run_dir: Path, files: list[dict[str, str]], fig_dir: Path) -> list[str]:
    lines: list[str] = []
    for f in files:
        lines += [f"{f['when']}:", "", f"![{Path(f['file']).stem}]({f['file']})", ""]
    return lines


def _molecules(run_dir: Path, files: list[dict[str, str]], fig_dir: Path) -> list[str]:
    return [line for f in _final(files) for line in _molecule_gallery(run_dir / f["file"], fig_dir, run_dir)]


def _vectors(run_dir: Path, files: list[dict[str, str]], fig_dir: Path) -> list[str]:
    with (run_dir / files[-1]["file"]).open() as fh:
        header = next(csv.reader(fh), [])
    if not {"x0", "x1"} <= set(header):
        return ["The design vectors have fewer than two coordinates (x0, x1): no scatter.", ""]
    _vector_scatter([run_dir / f["file"] for f in files], fig_dir / "designs.png")
    return [f"![designs]({FIGURES}/designs.png)", ""]


def _sequences(run_dir: Path, files: list[dict[str, str]], fig_dir: Path) -> list[str]:
    return [line for f in _final(files)[:1] for line in _sequence_table(run_dir / f["file"], run_dir)]


GALLERIES = {"images": _image_gallery, "molecules": _molecules, "vectors": _vectors, "sequences": _sequences}
"""How the report shows each kind of design file (vardbio.model.evaluation.GALLERY_KINDS)."""


def read_vectors(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, 2) first two coordinates and (n,) rewards (or None) of a vector designs CSV."""
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    xy = np.array([[float(r["x0"]), float(r["x1"])] for r in rows]).reshape(-1, 2)
    rewards = np.array([float(r["reward"]) for r in rows]) if rows and "reward" in rows[0] else None
    return xy, rewards


def _vector_scatter(paths: list[Path], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    for path, colour in zip(paths, ("tab:grey", "tab:red")):
        xy, _ = read_vectors(path)
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.4, color=colour,
                   label=path.stem.replace("designs_", ""), gid=path.stem)
    ax.set_xlabel("x0")
    ax.set_ylabel("x1")
    ax.set_title("designs: first two coordinates")
    ax.legend()
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _molecule_gallery(sdf: Path, fig_dir: Path, run_dir: Path) -> list[str]:
    """2D depictions of the best final molecules (by a 'reward' property when present)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem, Draw

    mols = [m for m in Chem.SDMolSupplier(str(sdf)) if m is not None]
    if not mols:
        return [f"{sdf.name} holds no readable molecule.", ""]

    def score(m) -> float:
        try:
            value = float(m.GetProp("reward"))
        except (KeyError, ValueError):
            return -math.inf
        return value if math.isfinite(value) else -math.inf

    best = sorted(mols, key=score, reverse=True)[:MAX_MOLECULES]
    flat = []
    for m in best:
        m2 = Chem.Mol(m)
        m2.RemoveAllConformers()
        AllChem.Compute2DCoords(m2)
        flat.append(m2)
    legends = [f"{score(m):.3g}" if math.isfinite(score(m)) else "" for m in best]
    image = Draw.MolsToGridImage(flat, molsPerRow=4, subImgSize=(220, 180), legends=legends)
    image.save(fig_dir / "molecules.png")
    smiles = [Chem.MolToSmiles(Chem.RemoveHs(m)) for m in best]
    lines = [f"Best {len(best)} of {len(mols)} final molecules (legend: reward):", "",
             f"![molecules]({FIGURES}/molecules.png)", "", "| SMILES | reward |", "| --- | --- |"]
    lines += [f"| `{s}` | {leg or '–'} |" for s, leg in zip(smiles, legends)]
    return lines + [""]


def _sequence_table(fasta: Path, run_dir: Path) -> list[str]:
    """A table of the final sequences: id, length, score from the header, linked structure."""
    records: list[tuple[str, str]] = []
    for line in fasta.read_text().splitlines():
        if line.startswith(">"):
            records.append((line[1:].strip(), ""))
        elif records:
            records[-1] = (records[-1][0], records[-1][1] + line.strip())
    structures = {p.stem: p for p in run_dir.rglob("*.pdb")}
    lines = [f"Final sequences from [{fasta.name}]({fasta.name}):", "",
             "| design | length | reward | sequence | structure |", "| --- | --- | --- | --- | --- |"]
    for header, seq in records[:50]:
        name = header.split()[0] if header else "?"
        found = re.search(r"reward[=:]\s*(\S+)", header)
        pdb = structures.get(name)
        link = f"[{pdb.name}]({os.path.relpath(pdb, run_dir)})" if pdb else "–"
        short = seq if len(seq) <= 60 else seq[:57] + "..."
        lines.append(f"| {name} | {len(seq)} | {found[1] if found else '–'} | `{short}` | {link} |")
    return lines + [""]
