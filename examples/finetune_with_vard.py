"""Fine-tune the shipped 2-D toy model toward a reward written as a plain Python function.

    python examples/finetune_with_vard.py                 # about 15 s on one CPU core
    python examples/finetune_with_vard.py --iterations 5  # a quick check

The oracle is an ordinary function of one design (here a 2-vector); vardbio only ever uses
its scores as regression labels for the value head, so it could call any black box. The
Trainer writes what `vardbio run` writes (summary.json, metrics.csv, designs, report.md,
model_final.pt) into --out, and running the script again resumes or reprints the result.
"""
import argparse
from pathlib import Path

import numpy as np
import torch

import vardbio


def distance_to_target(x: np.ndarray) -> float:
    """Higher is better: minus the squared distance of the design to the point (2, 1)."""
    return -float((x[0] - 2.0) ** 2 + (x[1] - 1.0) ** 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--value-samples", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("runs/example_finetune"))
    args = parser.parse_args()

    vard = vardbio.VARDConfig(beta=0.5, lr=1e-3, batch_size=64, value_samples=args.value_samples)
    trainer = vardbio.Trainer(
        "toy", distance_to_target, vard,
        model_options={"dataset": "gaussian2"},   # the shipped 2-D checkpoint
        iterations=args.iterations, eval_samples=256, out_dir=args.out, seed=0,
        torch_threads=1, progress=False)
    summary = trainer.train()   # phase 1 (value head) calls the oracle; phase 2 does not

    print(f"value head fitted on {args.value_samples} scored rollouts, held-out R² {summary['value_r2']:.3f}")
    print(f"oracle calls for fine-tuning: {summary['oracle_calls']} "
          f"(evaluation before and after: {summary['eval_oracle_calls']})")
    for name, key in (("pretrained", "reward_initial"), ("fine-tuned", "reward_final")):
        stats = summary[key]
        print(f"{name:>10}: mean reward {stats['mean']:.3f}, top decile {stats['top10']:.3f}")
    print(f"KL to the pretrained model {summary['kl_to_reference']:.3f} nats")

    # trainer.model is the fine-tuned model: draw more designs from it
    traj = trainer.model.rollout(4, torch.Generator().manual_seed(1))
    for design in trainer.model.decode(traj.final):
        print(f"design {np.round(design, 2)} scores {distance_to_target(design):.3f}")
    print(f"wrote {args.out / 'designs_final.csv'} and {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
