"""MOSES sample-quality metrics of the molecule_string model (definitions and caveats in
models/molecule_string/moses_metrics.py).

    python scripts/eval_molecule_string.py --checkpoint models/weights/molecule_string.pt \\
        [--n 10000] [--seed 0] [--out results.json] [--threads 1]
    python scripts/eval_molecule_string.py --samples samples.csv [--out results.json]
    python scripts/eval_molecule_string.py --curve 'models/weights/molecule_string_step*.pt' \\
        [--n 1000] [--out curve.csv]

One checkpoint: draws n samples (seed fixed), writes them to <out stem>_samples.csv (smiles,
selfies; smiles empty where decoding failed), computes the metrics, prints a table and writes
the JSON. --samples evaluates the first column of a SMILES file instead. --curve evaluates
every checkpoint matching a glob at a smaller n (default 1,000; FCD included, and biased
upward at small n) and writes a CSV (one row per checkpoint, by training step) and a PNG.

Reference: the MOSES test split (statistics computed once, ~15 min on one core, and cached
under data/molecules/processed/); 'shipped:test' uses the statistics that molsets ships
(what moses.get_all_metrics uses). Novelty: against the curated training set of the model
(`Novelty`) and against the raw MOSES training SMILES (`Novelty/moses_train`, as MOSES does).
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vardbio.model.checkpoint import read_checkpoint
from vardbio_models.molecule_string import moses_metrics as mm
from vardbio_models.molecule_string.data import StringDatasetParams, build_dataset, read_smiles

DEFAULT_OUT = Path("runs/eval_molecule_string")
CURVE_COLUMNS = ["step", "train_seconds", "checkpoint", "n", "valid", "unique", "Novelty", "FCD/Test", "SNN/Test",
                 "Frag/Test", "Scaf/Test", "IntDiv", "IntDiv2", "Filters", "QED_mean", "SA_mean", "logP_mean",
                 "weight_mean", "heavy_atoms_mean", "QED", "SA", "logP", "weight", "pad_inside_fraction",
                 "eval_seconds"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="a molecule_string checkpoint to sample from")
    what.add_argument("--samples", help="a SMILES file to evaluate (first column; '' = failed sample)")
    what.add_argument("--curve", help="glob of checkpoints for a learning curve")
    ap.add_argument("--n", type=int, default=None, help="samples (default 10000; 1000 with --curve)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON (CSV with --curve) to write")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--batch", type=int, default=256, help="samples per rollout batch")
    ap.add_argument("--reference", default="moses:test",
                    help="moses:test, moses:test_scaffolds, shipped:test, shipped:test_scaffolds or a SMILES file")
    ap.add_argument("--reference-max", type=int, default=0, help="use the first N reference molecules (0 = all)")
    ap.add_argument("--training", default="curated",
                    help="novelty set: 'curated' (the model's training set) or a SMILES file")
    ap.add_argument("--no-moses-train", action="store_true", help="skip novelty against the raw MOSES train split")
    ap.add_argument("--no-fcd", action="store_true", help="skip FCD (no ChemNet)")
    ap.add_argument("--no-snn", action="store_true", help="skip SNN (n x 176k Tanimoto similarities)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a sampling option of the model (repeatable), e.g. token_temperature=0.7 or sampling_steps=32")
    args = ap.parse_args(argv)
    args.options = model_options(args.option)
    return args


def model_options(items: list[str]) -> dict[str, Any]:
    """{key: number or string} from KEY=VALUE strings; ValueError naming a malformed one."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            options[key] = int(value)
        except ValueError:
            try:
                options[key] = float(value)
            except ValueError:
                options[key] = value
    return options


