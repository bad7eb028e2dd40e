"""How well does a backbone value head predict secondary structure from the noisy state x_t,
and how well from the reference model's denoised estimate x̂_0(x_t)? Samples designs of the
shipped (or given) backbone model, scores them with DSSP helix and strand fractions and
soft_strand, fits the campaign's value head on every state of every chain with each input,
and prints held-out R² overall and per noise-level bucket (low noise first).

    python scripts/probe_value_input.py [--designs 256] [--checkpoint P] [--sampling-steps 25]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from vardbio.model.diffusion import Trajectory
from vardbio.value import ValueFitConfig, fit_value, with_value_input
from vardbio_models.protein_backbone import plugin
from vardbio_oracles.structure import SecondaryStructure, SoftStrand


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--designs", type=int, default=256)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--sampling-steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = plugin.load({"sampling_steps": args.sampling_steps, "length": 32}, args.checkpoint).eval()
    reference = model.frozen_copy()
    generator = torch.Generator().manual_seed(args.seed)
    chunks = [model.rollout(min(64, args.designs - i), generator) for i in range(0, args.designs, 64)]
    traj = Trajectory(torch.cat([c.states for c in chunks], 1))
    designs = model.decode(traj.final)
    times = [model.process.time(k) for k in range(model.num_steps + 1)]
    # the protein_helix / protein_sheet campaigns' value-fit settings
    config = ValueFitConfig(epochs=8, patience=3, batch_size=512, lr=3e-3)
    print(f"{len(designs)} designs, {model.num_steps} sampling steps; R² held out (per bucket, low noise first)")
    for name, oracle in (("helix fraction", SecondaryStructure("helix")),
                         ("strand fraction", SecondaryStructure("strand")), ("soft_strand", SoftStrand())):
        rewards = np.asarray(oracle.score(designs).values, dtype=float)
        for value_input in ("noisy", "denoised"):
            torch.manual_seed(0)
            head = with_value_input(plugin.value_head(model, {"hidden": 32, "layers": 2}), value_input, reference)
            report = fit_value(head, traj, rewards, times, config, generator=torch.Generator().manual_seed(0))
            buckets = " ".join(f"{r:.2f}" for r in report.r2_per_bucket)
            print(f"{name:16s} {value_input:9s} R² {report.r2:.3f}   [{buckets}]", flush=True)


if __name__ == "__main__":
    main()
