"""Sample a (fine-tuned) toy checkpoint and score the designs with a function oracle run by
the oracle runtime: a process pool, a timeout per design and a SQLite cache.

    python examples/sample_and_score.py                                   # the shipped model
    python examples/sample_and_score.py --checkpoint runs/example_campaign/model_final.pt
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from vardbio.reward import FunctionOracle, OracleRuntime, Reward, RewardTerm
from vardbio_models.toy import plugin


def norm(x: np.ndarray) -> float:
    """The design's Euclidean norm (defined at module level, so worker processes can load it)."""
    return float(np.linalg.norm(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="a model_final.pt (default: shipped)")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("runs/example_samples"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = plugin.load({}, args.checkpoint).eval()   # options come from the checkpoint
    traj = model.rollout(args.n, torch.Generator().manual_seed(0))
    designs = model.decode(traj.final)
    args.out.mkdir(parents=True, exist_ok=True)
    runtime = OracleRuntime(executor="process", max_workers=2, timeout=30.0,
                            cache=args.out / "cache.sqlite", progress=None)
    try:
        reward = Reward([RewardTerm(FunctionOracle(norm), weight=-1.0)], runtime)  # prefer small norms
        first = reward(designs)
        again = reward(designs)                           # answered by the cache
    finally:
        runtime.close()
    if not np.array_equal(first.values, again.values):
        raise RuntimeError("the cache returned different scores")
    print(f"{len(designs)} designs, mean reward {np.nanmean(first.values):.3f}; real oracle calls "
          f"{runtime.ledger.total_calls}, cache hits {sum(runtime.ledger.cache_hits.values())}")
    print("wrote", *plugin.write_designs(designs, first.values, args.out / "designs"))


if __name__ == "__main__":
    main()