class Context:
    """What every evaluation needs, loaded once: reference statistics, novelty sets, ChemNet."""

    def __init__(self, args: argparse.Namespace):
        t = time.perf_counter()
        self.chemnet = None if args.no_fcd else mm.ChemNet()
        if args.reference.startswith("shipped:"):
            self.reference = mm.shipped_reference(args.reference.split(":", 1)[1])
        else:
            self.reference = mm.reference_statistics(args.reference, args.reference_max, fcd=not args.no_fcd)
        if args.training == "curated":
            self.training = set(build_dataset(StringDatasetParams()).smiles)
            self.training_name = "curated MOSES train (StringDatasetParams())"
        else:
            self.training = {c for c in map(mm.canonical, read_smiles(args.training)) if c}
            self.training_name = args.training
        self.extra = {} if args.no_moses_train else {"moses_train": set(read_smiles("moses:train"))}
        self.snn = not args.no_snn
        self.seconds = round(time.perf_counter() - t, 1)

    def evaluate(self, smiles: list[str]) -> tuple[dict[str, Any], dict[str, float]]:
        return mm.moses_metrics(smiles, self.reference, self.training, self.extra, chemnet=self.chemnet,
                                snn=self.snn)


def checkpoint_step(path: str | Path) -> tuple[int | None, float | None]:
    """(training step, training seconds) of a checkpoint: pretrain_metrics' totals, else the
    _step<N> of the file name (which counts earlier runs), else pretrain_progress."""
    extra = read_checkpoint(path).get("extra", {})
    final = extra.get("pretrain_metrics") or {}
    if "total_train_steps" in final:
        return int(final["total_train_steps"]), final.get("total_train_seconds")
    progress = extra.get("pretrain_progress") or {}
    named = re.search(r"_step(\d+)\.pt$", str(path))
    step = int(named.group(1)) if named else progress.get("step")
    return step, progress.get("seconds")


def draw(checkpoint: str | Path, n: int, seed: int, batch: int,
         options: dict[str, Any] | None = None) -> tuple[list[str], list[str], float]:
    """(SMILES, SELFIES, fraction with PAD inside) of n samples of a checkpoint, sampled with
    the model options given (e.g. token_temperature)."""
    from vardbio import registry
    from vardbio_models.molecule_string.plugin import pad_inside_fraction, sample_states
    from vardbio_models.molecule_string.vocab import Vocabulary

    model = registry.load("model", "molecule_string").load(dict(options or {}), checkpoint=checkpoint).eval()
    states = sample_states(model, n, torch.Generator().manual_seed(seed), batch=batch)
    selfies = Vocabulary(model.spec["options"]["tokens"]).selfies(states)
    return mm.smiles_of(model.decode(states)), selfies, pad_inside_fraction(states)


def read_samples(path: str | Path) -> list[str]:
    """First field of every line of a SMILES or samples file, '' kept (a failed sample);
    '#' comments and a 'smiles' header skipped."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        first = line.split(",")[0].strip().split()
        first = first[0] if first else ""
        if first.startswith("#") or (i == 0 and first.lower() == "smiles"):
            continue
        out.append(first)
    return out


def write_samples(path: Path, smiles: list[str], selfies: list[str]) -> None:
    with path.open("w", newline="") as fh:
        rows = csv.writer(fh)
        rows.writerow(["smiles", "selfies"])
        rows.writerows(zip(smiles, selfies))


def _clean(value: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> float."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def table(metrics: dict[str, Any], test: dict[str, float]) -> str:
    """The metrics as a plain-text table, with the test set's property means alongside."""
    rows = [("metric", "value", "test set")]
    for key, value in metrics.items():
        if key in ("notes",) or isinstance(value, (list, dict)):
            continue
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        label = f"{key} (W1)" if key in mm.PROPERTIES else key
        rows.append((label, shown, f"{test[key]:.4f}" if key in test else ""))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, width)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines + [f"note: {note}" for note in metrics.get("notes", [])])


