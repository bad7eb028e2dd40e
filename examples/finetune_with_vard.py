"""Fine-tune the shipped 2-D toy model toward a reward written as a plain Python function.

    python examples/finetune_with_vard.py                 # about 15 s on one CPU core
    python examples/finetune_with_vard.py --iterations 5  # a quick check

The oracle is an ordinary function of one design (here a 2-vector); vardbio only ever uses
its scores as regression labels for the value head, so it could call any black box.
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from vardbio.algorithms import VARD, VARDConfig
from vardbio.algorithms.base import AlgorithmContext, reward_stats
from vardbio.reward import FunctionOracle, Reward, RewardTerm
from vardbio_models.toy import plugin


def distance_to_target(x: np.ndarray) -> float:
    """Higher is better: minus the squared distance of the design to the point (2, 1)."""
    return -float((x[0] - 2.0) ** 2 + (x[1] - 1.0) ** 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--value-samples", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("runs/example_finetune"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = plugin.load({"dataset": "gaussian2"})            # the shipped pretrained checkpoint
    reference = model.frozen_copy()                          # p_ref, kept fixed
    reward = Reward([RewardTerm(FunctionOracle(distance_to_target))])
    generator = torch.Generator().manual_seed(0)
    ctx = AlgorithmContext(model, reference, reward, lambda: plugin.value_head(reference, {}), generator)
    vard = VARD(VARDConfig(beta=0.5, lr=1e-3, batch_size=64, value_samples=args.value_samples), ctx)

    fit = vard.setup()["value_fit"]                          # phase 1: the only oracle calls
    print(f"value head fitted on {fit['n_trajectories']} scored rollouts, held-out R² {fit['r2']:.3f}")
    for i in range(args.iterations):                         # phase 2: no oracle calls
        metrics = vard.iteration(i)
    print(f"last iteration: value {metrics['value_mean']:.3f}, per-step KL {metrics['kl_step_mean']:.4f}")
    print(f"oracle calls for fine-tuning: {reward.ledger.total_calls}")

    before = reference.rollout(256, torch.Generator().manual_seed(1))
    after = model.rollout(256, torch.Generator().manual_seed(1))
    for name, m, traj in (("pretrained", reference, before), ("fine-tuned", model, after)):
        stats = reward_stats(reward(m.decode(traj.final)).values)
        print(f"{name:>10}: mean reward {stats['mean']:.3f}, top decile {stats['top10']:.3f}")
    designs = model.decode(after.final)
    files = plugin.write_designs(designs, reward(designs).values, args.out / "designs")
    print(f"wrote {files[0]}")


if __name__ == "__main__":
    main()
