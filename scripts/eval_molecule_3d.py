"""The 3D generation metrics of molecule-model checkpoints (issue 14, item 5) on N samples each.

    python scripts/eval_molecule_3d.py CHECKPOINT [CHECKPOINT ...] [--n 1000] [--seed 0]
        [--batch 250] [--out results.json] [--figure curve.png] [--sdf designs.sdf]
        [--sampling-steps K] [--no-energy] [--training-checkpoint PATH] [--threads 1]

For each checkpoint: n samples (generator seeded with --seed, drawn in batches), then the
plugin's own figures (vardbio_models.molecule.metrics): atom and molecule stability,
validity, connected validity, uniqueness, novelty, diversity (sample_quality); QED, SA and
MMFF strain per heavy atom of the valid designs (property_figures: mean, median,
quartiles); the PoseBusters intramolecular checks (posebusters_figures: pass rate over the
valid designs and over all samples, and per check). QED and SA of the training set (its
molecules with at most the model's heavy atoms) are printed alongside. The training step
is the checkpoint's pretrain metrics' total, else the _step<N> of its name.

Novelty and the training set's figures use the SMILES the checkpoint records; a periodic
checkpoint (molecule_step<N>.pt) records none, so it uses those of another checkpoint given
that does (or --training-checkpoint), and novelty is left out when none does.

Writes one JSON (default runs/eval_molecule_3d/<name>.json); with several checkpoints and
--figure a PNG learning curve (validity, connected validity, atom stability and PoseBusters
pass rate against training steps); with --sdf the last checkpoint's valid designs as SDF
(and a CSV beside it with every design and why it failed, the plugin's design files).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rdkit import Chem
from tqdm import tqdm

from vardbio.model.checkpoint import read_checkpoint
from vardbio.model.evaluation import score_in_process
from vardbio_models.molecule import plugin, training_smiles
from vardbio_models.molecule.metrics import (
    PROPERTIES, posebusters_figures, property_figures, sample_final_states, sample_quality,
)

DEFAULT_OUT = Path("runs/eval_molecule_3d")
TRAINING_PROPERTIES = ("qed", "sa")
CURVE = {"validity": "validity", "connected_validity": "connected validity", "atom_stability": "atom stability",
         "posebusters_pass_all_samples": "PoseBusters pass (all samples)",
         "posebusters_pass": "PoseBusters pass (valid designs)"}


def _string_eval() -> Any:
    """scripts/eval_molecule_string.py as a module (checkpoint_step, _clean)."""
    spec = importlib.util.spec_from_file_location("eval_molecule_string", Path(__file__).with_name(
        "eval_molecule_string.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_STRING = _string_eval()
checkpoint_step, json_safe = _STRING.checkpoint_step, _STRING._clean


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="molecule-model checkpoints, in any order")
    ap.add_argument("--n", type=int, default=1000, help="samples per checkpoint (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=250, help="samples per rollout batch")
    ap.add_argument("--sampling-steps", type=int, default=None, help="reverse steps (default: the model's)")
    ap.add_argument("--no-energy", action="store_true", help="skip PoseBusters' energy check (the slowest)")
    ap.add_argument("--training-checkpoint", default=None,
                    help="the checkpoint whose recorded training SMILES every checkpoint is compared with")
    ap.add_argument("--out", default=None, help="JSON to write")
    ap.add_argument("--figure", default=None, help="PNG learning curve (with several checkpoints)")
    ap.add_argument("--sdf", default=None, help="SDF of the last checkpoint's valid designs")
    ap.add_argument("--threads", type=int, default=1, help="torch and PoseBusters threads")
    return ap.parse_args(argv)


class TrainingSets:
    """The training SMILES each checkpoint records, read once per dataset, and the QED and SA
    figures of the molecules among them within the model's heavy-atom limit."""

    def __init__(self, paths: list[str], fallback: str | None):
        self.extras = {p: read_checkpoint(p).get("extra", {}) for p in paths}
        recorded = [p for p in ([fallback] if fallback else []) + paths if self._dataset(p)]
        self.fallback = recorded[0] if recorded else None
        self.forced = fallback is not None
        self._sets: dict[str, tuple[set[str], dict[str, Any]]] = {}

    def _extra(self, path: str) -> dict[str, Any]:
        if path not in self.extras:
            self.extras[path] = read_checkpoint(path).get("extra", {})
        return self.extras[path]

    def _dataset(self, path: str) -> dict[str, Any] | None:
        return (self._extra(path).get("pretrain_metrics") or {}).get("dataset")

    def source(self, path: str) -> str | None:
        """The checkpoint whose training set `path` is compared with."""
        return path if not self.forced and self._dataset(path) else self.fallback

    def of(self, path: str) -> tuple[set[str] | None, dict[str, Any] | None]:
        """(training SMILES, {qed, sa figures, molecules, max_atoms}) for `path`, (None, None)
        when no checkpoint records its training set."""
        source = self.source(path)
        if source is None:
            return None, None
        record = self._dataset(source)
        key = json.dumps(record, sort_keys=True)
        if key not in self._sets:
            smiles = training_smiles(self._extra(source))
            heavy = [s for s in smiles if Chem.MolFromSmiles(s).GetNumHeavyAtoms() <= int(record["max_atoms"])]
            figures = property_figures(heavy, score_in_process, TRAINING_PROPERTIES)
            self._sets[key] = (smiles, {**figures, "molecules": len(heavy), "max_atoms": record["max_atoms"],
                                        "from": source})
        return self._sets[key]