def evaluate_one(args: argparse.Namespace, ctx: Context) -> dict[str, Any]:
    n = args.n or 10000
    out = Path(args.out) if args.out else DEFAULT_OUT / (
        f"{Path(args.checkpoint or args.samples).stem}_n{n}_seed{args.seed}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict[str, Any] = {"n": n, "seed": args.seed}
    extra: dict[str, Any] = {}
    if args.checkpoint:
        step, train_seconds = checkpoint_step(args.checkpoint)
        result.update(checkpoint=str(args.checkpoint), step=step, train_seconds=train_seconds, options=args.options)
        smiles, selfies, extra["pad_inside_fraction"] = draw(args.checkpoint, n, args.seed, args.batch, args.options)
        sample_file = out.with_name(out.stem + "_samples.csv")
        write_samples(sample_file, smiles, selfies)
        result["samples_file"] = str(sample_file)
    else:
        smiles = read_samples(args.samples)[: args.n or None]
        result.update(samples=str(args.samples), n=len(smiles))
    sampling = time.perf_counter() - started
    metrics, seconds = ctx.evaluate(smiles)
    metrics.update(extra)
    seconds = {"setup": ctx.seconds, "sampling": round(sampling, 1), **seconds,
               "total": round(time.perf_counter() - started, 1)}
    test = ctx.reference.means()
    result.update(metrics=metrics, test_means=test, seconds=seconds,
                  reference={**ctx.reference.record, "molecules": ctx.reference.smiles},
                  training=ctx.training_name,
                  versions={"rdkit": mm.rdBase.rdkitVersion, "fcd_torch": mm._version("fcd-torch"),
                            "torch": torch.__version__, "molsets": mm._version("molsets")})
    print(table(metrics, test))
    print(f"seconds: {seconds}")
    out.write_text(json.dumps(_clean(result), indent=1))
    print(f"wrote {out}")
    return result


def evaluate_curve(args: argparse.Namespace, ctx: Context) -> list[dict[str, Any]]:
    n = args.n or 1000
    paths = sorted(glob.glob(args.curve))
    if not paths:
        raise SystemExit(f"no checkpoint matches {args.curve}")
    out = Path(args.out) if args.out else DEFAULT_OUT / f"curve_n{n}_seed{args.seed}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in paths:
        started = time.perf_counter()
        step, train_seconds = checkpoint_step(path)
        smiles, _, pad_inside = draw(path, n, args.seed, args.batch, args.options)
        metrics, _ = ctx.evaluate(smiles)
        row = {"step": step, "train_seconds": train_seconds, "checkpoint": path, "n": n, **metrics,
               "pad_inside_fraction": pad_inside, "eval_seconds": round(time.perf_counter() - started, 1)}
        rows.append(row)
        print(f"{path}: step {step} valid {row['valid']:.3f} unique {row['unique']:.3f} "
              f"FCD {row.get('FCD/Test', float('nan')):.2f} IntDiv {row['IntDiv']:.3f} "
              f"QED {row['QED_mean']:.3f} SA {row['SA_mean']:.2f} ({row['eval_seconds']} s)", flush=True)
    rows.sort(key=lambda r: (r["step"] is None, r["step"] or 0))
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, CURVE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows([{k: _clean(r.get(k)) for k in CURVE_COLUMNS} for r in rows])
    plot_curve(rows, ctx.reference.means(), out.with_suffix(".png"), n)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return rows


def plot_curve(rows: list[dict[str, Any]], test: dict[str, float], path: Path, n: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    panels = [("FCD/Test (lower is better)", ["FCD/Test"], True),
              ("fractions", ["valid", "unique", "Novelty", "Filters"], False),
              ("similarity / diversity", ["SNN/Test", "Frag/Test", "Scaf/Test", "IntDiv"], False),
              ("W1 to test (logP, SA, QED)", ["logP", "SA", "QED"], True),
              ("QED mean", ["QED_mean"], False), ("SA mean", ["SA_mean"], False),
              ("logP mean", ["logP_mean"], False), ("MW mean", ["weight_mean"], False)]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, (title, keys, log) in zip(axes.flat, panels):
        for key in keys:
            values = [r.get(key, float("nan")) for r in rows]
            ax.plot(steps, values, marker="o", label=key)
            if key.endswith("_mean") and key in test:
                ax.axhline(test[key], color="k", ls="--", lw=1, label="MOSES test")
        if log:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.legend(fontsize=7)
    fig.suptitle(f"molecule_string samples vs training step (n={n} per checkpoint; FCD is biased upward at small n)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    ctx = Context(args)
    return evaluate_curve(args, ctx) if args.curve else evaluate_one(args, ctx)


if __name__ == "__main__":
    main(sys.argv[1:])
