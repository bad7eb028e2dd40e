"""Held-out R² of protein_sequence value heads for the hmm_family bit score (BENCHMARKS.md,
protein_family): n designs of the shipped model, scored against PF02826, forward-noised to
16 levels as VARD's replay does, fitted with each head of --heads (by default the conv
head in two sizes) on each input of --inputs (noisy and denoised).

    python scripts/probe_family_value.py --n 512
    python scripts/probe_family_value.py --n 512 --heads conv:hidden=32,depth=2 denoiser:train_layers=1 --inputs noisy
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vardbio import registry
from vardbio.value.fitting import ValueFitConfig, fit_value
from vardbio.value.heads import with_value_input
from vardbio.value.replay import ReplayBuffer
from vardbio_oracles.hmm import HMMFamily

from probe_string_value import head_spec  # scripts/ is on the path when run as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="designs (a multiple of 128)")
    parser.add_argument("--hmm", default="PF02826")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heads", nargs="+", default=["conv:hidden=32,depth=2", "conv:hidden=64,depth=3,kernel=5"],
                        help="value heads as kind[:key=value,...] (kind conv, transformer or denoiser)")
    parser.add_argument("--inputs", nargs="+", default=["noisy", "denoised"], choices=["noisy", "denoised"])
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    plugin = registry.load("model", "protein_sequence")
    model = plugin.load({"length": 64, "sampling_steps": 32}).eval()
    g = torch.Generator().manual_seed(args.seed)
    states = torch.cat([model.rollout(128, g).final for _ in range(max(1, args.n // 128))])
    bits = HMMFamily(args.hmm).score(model.decode(states)).values
    print(f"{len(bits)} designs: bits mean {bits.mean():.2f} sd {bits.std():.2f}")
    buffer = ReplayBuffer()
    buffer.add(states, None, bits)
    traj, times = buffer.noised(model.process, 16, g)
    for label, options in map(head_spec, args.heads):
        for value_input in args.inputs:
            torch.manual_seed(args.seed)
            start = time.time()
            head = with_value_input(plugin.value_head(model, options), value_input, model)
            report = fit_value(head, traj, buffer.rewards, times,
                               ValueFitConfig(epochs=30, patience=5, batch_size=args.batch_size, lr=args.lr),
                               generator=torch.Generator().manual_seed(args.seed))
            buckets = " ".join(f"{r:.2f}" for r in report.r2_per_bucket)
            print(f"{label} {value_input:>8}: R² {report.r2:.3f} (per noise fifth, clean first: {buckets}) "
                  f"{time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
