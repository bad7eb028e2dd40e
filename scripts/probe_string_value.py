"""Held-out R² of molecule_string value heads (conv and transformer, noisy and denoised
input) for a PMO task, on samples of a checkpoint forward-noised as VARD's replay does.

    python scripts/probe_string_value.py --checkpoint models/weights/molecule_string.pt --task qed --n 800
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from vardbio import registry
from vardbio.value.fitting import ValueFitConfig, fit_value
from vardbio.value.heads import with_value_input
from vardbio.value.replay import ReplayBuffer
from vardbio_models.molecule_string.plugin import sample_states
from vardbio_oracles.pmo import PMOOracle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--task", default="qed")
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    plugin = registry.load("model", "molecule_string")
    model = plugin.load({"sampling_steps": args.steps}, checkpoint=args.checkpoint).eval()
    g = torch.Generator().manual_seed(args.seed)
    states = sample_states(model, args.n, g)
    rewards = PMOOracle(args.task).score(model.decode(states)).values
    buffer = ReplayBuffer()
    buffer.add(states, None, rewards)
    traj, times = buffer.noised(model.process, 16, g)
    print(f"{args.task}: {args.n} samples, reward mean {np.nanmean(rewards):.3f} sd {np.nanstd(rewards):.3f}")
    for kind, options in (("conv", {"hidden": 64, "depth": 3}), ("transformer", {"hidden": 64, "depth": 2})):
        for value_input in ("noisy", "denoised"):
            head = with_value_input(plugin.value_head(model, {"kind": kind, **options}), value_input, model)
            report = fit_value(head, traj, buffer.rewards, times, ValueFitConfig(epochs=30, patience=5, batch_size=1024),
                               generator=torch.Generator().manual_seed(args.seed))
            buckets = " ".join(f"{r:.2f}" for r in report.r2_per_bucket)
            print(f"{kind:>11} {value_input:>8}: R² {report.r2:.3f} (per noise fifth, clean first: {buckets})")


if __name__ == "__main__":
    main()