def evaluate(path: str, args: argparse.Namespace, training: TrainingSets) -> tuple[dict[str, Any], list[Any]]:
    """The metrics of n samples of one checkpoint and its designs."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    step, train_seconds = checkpoint_step(path)
    options = {} if args.sampling_steps is None else {"sampling_steps": args.sampling_steps}
    model = plugin.load(options, checkpoint=path).eval()
    generator = torch.Generator().manual_seed(args.seed)
    parts = [sample_final_states(model, min(args.batch, args.n - start), generator, args.batch)
             for start in tqdm(range(0, args.n, args.batch), desc=f"sampling {Path(path).name}", unit="batch")]
    states, masks = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    seconds["sampling"] = time.perf_counter() - started
    t = time.perf_counter()
    smiles, reference = training.of(path)
    seconds["training_set"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics = sample_quality(model.process, states, masks, smiles)
    designs = model.decode(states, masks)
    seconds["quality"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics["properties"] = {}
    for name in tqdm(PROPERTIES, desc="properties", unit="property"):
        metrics["properties"].update(property_figures(designs, score_in_process, [name]))
    seconds["properties"] = time.perf_counter() - t
    t = time.perf_counter()
    busters = posebusters_figures(designs, energy=not args.no_energy, threads=args.threads, progress=True)
    metrics.update(posebusters_pass=busters["pass_rate"], posebusters_pass_all_samples=busters["pass_rate_all_samples"],
                   posebusters=busters)
    seconds["posebusters"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - started
    result = {"checkpoint": str(path), "step": step, "train_seconds": train_seconds, "n": args.n, "seed": args.seed,
              "sampling_steps": model.num_steps, "training_set": reference,
              "training_smiles_from": training.source(path), "metrics": metrics,
              "seconds": {k: round(v, 1) for k, v in seconds.items()}}
    return result, designs


def table(result: dict[str, Any]) -> str:
    """The headline figures of one checkpoint, the training set's QED and SA alongside."""
    m, ref = result["metrics"], result["training_set"] or {}
    rows = [("metric", "value", "training set")]
    for key in ("atom_stability", "molecule_stability", "validity", "connected_validity", "uniqueness", "novelty",
                "diversity", "posebusters_pass", "posebusters_pass_all_samples"):
        if key in m:
            rows.append((key, f"{m[key]:.4f}", ""))
    for check, rate in m["posebusters"]["checks"].items():
        rows.append((f"  pb: {check}", f"{rate:.4f}", ""))
    for name, figures in m["properties"].items():
        for stat in ("mean", "median"):
            theirs = ref.get(name, {}).get(stat)
            rows.append((f"{name} {stat}", f"{figures[stat]:.4f}", "" if theirs is None else f"{theirs:.4f}"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, width)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    head = (f"{result['checkpoint']}: step {result['step']}, n {result['n']}, seed {result['seed']}, "
            f"{result['sampling_steps']} sampling steps, seconds {result['seconds']}")
    return "\n".join([head, *lines])


def plot_curve(results: list[dict[str, Any]], path: Path) -> None:
    """Validity, connected validity, atom stability and PoseBusters pass rates against steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in results if r["step"] is not None), key=lambda r: r["step"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in CURVE.items():
        ax.plot([r["step"] for r in rows], [r["metrics"][key] for r in rows], marker="o", label=label,
                linestyle="--" if key == "posebusters_pass" else "-")
    ax.set_xlabel("training steps")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"3D molecule model, {rows[0]['n'] if rows else 0} samples per checkpoint")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.n < 1 or args.batch < 1:
        raise SystemExit("--n and --batch must be >= 1")
    torch.set_num_threads(args.threads)
    name = Path(args.checkpoints[0]).stem if len(args.checkpoints) == 1 else "curve"
    out = Path(args.out) if args.out else DEFAULT_OUT / f"{name}_n{args.n}_seed{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    training = TrainingSets(args.checkpoints, args.training_checkpoint)
    results, designs = [], []
    for path in args.checkpoints:
        result, designs = evaluate(path, args, training)
        results.append(result)
        print(table(result), flush=True)
    out.write_text(json.dumps(json_safe({"checkpoints": results, "energy_check": not args.no_energy,
                                         "torch_threads": torch.get_num_threads()}), indent=1))
    print(f"wrote {out}")
    if args.figure and len(results) > 1:
        plot_curve(results, Path(args.figure))
        print(f"wrote {args.figure}")
    elif args.figure:
        print("no learning curve from one checkpoint")
    if args.sdf:
        written = plugin.write_designs(designs, None, Path(args.sdf).with_suffix(""))
        print("wrote " + ", ".join(map(str, written)))
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
