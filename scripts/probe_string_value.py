"""Held-out R² of molecule_string value heads for a PMO task, on clean samples of a
checkpoint and on the same samples forward-noised as VARD's replay does, every head with
the same data and fitting budget.

    python scripts/probe_string_value.py --checkpoint models/weights/molecule_string.pt --task qed --n 800 \
        --heads conv transformer denoiser:train_layers=1 --inputs noisy denoised --data clean noised

A head is `kind[:key=value,...]` (the plugin's value-head options; values are parsed as
YAML scalars). With `--from-run runs/x` the designs and rewards are the first --n a VARD
campaign with `value_data: replay` already paid for (its checkpoint's replay; any oracle,
e.g. docking), instead of fresh samples scored with a PMO task.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from vardbio import registry
from vardbio.model.diffusion import Trajectory
from vardbio.value.fitting import ValueFitConfig, fit_value
from vardbio.value.heads import with_value_input
from vardbio.value.replay import ReplayBuffer
from vardbio_models.molecule_string.plugin import sample_states
from vardbio_oracles.pmo import PMOOracle

DEFAULT_OPTIONS = {"conv": {"hidden": 64, "depth": 3}, "transformer": {"hidden": 64, "depth": 2}}


def head_spec(text: str) -> tuple[str, dict]:
    """'kind[:key=value,...]' -> (label, value-head options with `kind`)."""
    kind, _, rest = text.partition(":")
    options = {"kind": kind, **DEFAULT_OPTIONS.get(kind, {})}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"head option '{item}' of '{text}' is not key=value")
        options[key] = yaml.safe_load(value)
    return text, options


def replayed_designs(run_dir: Path, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """The first n designs (n, L) and rewards (n,) in a VARD run's replay buffer."""
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    replay = state.get("algorithm", {}).get("replay")
    if not replay or replay.get("states") is None:
        raise SystemExit(f"{run_dir} has no replay: run VARD with algorithm.value_data=replay")
    return replay["states"][:n], np.asarray(replay["rewards"][:n], dtype=np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--task", default="qed")
    parser.add_argument("--from-run", default=None,
                        help="a VARD run directory (value_data: replay) whose scored designs to probe on")
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heads", nargs="+", default=["conv", "transformer"])
    parser.add_argument("--inputs", nargs="+", default=["noisy", "denoised"], choices=["noisy", "denoised"])
    parser.add_argument("--data", nargs="+", default=["noised"], choices=["clean", "noised"],
                        help="clean: the samples themselves (t = 0); noised: forward-noised to --levels levels")
    parser.add_argument("--levels", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    plugin = registry.load("model", "molecule_string")
    model = plugin.load({"sampling_steps": args.steps}, checkpoint=args.checkpoint).eval()
    model.requires_grad_(False)
    if args.from_run:
        states, rewards = replayed_designs(Path(args.from_run), args.n)
        source = f"{args.from_run} (replay)"
    else:
        states = sample_states(model, args.n, torch.Generator().manual_seed(args.seed))
        rewards = PMOOracle(args.task).score(model.decode(states)).values
        source = args.task
    print(f"{source}: {len(rewards)} designs, reward mean {np.nanmean(rewards):.3f} sd {np.nanstd(rewards):.3f}")
    config = ValueFitConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, lr=args.lr)
    for data in args.data:
        if data == "clean":
            traj, times = Trajectory(states[None]), [0.0]
        else:
            buffer = ReplayBuffer()
            buffer.add(states, None, rewards)
            traj, times = buffer.noised(model.process, args.levels, torch.Generator().manual_seed(args.seed))
        for label, options in map(head_spec, args.heads):
            for value_input in args.inputs:
                torch.manual_seed(args.seed)
                head = with_value_input(plugin.value_head(model, dict(options)), value_input, model)
                start = time.perf_counter()
                report = fit_value(head, traj, rewards, times, config, generator=torch.Generator().manual_seed(args.seed))
                wall = time.perf_counter() - start
                buckets = " ".join(f"{r:.2f}" for r in report.r2_per_bucket)
                extra = "" if data == "clean" else f" (per noise fifth, clean first: {buckets})"
                print(f"{data:>6} {label:>28} {value_input:>8}: R² {report.r2:.3f}{extra}; "
                      f"best epoch {report.best_epoch}, {wall:.0f} s", flush=True)


if __name__ == "__main__":
    main()
